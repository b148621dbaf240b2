"""langneurons: find, measure and steer the language-specific neurons of causal language models.

The pipeline, each arrow a function here and a ``langneurons`` subcommand::

    record -> ActivationStats -> identify -> NeuronSet -> deactivate / activate -> perplexity_matrix
"""

from langneurons._version import __version__
from langneurons.analysis import (
    compare_neuron_sets,
    language_dominance,
    layer_distribution,
    neuron_overlap,
    selection_sweep,
    sentence_embeddings,
    sentence_similarity,
)
from langneurons.architectures import ArchitectureSpec, register_architecture, registered_model_types
from langneurons.errors import LangNeuronsError
from langneurons.generation import Condition, GenerationSettings, generate_texts, generate_unconditional, read_prompts
from langneurons.interventions import Activate, Deactivate, activate, deactivate, intervene
from langneurons.loading import load_model
from langneurons.methods import available_methods, get_method, identify, random_like
from langneurons.methods.parameter_variation import identify_parameters, parameter_perplexity_matrix
from langneurons.parameter_interventions import zero_parameters
from langneurons.parameterset import ParameterSet, load_parameters, random_parameters_like
from langneurons.neuronset import NeuronSet, load_neurons, load_reference_masks, save_reference_masks
from langneurons.perplexity import PerplexityMatrix, load_perplexity, perplexity_matrix
from langneurons.langid import detect_language, get_identifier
from langneurons.recorder import record
from langneurons.steering import LanguageAccuracy, language_accuracy, load_language_accuracy
from langneurons.report import build_report
from langneurons.sites import locate_site
from langneurons.stats import ActivationStats, load_stats

__all__ = [
    "Activate", "ActivationStats", "ArchitectureSpec", "Deactivate", "LangNeuronsError", "NeuronSet",
    "PerplexityMatrix", "__version__", "activate", "available_methods", "build_report", "compare_neuron_sets",
    "deactivate", "get_method", "identify", "language_dominance", "layer_distribution", "neuron_overlap",
    "selection_sweep", "sentence_embeddings", "sentence_similarity", "ParameterSet", "identify_parameters",
    "load_parameters", "parameter_perplexity_matrix", "random_parameters_like", "zero_parameters",
    "Condition", "GenerationSettings", "generate_texts", "generate_unconditional", "read_prompts", "detect_language",
    "get_identifier", "LanguageAccuracy", "language_accuracy", "load_language_accuracy",
    "intervene", "load_model", "load_neurons", "load_perplexity", "load_reference_masks", "load_stats",
    "locate_site", "perplexity_matrix", "random_like", "record", "register_architecture",
    "registered_model_types", "save_reference_masks",
]
