"""Identification methods; importing this package registers every method."""

from langneurons.methods import baselines, key_regions, lape, neuron_types, parameter_variation, plnd_neurons  # noqa: F401,E501
from langneurons.methods.base import (
    CONSUMES,
    RETURNS,
    Method,
    NeuronMethod,
    available_methods,
    get_method,
    identify,
    method_class,
    register_method,
)
from langneurons.methods.baselines import LAP, RandomNeurons, random_like
from langneurons.methods.key_regions import KeyRegions
from langneurons.methods.lape import LAPE, LAVE
from langneurons.methods.neuron_types import TYPES as NEURON_TYPES, NeuronTypes

from langneurons.methods.parameter_variation import ParameterChanges, ParameterVariation, identify_parameters
from langneurons.methods.plnd_neurons import PLND

__all__ = ["CONSUMES", "KeyRegions", "LAP", "LAPE", "LAVE", "Method", "NEURON_TYPES", "NeuronMethod", "NeuronTypes",
           "PLND", "ParameterChanges", "ParameterVariation", "RETURNS", "RandomNeurons", "available_methods",
           "get_method", "identify", "identify_parameters",
           "method_class", "random_like", "register_method"]
