"""An op and a relaxation with a parameter, registered as a user would add them (nothing
edited elsewhere); ``experiments/layerwise/config.py`` imports this file, so runs that use
them resume, show and retrain in a fresh process too."""

import jax

from dnas.space.ops import ReLUConvBN, register_op
from dnas.space.relax import register_relaxation


@register_op("conv_5x5", parametric=True, paper="a plain 5x5 convolution")
def conv_5x5(c_in, c_out, stride, affine, rngs):
    return ReLUConvBN(c_in, c_out, 5, stride, 2, affine=affine, rngs=rngs)


@register_relaxation("perturbed_softmax")
def perturbed_softmax(epsilon: float = 0.03):
    """softmax(α + U(-ε, ε)): α perturbed by uniform noise in every pass, after SDARTS-RS'
    random smoothing (Chen & Hsieh, ICML 2020), which perturbs α in its weight steps."""
    return lambda key, logits, epoch: jax.nn.softmax(logits + jax.random.uniform(key, logits.shape, logits.dtype, -epsilon, epsilon))
