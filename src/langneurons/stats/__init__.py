"""Streaming statistics over neuron activations (``add``, ``merge``, ``state_dict``, ``save``)."""

from langneurons.stats.activation import ActivationStats, load_stats
from langneurons.stats.base import BatchInfo, SiteStatistic

__all__ = ["ActivationStats", "BatchInfo", "SiteStatistic", "load_stats"]
