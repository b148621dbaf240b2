"""Reversible interventions in forward passes: neuron edits at sites, and zeroed parameters."""

from langneurons.interventions.neurons import Activate, Deactivate, Edit, activate, deactivate, intervene, plan_edits
from langneurons.interventions.parameters import zero_parameters

__all__ = ["Activate", "Deactivate", "Edit", "activate", "deactivate", "intervene", "plan_edits", "zero_parameters"]
