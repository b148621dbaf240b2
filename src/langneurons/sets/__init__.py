"""Artefacts on disk and what methods return: neuron sets and parameter sets."""
