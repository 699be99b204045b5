"""dnas: differentiable and one-shot neural architecture search in JAX/Flax NNX."""
