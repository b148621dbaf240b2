"""langneurons: find, measure and steer the language-specific neurons of causal language models.

The pipeline, each arrow a function here and a ``langneurons`` subcommand, and each stage a sub-package::

    model -> data -> recording -> stats -> methods -> sets -> interventions -> evaluation -> analysis -> report

    record -> ActivationStats -> identify -> NeuronSet -> deactivate / activate -> perplexity_matrix
"""

import importlib as _importlib

from langneurons._version import __version__
from langneurons.analysis import (
    compare_neuron_sets,
    language_dominance,
    layer_distribution,
    neuron_overlap,
    selection_sweep,
    sentence_embeddings,
    sentence_similarity,
    sharing_matters,
)
from langneurons.model.architectures import ArchitectureSpec, register_architecture, registered_model_types
from langneurons.analysis.lingua_franca import (
    LinguaFranca,
    activation_vectors,
    alignment_scores,
    deactivation_table,
    key_regions,
    lingua_franca,
    lingua_franca_evolution,
    lrds_sads,
    similarity_map,
)
from langneurons.methods.key_regions import KeyRegions
from langneurons.errors import LangNeuronsError
from langneurons.data.parallel import ParallelCorpus, load_parallel_corpus
from langneurons.errors import LangNeuronsWarning
from langneurons.evaluation.tasks import Task, TaskItem, evaluate_task, load_task, task_accuracy
from langneurons.recording.pooled import record_pooled
from langneurons.evaluation.generation import Condition, GenerationSettings, generate_texts, generate_unconditional, read_prompts
from langneurons.interventions.edits import Add, NeuronEdit, Raise, Scale, SetValue, Zero
from langneurons.interventions.neurons import Activate, Deactivate, activate, deactivate, intervene
from langneurons.model.loading import load_model
from langneurons.methods import available_methods, get_method, identify, random_like
from langneurons.methods.neuron_types import TYPES as NEURON_TYPES, neuron_types
from langneurons.data.templates import PRESETS, Template
from langneurons.methods.parameter_variation import identify_parameters, parameter_perplexity_matrix
from langneurons.interventions.parameters import zero_parameters
from langneurons.sets.parameterset import ParameterSet, load_parameters, random_parameters_like
from langneurons.sets.neuronset import NeuronSet, load_neurons, load_reference_masks, save_reference_masks
from langneurons.evaluation.perplexity import PerplexityMatrix, load_perplexity, perplexity_matrix
from langneurons.evaluation.langid import detect_language, get_identifier
from langneurons.recording.recorder import record
from langneurons.evaluation.language_accuracy import LanguageAccuracy, language_accuracy, load_language_accuracy
from langneurons.report import build_report
from langneurons.model.sites import locate_site
from langneurons.model.geometry import ModelGeometry, model_geometry, write_vectors
from langneurons.model.attention import AttentionInputs, attention_site, capture_attention, supports_attention_capture
from langneurons.model.lens import LayerLens, layer_logit_lens, logit_lens
from langneurons.stats import ActivationStats, load_stats
from langneurons.stats.importance import ImportanceStats, load_importance
from langneurons.methods.plnd import plnd_importance
from langneurons.recording.importance import plnd_inputs, record_importance
from langneurons.analysis.overlap import structure_overlap
from langneurons.analysis.mwork import layer_bands, plan_deactivation
from langneurons.analysis.mwork_results import mwork_deactivation
from langneurons.analysis.layer_language import layer_language

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
    "ModelGeometry", "model_geometry", "write_vectors", "AttentionInputs", "attention_site", "capture_attention",
    "supports_attention_capture", "LayerLens", "layer_logit_lens", "logit_lens",
    "LangNeuronsWarning", "ParallelCorpus", "load_parallel_corpus", "record_pooled", "Task", "TaskItem",
    "evaluate_task", "load_task", "task_accuracy",
    "KeyRegions", "LinguaFranca", "activation_vectors", "alignment_scores", "deactivation_table", "key_regions",
    "lingua_franca", "lingua_franca_evolution", "lrds_sads", "similarity_map",
    "NeuronEdit", "Zero", "SetValue", "Raise", "Scale", "Add",
    "ImportanceStats", "load_importance", "plnd_importance", "plnd_inputs", "record_importance", "structure_overlap",
    "layer_bands", "plan_deactivation", "mwork_deactivation", "layer_language",
    "sharing_matters", "neuron_types", "NEURON_TYPES", "Template", "PRESETS",
]

#: Modules of the flat layout before 0.2 -> where they live now (``ln.perplexity`` still resolves, lazily).
_MOVED_MODULES = {
    "loading": "model.loading", "architectures": "model.architectures", "sites": "model.sites",
    "weights": "model.weights", "corpus": "data.corpus", "streaming": "data.streaming", "parallel": "recording.pooled",
    "recorder": "recording.recorder", "schedule": "recording.schedule", "accumulator": "recording.accumulator",
    "checkpoint": "recording.checkpoint", "distributed": "recording.distributed", "artefacts": "sets.artefacts",
    "neuronset": "sets.neuronset", "parameterset": "sets.parameterset",
    "parameter_interventions": "interventions.parameters", "perplexity": "evaluation.perplexity",
    "generation": "evaluation.generation", "steering": "evaluation.steering", "langid": "evaluation.langid",
    "judge": "evaluation.judge", "plots": "analysis.plots", "demo": "testbed.demo", "testing": "testbed.tiny",
    "toy": "testbed",
}


def __getattr__(name: str):
    """Old module names (``ln.perplexity``, ``ln.loading``, ...) resolve to their new place."""
    if name in _MOVED_MODULES:
        return _importlib.import_module(f"langneurons.{_MOVED_MODULES[name]}")
    raise AttributeError(f"module 'langneurons' has no attribute {name!r}")
