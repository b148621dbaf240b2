"""Analyses of language-specific neurons (LAPE paper sections 3.2-3.3.3) and comparisons of methods.

Each function returns a result with named rows / columns and provenance, whose ``save(dir)`` writes a
self-describing directory (CSV tables, PNG figures, ``meta.json`` listing them; see ``output.py``):

=====================================  =====================  ==========================================
function                               ``meta.json`` kind     paper
=====================================  =====================  ==========================================
``layer_distribution(neurons)``        ``layer_distribution`` Figure 5, Tables 3, 6, 8-10
``neuron_overlap(neurons)``            ``overlap``            section 3.2 (zh / ja); Zhao et al. eq. 11
``selection_sweep(model, corpus, ...)`` ``selection_sweep``    Figure 4
``sentence_similarity(embeddings)``    ``ses``                Figure 6
``language_dominance(embeddings)``     ``dominance``          eq. 6, Figure 7
``compare_neuron_sets({name: set})``   ``method_comparison``  (none)
``lingua_franca(model, parallel, ...)`` ``lingua_franca``      Zeng et al. 2024, eqs. 5-14, Table 1, Figs 2-7
``sharing_matters(model, ...)``        ``sharing_matters``    Sharing Matters: eqs. 3-7, Tables 1-4, Figs 2-10
=====================================  =====================  ==========================================
"""

from langneurons.analysis.compare import MethodComparison, compare_neuron_sets
from langneurons.analysis.embeddings import (
    Dominance,
    SentenceSimilarity,
    dominance_scores,
    language_dominance,
    mean_ses,
    pairwise_ses,
    sentence_embeddings,
    sentence_similarity,
)
from langneurons.analysis.layers import LayerDistribution, layer_distribution
from langneurons.analysis.lingua_franca import LinguaFranca, lingua_franca
from langneurons.analysis.output import KINDS, read_analysis_meta, read_table
from langneurons.analysis.layer_language import LayerLanguage, layer_language
from langneurons.analysis.mwork import layer_bands, plan_deactivation
from langneurons.analysis.mwork_results import MWorkResult, mwork_deactivation
from langneurons.analysis.overlap import Overlap, StructureOverlap, neuron_overlap, structure_overlap
from langneurons.analysis.sharing import SharingAccumulator, SharingSettings, contribution_scores
from langneurons.analysis.sharing_items import ItemsPlan, SharingItems, build_items, plan_items
from langneurons.analysis.sharing_result import SharingResult
from langneurons.analysis.sharing_run import (
    analyse_recording,
    effective_directions,
    record_sharing,
    sharing_matters,
)
from langneurons.analysis.sweep import DEFAULT_RATIOS, SelectionSweep, selection_sweep

__all__ = [
    "DEFAULT_RATIOS", "KINDS", "Dominance", "LayerDistribution", "LayerLanguage", "LinguaFranca", "MWorkResult",
    "MethodComparison", "Overlap", "SelectionSweep", "StructureOverlap", "layer_bands", "layer_language",
    "lingua_franca", "mwork_deactivation", "plan_deactivation", "structure_overlap",
    "SentenceSimilarity", "compare_neuron_sets", "dominance_scores", "language_dominance", "layer_distribution",
    "mean_ses", "neuron_overlap", "pairwise_ses", "read_analysis_meta", "read_table", "selection_sweep",
    "sentence_embeddings", "sentence_similarity",
    "ItemsPlan", "SharingAccumulator", "SharingItems", "SharingResult", "SharingSettings", "analyse_recording",
    "build_items", "contribution_scores", "effective_directions", "plan_items", "record_sharing", "sharing_matters",
]
