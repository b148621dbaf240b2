"""The model stage: loading a causal LM, the architecture registry, neuron sites, weights and geometry."""
