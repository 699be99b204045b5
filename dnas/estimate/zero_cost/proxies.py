"""Zero-cost proxies: scores of an untrained network that predict its trained accuracy.

Each proxy is a pure function ``proxy(net, params, batch, key) -> f[]`` of

- ``net``: a :class:`ProxyNet` (the apply functions of one freshly initialised network),
- ``params``: the pytree of its prunable weights (convolution and linear kernels: the
  layers zero-cost-nas' ``get_layer_metric_array`` visits),
- ``batch``: ``(x f32[B, H, W, C], y int32[B])``,
- ``key``: a PRNG key (none of the published proxies is random; it is there so that
  one could be, without changing the signature).

The definitions follow the authors' code: SamsungLabs/zero-cost-nas (Abdelfattah et al.,
"Zero-Cost Proxies for Lightweight NAS", ICLR 2021; ``foresight/pruners/measures/*``)
and BayesWatch/nas-without-training (Mellor et al., "Neural Architecture Search without
Training", ICML 2021). The loss is the mean cross-entropy, BatchNorm normalises with
the batch's statistics (the networks are in train mode there), except for synflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.losses import cross_entropy
from dnas.core.registry import Registry
from dnas.core.types import Batch, PRNGKey

Params = Any


class ProxyNet(NamedTuple):
    """What a proxy may call on one network.

    Attributes:
      apply: ``(params, x f32[B,H,W,C], gates=None) -> (logits f32[B,K], relu_kernel f[B,B])``
        with batch-statistics BatchNorm. ``gates`` (a pytree shaped like ``gates`` below,
        all ones by default) multiplies every prunable layer's output per sample and
        channel, so its gradient is Fisher's per-channel ``sum_hw act * dL/dact``; a gate
        leaf is ``[..., B, C]``, leading axes stacking layers (the edges of a scan).
        ``relu_kernel`` is NASWOT's ``sum_l c_l c_l^T + (1-c_l)(1-c_l)^T`` over the binary
        codes ``c_l = [pre-activation > 0]`` of every ReLU that ran.
      apply_linear: ``(params, x) -> logits``: synflow's linearised network: BatchNorm off
        (no batch statistics: mean 0, variance 1, eps 0, i.e. the identity), every
        parameter outside ``params`` in absolute value and in ``x``'s dtype.
      gates: all-ones gates for the batch size ``apply`` is called with.
      cost: ``{"params": f[], "flops": f[]}`` of the architecture (parameters, MACs of
        one image), read by the ``params``/``flops`` baselines.
      stacked: per leaf of ``params`` (in ``jax.tree_util.tree_leaves`` order), how many
        leading axes stack separate layers (an :class:`~dnas.space.mixed.EdgeScan`'s
        edges share one kernel leaf), or None: every leaf is one layer. ``grad_norm``
        takes one norm per layer.
    """

    apply: Callable[..., tuple[jax.Array, jax.Array]]
    apply_linear: Callable[[Params, jax.Array], jax.Array]
    gates: Params
    cost: Mapping[str, jax.Array]
    stacked: tuple[int, ...] | None = None


Proxy = Callable[[ProxyNet, Params, Batch, PRNGKey], jax.Array]

PROXIES: Registry[Proxy] = Registry("zero-cost proxy")
"""Name -> ``proxy(net, params, batch, key) -> f[]``; larger means better predicted accuracy."""


def wide() -> Any:
    """float64 when x64 is enabled (the scorer enables it), else float32."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _leaves(tree: Params) -> list[jax.Array]:
    return jax.tree_util.tree_leaves(tree)


def _sum_all(tree: Params) -> jax.Array:
    return sum(jnp.sum(l.astype(wide())) for l in _leaves(tree))




def _loss_grad(net: ProxyNet, params: Params, batch: Batch) -> Params:
    x, y = batch
    return jax.grad(lambda p: cross_entropy(net.apply(p, x)[0], y))(params)


@PROXIES.decorator("grad_norm", lambda f: f)
def grad_norm(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``sum_l ||dL/dθ_l||_2`` over layers (Abdelfattah et al. 2021, ``grad_norm.py``:
    ``layer.weight.grad.norm()`` per layer, summed); a leaf stacking layers
    (``net.stacked``) contributes one norm per layer."""
    del key
    grads = _leaves(_loss_grad(net, params, batch))
    lead = net.stacked if net.stacked is not None else (0,) * len(grads)
    return sum(jnp.sum(jnp.linalg.norm(g.astype(wide()).reshape(g.shape[:k] + (-1,)), axis=-1)) for g, k in zip(grads, lead))


@PROXIES.decorator("snip", lambda f: f)
def snip(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``sum |θ ⊙ dL/dθ|`` (Lee et al. 2019, SNIP; zero-cost-nas ``snip.py``: the gradient
    of a ones mask on each weight, ``|g ⊙ θ|``)."""
    del key
    g = _loss_grad(net, params, batch)
    return _sum_all(jax.tree_util.tree_map(lambda p, d: jnp.abs(p * d), params, g))


@PROXIES.decorator("grasp", lambda f: f)
def grasp(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``sum -θ ⊙ (H g)`` with ``g = dL/dθ`` held constant (Wang et al. 2020, GraSP;
    zero-cost-nas ``grasp.py``: ``z = sum(stopgrad(g) * g)``, ``z.backward()``,
    ``-θ ⊙ θ.grad``). The same ``H g`` (``H`` is symmetric) is computed here forward over
    reverse (``jax.jvp`` of the gradient along ``g``): the hand-written VJPs of dnas'
    convolutions then keep their canonical, fast form on XLA CPU, which JAX's transpose
    of them (reverse over reverse) would lose."""
    del key
    x, y = batch
    grad_fn = jax.grad(lambda p: cross_entropy(net.apply(p, x)[0], y))
    g = jax.lax.stop_gradient(grad_fn(params))
    hg = jax.jvp(grad_fn, (params,), (g,))[1]
    return _sum_all(jax.tree_util.tree_map(lambda p, h: -p * h, params, hg))


@PROXIES.decorator("fisher", lambda f: f)
def fisher(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``sum_layers sum_c 0.5 * mean_b (sum_hw act ⊙ dL/dact)^2`` at every prunable layer's
    output (Theis et al. 2018 / Turner et al. 2020; zero-cost-nas ``fisher.py`` hooks the
    conv/linear output, ``del_k = (act*grad).sum([2,3])``, ``0.5 * del_k.pow(2).mean(0)``).
    The per-sample gradient of a ones gate on the output is exactly ``del_k`` (the batch
    is a gate's second-last axis; leading axes stack layers)."""
    del key
    x, y = batch
    dg = jax.grad(lambda g: cross_entropy(net.apply(params, x, g)[0], y))(net.gates)
    return sum(jnp.sum(0.5 * jnp.mean(jnp.square(d.astype(wide())), axis=-2)) for d in _leaves(dg))


@PROXIES.decorator("synflow", lambda f: f)
def synflow(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``sum |θ| ⊙ dR/d|θ|`` with ``R = sum f(1; |θ|)`` (Tanaka et al. 2020, SynFlow;
    zero-cost-nas ``synflow.py``): every parameter in absolute value, float64, BatchNorm
    off, one all-ones input image, ``R`` the sum of the logits.

    Always float64, also where the caller runs JAX in 32-bit mode: ``R`` is a product
    over the network's depth of weight magnitudes and passes float32's 3.4e38 at
    NAS-Bench-201 size (1e49 at C=16, N=5), where float32 would give ``inf``. Returns an
    ``f64[]`` (under 32-bit mode, arithmetic on it outside this function rounds it to
    float32 again: read it with ``float()`` or ``np.asarray``).
    """
    del key
    x, _ = batch
    # An x64 scope here, not the caller's: inside it every array this function creates is
    # float64, whether it runs eagerly or is being traced by the caller's jit.
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: jnp.abs(jnp.asarray(a, jnp.float64)), params)
        ones = jnp.ones((1,) + tuple(x.shape[1:]), jnp.float64)
        g = jax.grad(lambda q: jnp.sum(net.apply_linear(q, ones)))(p)
        return sum(jnp.sum(jnp.abs(a * d)) for a, d in zip(_leaves(p), _leaves(g)))


@PROXIES.decorator("jacob_cov", lambda f: f)
def jacob_cov(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``-sum_i log(λ_i + k) + 1/(λ_i + k)``, ``k = 1e-5``, over the eigenvalues of the
    correlation matrix of the per-sample input gradients ``d(sum logits)/dx`` (Mellor et
    al. 2020 v1; zero-cost-nas ``jacob_cov.py``, ``eval_score``).

    Degenerate by that definition where the logits are linear in train-mode BatchNorm
    outputs: a DARTS network whose last cell sums only BN-terminated ops (sep/dil convs,
    strided skips) into every node has ``sum_b logits`` independent of ``x`` (BN outputs
    sum to zero over the batch), so the Jacobian, and the score, is rounding noise."""
    del key
    x, _ = batch
    jac = jax.grad(lambda z: jnp.sum(net.apply(params, z)[0]))(x).reshape(x.shape[0], -1).astype(wide())
    lam = jnp.linalg.eigvalsh(jnp.corrcoef(jac))
    k = 1e-5
    return -jnp.sum(jnp.log(lam + k) + 1.0 / (lam + k))


@PROXIES.decorator("naswot", lambda f: f)
def naswot(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """``log|det K|``, ``K = sum_l c_l c_l^T + (1-c_l)(1-c_l)^T`` over the binary codes of
    every ReLU's input (Mellor et al. 2021, NASWOT; nas-without-training
    ``counting_forward_hook`` + ``hooklogdet``: ``np.linalg.slogdet(K)[1]``)."""
    del key
    _, kern = net.apply(params, batch[0])
    return jnp.linalg.slogdet(kern.astype(wide()))[1]


PROXIES.add("hook_logdet", naswot)  # the name in Mellor et al.'s code


@PROXIES.decorator("params", lambda f: f)
def params_count(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """Number of parameters of the architecture (baseline; Abdelfattah et al. 2021 Table 1)."""
    del params, batch, key
    return jnp.asarray(net.cost["params"], wide())


@PROXIES.decorator("flops", lambda f: f)
def flops(net: ProxyNet, params: Params, batch: Batch, key: PRNGKey) -> jax.Array:
    """Multiply-accumulates of one image (baseline; Abdelfattah et al. 2021 Table 1)."""
    del params, batch, key
    return jnp.asarray(net.cost["flops"], wide())


VOTE = ("synflow", "jacob_cov", "snip")
"""Abdelfattah et al. 2021's vote: the majority of synflow, jacob_cov and snip."""


def vote(scores: Mapping[str, np.ndarray], names: tuple[str, ...] = VOTE) -> np.ndarray:
    """The majority vote of several proxies over a set of architectures.

    Abdelfattah et al. 2021 (Sec. 5) compare architectures by the majority of
    ``names``; to rank a set we count each architecture's pairwise majority wins
    (Copeland's rule), which orders a pair as the majority does whenever that is transitive.

    Args:
      scores: proxy name -> ``f[P]`` scores of the same ``P`` architectures.
      names: the voting proxies (an odd number avoids ties).
    Returns:
      ``f64[P]``: per architecture, the number of others a majority of ``names`` ranks below it.
    """
    missing = [n for n in names if n not in scores]
    if missing:
        raise DnasError(f"vote needs the proxies {', '.join(names)}; missing {', '.join(missing)}")
    s = np.stack([finite_or_worst(np.asarray(scores[n], np.float64)) for n in names])  # [k, P]
    wins = (s[:, :, None] > s[:, None, :]).sum(0)  # [P, P]: proxies ranking a above b
    return (wins * 2 > len(names)).sum(1).astype(np.float64)


def finite_or_worst(s: np.ndarray) -> np.ndarray:
    """Scores with NaN/inf (a degenerate network, e.g. a singular kernel) set to the
    lowest finite score minus one: such architectures rank last, as in zero-cost-nas."""
    s = np.asarray(s, np.float64).copy()
    bad = ~np.isfinite(s)
    if bad.any():
        s[bad] = (s[~bad].min() - 1.0) if (~bad).any() else 0.0
    return s


def check_names(names: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"all"``, ``"a,b"`` or a list -> proxy names (``vote`` allowed); one-line error otherwise."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if names == ["all"]:
        return tuple(n for n in PROXIES.names() if n != "hook_logdet") + ("vote",)
    if not names:
        raise DnasError("no proxies named; give 'all' or a comma-separated list, e.g. synflow,naswot")
    for n in names:
        if n != "vote" and n not in PROXIES:
            PROXIES[n]  # raises the registry's one-line error listing the known proxies
    return tuple(dict.fromkeys(names))
