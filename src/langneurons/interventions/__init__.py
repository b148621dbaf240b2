"""Reversible interventions in forward passes: neuron edits at sites, and zeroed parameters."""

from langneurons.interventions.edits import Add, NeuronEdit, Raise, Scale, SetValue, Zero
from langneurons.interventions.neurons import (Activate, Deactivate, Edit, activate, as_neuron_edit, deactivate,
                                               intervene, plan_edits)
from langneurons.interventions.parameters import zero_parameters

__all__ = ["Activate", "Add", "Deactivate", "Edit", "NeuronEdit", "Raise", "Scale", "SetValue", "Zero", "activate",
           "as_neuron_edit", "deactivate", "intervene", "plan_edits", "zero_parameters"]
