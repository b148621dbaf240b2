"""Identification methods; importing this package registers every method."""

from langneurons.methods import baselines, lape  # noqa: F401  (registration)
from langneurons.methods.base import NeuronMethod, available_methods, get_method, identify, register_method
from langneurons.methods.baselines import LAP, RandomNeurons, random_like
from langneurons.methods.lape import LAPE, LAVE

__all__ = ["LAP", "LAPE", "LAVE", "NeuronMethod", "RandomNeurons", "available_methods", "get_method", "identify",
           "random_like", "register_method"]
