"""A search step as data: a plan of passes, run by one of two executors.

A *pass* evaluates one objective (the train or the val loss, on its batch and PRNG key),
at the current weights or at weights shifted along a carried direction, and computes the
gradients it needs (weights, α, or both). What the step does with those gradients is the
pass's ``post``: a pure function ``(carry, result) -> carry`` that updates the state or
stores something for a later pass. A :class:`Plan` is the list of passes of one method:

- ``first_order`` (DARTS first order): α pass on val, weight pass on train;
- ``finite_difference`` / ``forward_difference`` (DARTS second order, Eq. 7-8 and its
  one-sided variant): unrolled pass, val pass at the unrolled weights, one or two passes at
  ``w ± εv``, weight pass;
- ``exact`` (second order by reverse-over-reverse autodiff): one custom α pass, weight pass;
- ``weights_only`` (SPOS / RSPS supernet training): the weight pass alone;
- ``fair_weights`` (FairNAS): ``M`` paths that together train every candidate of every
  label once, gradients summed, one weight update;
- ``sandwich_weights`` (US-Nets / BigNAS / OFA): the largest, the smallest and ``n``
  random paths, gradients summed, optionally in-place distillation from the largest;
- ``reinforce`` (ENAS): a policy-gradient α pass rewarded by the val accuracy of the path
  the policy samples, then the weight pass on another sampled path.

The maths lives once, in the plans. Two executors run any plan: :func:`run_sequential`
(each pass traced on its own) and :func:`run_fused` (all passes as the iterations of one
``lax.scan``, so the network's forward and backward are compiled once; each iteration
computes only the gradients its pass uses, via :func:`dnas.space.ops.layers.grad_gates`).
Tests check that both executors give the same step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from dnas.core.errors import DnasError
from dnas.space.ops.layers import GradGates, grad_gates
from dnas.core.registry import Registry
from dnas.search.state import SearchState
from dnas.core.types import Batch, PRNGKey, Sampled
from dnas.space.relax import allowed, relax_all
from dnas.search.state import alpha_dict

Carry = tuple[SearchState, dict[str, Any]]
"""What passes hand on: the state and a dict of named intermediate results."""

class PassResult(NamedTuple):
    """What one pass computed: gradients (zeros where its gate was closed), BN statistics
    after its forward, its loss, accuracy and architecture penalty."""
    w_grads: Any
    a_grads: Any
    stats: Any
    loss: jax.Array
    acc: jax.Array
    penalty: jax.Array
    extra: Any = None  # what a custom pass hands its post besides gradients (reinforce: the new baseline)


@dataclasses.dataclass(frozen=True)
class Pass:
    """One pass of a plan.

    Attributes:
      name: for people (and :attr:`Plan.alpha_passes`).
      batch: ``"train"`` or ``"val"``.
      key: which of the step's keys it uses: ``"alpha"``, ``"weight"`` or ``"unrolled"``
        (passes that must see the same stochastic architecture share a key).
      grad_w, grad_a: the gradients it needs.
      penalty: add the architecture penalty to its loss (the α objective).
      shifted: evaluate at ``w + c[i] * D`` (``D`` and ``c`` in the carry, set by earlier
        posts) instead of ``w``.
      post: ``(carry, PassResult) -> carry``.
      compute: replaces the standard gradient computation, ``(state, batches, keys) ->
        PassResult`` (the exact hypergradient); a plan with one runs sequentially.
    """
    name: str
    batch: str
    key: str
    grad_w: bool
    grad_a: bool
    penalty: bool
    post: Callable[[Carry, PassResult], Carry]
    shifted: bool = False
    compute: Callable[..., PassResult] | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """The passes of a method and where its metrics come from.

    Attributes:
      passes: run in order.
      val_pass, train_pass: indices of the passes whose loss/accuracy are reported as
        ``val_*`` and ``train_*`` (None: not reported).
      init: ``state -> dict`` the carry's initial intermediate results.
    """
    passes: tuple[Pass, ...]
    val_pass: int | None
    train_pass: int | None
    init: Callable[[SearchState], dict[str, Any]] = lambda state: {}

    @property
    def alpha_passes(self) -> "Plan":
        """The plan without its weight pass (the α half of a bi-level step)."""
        keep = tuple(p for p in self.passes if p.name != "weights")
        return dataclasses.replace(self, passes=keep, train_pass=None)

    @property
    def weight_passes(self) -> "Plan":
        """The weight pass alone."""
        return Plan(tuple(p for p in self.passes if p.name == "weights"), None, 0)


class StepMaths(NamedTuple):
    """The method-independent pieces a plan's posts are made of (built by
    :func:`dnas.search.bilevel.make_search_step` from its optimizers and objective).

    ``relax`` and ``steps_per_epoch`` are the step's relaxation and epoch length (plans
    that sample from the policy themselves read them); ``options`` holds plan settings
    (``reinforce``: ``entropy_weight``, ``baseline_decay``).
    """
    objective: Callable[..., Any]
    apply_alpha: Callable[[SearchState, Any], SearchState]
    apply_weights: Callable[[SearchState, Any, Any], SearchState]
    update_map: Callable[[SearchState], Callable[[Any], Any]]
    grads: Callable[..., tuple[Any, Any, Any]]
    relax: Callable[..., Any] | None = None
    steps_per_epoch: int = 1
    options: dict[str, Any] = {}


# ----- plans ---------------------------------------------------------------------------

PLANS: Registry[Callable[[StepMaths], Plan]] = Registry("step plan")
"""Plan builders by name; ``HYPERGRADIENTS`` (second order) are the names other than
``first_order`` and ``weights_only``."""

def _weights_pass(m: StepMaths) -> Pass:
    return Pass("weights", "train", "weight", True, False, False, lambda c, r: (m.apply_weights(c[0], r.w_grads, r.stats), c[1]))


@PLANS.decorator("first_order", lambda f: f)
def first_order(m: StepMaths) -> Plan:
    """DARTS first order: ``∇_α L_val(w, α)`` on the val batch, then the weight step."""
    alpha = Pass("alpha", "val", "alpha", False, True, True, lambda c, r: (m.apply_alpha(c[0], r.a_grads).replace(stats=r.stats), c[1]))
    return Plan((alpha, _weights_pass(m)), val_pass=0, train_pass=1)


@PLANS.decorator("weights_only", lambda f: f)
def weights_only(m: StepMaths) -> Plan:
    """Supernet training by sampled paths (SPOS, RSPS): the weight step alone."""
    return Plan((_weights_pass(m),), val_pass=None, train_pass=0)


def fair_paths(key: PRNGKey, logits_by_label: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """FairNAS' paths of one step: ``{label: int32[M]}``, ``M`` the most candidates of any
    label; path ``i`` takes candidate ``order[i % A]`` of each label, ``order`` a uniformly
    random permutation of the label's ``A`` allowed candidates.

    A candidate is allowed where its logit is not :data:`~dnas.space.relax.MASKED` (a few-shot sub-supernet's split
    label allows one; :mod:`dnas.space.fewshot`), so with every candidate allowed and equal
    counts (NB201: 5 per edge) each candidate of each label is on exactly one path (Chu et
    al., "FairNAS", ICCV 2021, Sec. 3.2: "strict fairness").
    """
    m = max(int(v.shape[-1]) for v in logits_by_label.values())
    out = {}
    for j, (label, lg) in enumerate(sorted(logits_by_label.items())):
        ok = allowed(lg)
        u = jax.random.uniform(jax.random.fold_in(key, j), lg.shape)
        order = jnp.argsort(jnp.where(ok, u, 2.0)).astype(jnp.int32)  # allowed candidates first, shuffled
        out[label] = order[jnp.arange(m) % jnp.maximum(jnp.sum(ok), 1)]
    return out


@PLANS.decorator("fair_weights", lambda f: f)
def fair_weights(m: StepMaths) -> Plan:
    """Strictly fair supernet training (Chu, Zhang & Xu, "FairNAS: Rethinking Evaluation
    Fairness of Weight Sharing Neural Architecture Search", ICCV 2021, Alg. 1): the ``M``
    paths of :func:`fair_paths` run one after the other on the same train batch, their
    weight gradients summed (FairNAS calls ``loss.backward()`` per path and
    ``optimizer.step()`` once, xiaomi-automl/FairNAS), BatchNorm statistics following each
    forward in turn; then one weight update. The reported loss and accuracy are the mean
    over the ``M`` paths.
    """

    def compute(state, batches, keys):
        paths = fair_paths(keys["weight"], alpha_dict(state.alpha))
        n = next(iter(paths.values())).shape[0]
        sizes = {label: lg.shape[-1] for label, lg in alpha_dict(state.alpha).items()}

        def one(carry, i):
            g_sum, stats = carry
            arch = {l: Sampled(p[i][None], jax.nn.one_hot(p[i], sizes[l], dtype=jnp.float32)) for l, p in paths.items()}
            w_g, _, (stats, logits, loss, _) = m.grads(m.objective, state.weights, state.alpha, stats, batches["train"], keys["weight"],
                                                       state.step, False, arch)
            g_sum = jax.tree_util.tree_map(jnp.add, g_sum, w_g)
            return (g_sum, stats), (loss, _accuracy(logits, batches["train"][1]))

        zero = jax.tree_util.tree_map(jnp.zeros_like, state.weights)
        (g_sum, stats), (loss, acc) = jax.lax.scan(one, (zero, state.stats), jnp.arange(n))
        return PassResult(g_sum, None, stats, jnp.mean(loss), jnp.mean(acc), jnp.zeros((), loss.dtype))

    weights = Pass("weights", "train", "weight", True, False, False, lambda c, r: (m.apply_weights(c[0], r.w_grads, r.stats), c[1]), compute=compute)
    return Plan((weights,), val_pass=None, train_pass=0)


def sandwich_paths(key: PRNGKey, logits_by_label: dict[str, jax.Array], sizes: dict[str, jax.Array],
                   n_random: int) -> dict[str, jax.Array]:
    """The sandwich rule's paths of one step: ``{label: int32[2 + n_random]}``; path 0 takes
    every label's largest allowed candidate, path 1 its smallest, paths ``2..`` one drawn
    uniformly among the allowed ones (as the ``uniform`` relaxation draws).

    Args:
      key: the step's weight key.
      logits_by_label: α (only which candidates are allowed is read: :data:`MASKED` ones,
        a few-shot sub-supernet's, are never taken).
      sizes: ``label -> f[k]`` each candidate's size (multiply-adds); ties go to the
        earlier candidate.
      n_random: random paths per step (BigNAS: 2).
    """
    out = {}
    for j, (label, lg) in enumerate(sorted(logits_by_label.items())):
        ok = allowed(lg)
        size = jnp.asarray(sizes[label], jnp.float32)
        big = jnp.argmax(jnp.where(ok, size, -jnp.inf)).astype(jnp.int32)
        small = jnp.argmin(jnp.where(ok, size, jnp.inf)).astype(jnp.int32)
        r = jax.random.randint(jax.random.fold_in(key, j), (n_random,), 0, jnp.sum(ok).astype(jnp.int32))
        rand = jnp.argmax(jnp.cumsum(ok.astype(jnp.int32))[None, :] > r[:, None], axis=-1).astype(jnp.int32)
        out[label] = jnp.concatenate([big[None], small[None], rand])
    return out


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean cross-entropy against target distributions ``f[B, classes]`` (US-Nets'
    ``CrossEntropyLossSoft``); with one-hot targets it is the usual cross-entropy."""
    logits = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
    return optax.softmax_cross_entropy(logits, targets.astype(logits.dtype)).mean()


@PLANS.decorator("sandwich_weights", lambda f: f)
def sandwich_weights(m: StepMaths) -> Plan:
    """Supernet training by the sandwich rule, with or without in-place distillation (Yu &
    Huang, "Universally Slimmable Networks and Improved Training Techniques", ICCV 2019,
    Sec. 3.2-3.3; Yu et al., "BigNAS", ECCV 2020, Sec. 3.1; Cai et al., "Once-for-All",
    ICLR 2020, its knowledge distillation from the largest network).

    Each step runs, on the same train batch, the largest path, the smallest path and
    ``n_random`` uniformly random ones (:func:`sandwich_paths`; BigNAS: 2), sums their
    weight gradients and makes one weight update (US-Nets' Alg. 1: ``loss.backward()`` per
    width, one ``optimizer.step()``). BatchNorm statistics follow each forward in turn.
    With ``distill``, the largest path learns from the labels and every other path from the
    largest path's predicted distribution of the same step, ``stop_gradient(softmax(z_L))``
    (US-Nets' in-place distillation, ``soft_target = output.detach()``); without it every
    path learns from the labels. The reported loss and accuracy are the mean over the
    paths, against the labels.

    ``m.options["sandwich"]``: ``sizes`` (``label -> f[k]`` candidate sizes, which define
    largest and smallest), ``n_random`` and ``distill``.
    """
    opts = m.options.get("sandwich")
    if not opts or "sizes" not in opts:
        raise DnasError("the sandwich plan needs the candidates' sizes (options['sandwich']['sizes']); "
                        "build it through make_search_step(sandwich=...)")
    sizes, n_random, distill = dict(opts["sizes"]), int(opts.get("n_random", 2)), bool(opts.get("distill", True))

    def compute(state, batches, keys):
        alpha = alpha_dict(state.alpha)
        paths = sandwich_paths(keys["weight"], alpha, sizes, n_random)
        n = 2 + n_random
        x, y = batches["train"]
        k = {label: lg.shape[-1] for label, lg in alpha.items()}

        def one(carry, i):
            g_sum, stats, teacher = carry
            arch = {l: Sampled(p[i][None], jax.nn.one_hot(p[i], k[l], dtype=jnp.float32)) for l, p in paths.items()}
            hard = jax.nn.one_hot(y, teacher.shape[-1], dtype=jnp.float32)
            # Path 0 (the largest) always learns from the labels; the others from its
            # prediction when distilling. One-hot targets make the soft loss the usual one.
            target = jnp.where((i > 0) & distill, jax.nn.softmax(teacher, axis=-1), hard)
            loss_fn = lambda logits, _y: soft_cross_entropy(logits, target)  # noqa: E731
            w_g, _, (stats, logits, loss, _) = m.grads(m.objective, state.weights, state.alpha, stats, batches["train"],
                                                       keys["weight"], state.step, False, arch, loss_fn)
            g_sum = jax.tree_util.tree_map(jnp.add, g_sum, w_g)
            teacher = jnp.where(i == 0, jax.lax.stop_gradient(logits.astype(jnp.float32)), teacher)
            return (g_sum, stats, teacher), (soft_cross_entropy(logits, hard), _accuracy(logits, y))

        zero = jax.tree_util.tree_map(jnp.zeros_like, state.weights)
        arch0 = {l: Sampled(p[0][None], jax.nn.one_hot(p[0], k[l], dtype=jnp.float32)) for l, p in paths.items()}
        logits0 = jax.eval_shape(lambda: m.objective(state.weights, state.alpha, state.stats, batches["train"], keys["weight"],
                                                     state.step, False, arch0)[1][1])  # the logits' shape, traced only
        t0 = jnp.zeros(logits0.shape, jnp.float32)
        (g_sum, stats, _), (loss, acc) = jax.lax.scan(one, (zero, state.stats, t0), jnp.arange(n))
        return PassResult(g_sum, None, stats, jnp.mean(loss), jnp.mean(acc), jnp.zeros((), loss.dtype))

    weights = Pass("weights", "train", "weight", True, False, False, lambda c, r: (m.apply_weights(c[0], r.w_grads, r.stats), c[1]), compute=compute)
    return Plan((weights,), val_pass=None, train_pass=0)


class BaselineState(NamedTuple):
    """The α optimizer's state under :func:`with_reward_baseline`: the wrapped optimizer's
    state and the exponential moving average of the rewards (``f32[]``)."""
    inner: optax.OptState
    baseline: jax.Array


def with_reward_baseline(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """``inner`` with a reward baseline carried in its state (:class:`BaselineState`).

    Why in the optimizer state: the baseline is the controller's state, and kept there it
    is checkpointed and restored with α, while ``SearchState`` (and every saved run) keeps
    its fields. The ``reinforce`` plan reads and writes ``baseline``; ``update`` only
    delegates.
    """
    def init(params):
        return BaselineState(inner.init(params), jnp.zeros((), jnp.float32))

    def update(updates, state, params=None):
        u, s = inner.update(updates, state.inner, params)
        return u, BaselineState(s, state.baseline)

    return optax.GradientTransformation(init, update)


@PLANS.decorator("reinforce", lambda f: f)
def reinforce(m: StepMaths) -> Plan:
    """ENAS' controller update (Pham et al., "Efficient Neural Architecture Search via
    Parameter Sharing", ICML 2018, Sec. 2.2), interleaved with the shared-weight step.

    The α pass samples a path ``a ~ π_α`` (the relaxation's policy, e.g. ``policy``),
    runs the supernet on it on the val batch in training mode (batch statistics, no
    running-statistics update, no weight gradient), and takes as reward its accuracy plus
    ``entropy_weight`` times the policy's entropy (ENAS adds the entropy to the reward).
    The baseline moves first, ``b <- b - (1 - baseline_decay)(b - R)``, then α follows
    ``∇_α log π_α(a) (R - b)`` (the loss ``-log π_α(a) (R - b)`` handed to the α optimizer,
    which in ENAS aggregates 10 samples per Adam step). The weight pass then trains the
    path the relaxation samples with the weight key: ENAS alternates one weight step per
    sampled child with about one controller sample per weight step per epoch; here the two
    alternate every step. The α optimizer must carry a baseline
    (:func:`with_reward_baseline`).
    """
    relax = m.relax
    log_policy = getattr(relax, "log_policy", None)
    if log_policy is None:
        raise DnasError("the reinforce α update needs a relaxation that samples from a policy (relax='policy'): "
                        "it must say how likely each sampled path was")
    ent_w = float(m.options.get("entropy_weight", 1e-4))
    decay = float(m.options.get("baseline_decay", 0.99))
    spe = max(int(m.steps_per_epoch), 1)

    def compute(state, batches, keys):
        alpha = alpha_dict(state.alpha)
        epoch = state.step // spe
        arch = relax_all(relax, keys["alpha"], alpha, epoch)
        index = {label: jnp.reshape(a.index, (-1,))[0] for label, a in arch.items()}
        weights = jax.lax.stop_gradient(state.weights)
        # The objective draws the same path (same relaxation, key and epoch).
        _, (_, logits, loss, penalty) = m.objective(weights, state.alpha, state.stats, batches["val"], keys["alpha"], state.step, False)
        acc = _accuracy(logits, batches["val"][1])

        def surrogate(a_state):
            lp, ent = jnp.zeros(()), jnp.zeros(())
            for label, lg in alpha_dict(a_state).items():
                logp = log_policy(lg)
                lp = lp + logp[index[label]]
                ent = ent - jnp.sum(jnp.exp(logp) * logp)
            return lp, ent

        _, ent = surrogate(state.alpha)
        reward = jax.lax.stop_gradient(acc + ent_w * ent)
        baseline = state.a_opt.baseline
        baseline = baseline - (1.0 - decay) * (baseline - reward)
        a_grads = jax.grad(lambda a: -surrogate(a)[0] * (reward - baseline))(state.alpha)
        return PassResult(None, a_grads, None, loss, acc, penalty, baseline)

    def post(c, r):
        st = m.apply_alpha(c[0], r.a_grads)
        return st.replace(a_opt=st.a_opt._replace(baseline=r.extra)), c[1]

    alpha = Pass("alpha", "val", "alpha", False, True, False, post, compute=compute)
    return Plan((alpha, _weights_pass(m)), val_pass=0, train_pass=1)


def difference_direction(update_vjp: Callable, w_val: Any) -> tuple[Any, jax.Array]:
    """``v = ∂u/∂g^T ∇_{w'} L_val`` and DARTS' ``ε = 0.01 / ||v||`` (Eq. 8)."""
    (v,) = update_vjp(w_val)
    return v, 0.01 / jnp.maximum(optax.tree.norm(v), 1e-12)


def add_difference(direct: Any, plus: Any, other: Any, span: jax.Array) -> Any:
    """``direct + (plus - other) / span``: the second-order term as a difference quotient."""
    return jax.tree_util.tree_map(lambda d, p, o: d + (p - o) / span.astype(d.dtype), direct, plus, other)


def _difference_plan(m: StepMaths, central: bool) -> Plan:
    """DARTS second order with the Hessian-vector product as a difference (Eq. 7-8).

    ``d/dα L_val(w + u(g(α)))`` = direct + ``∂g/∂α^T v`` with ``v = ∂u/∂g^T ∇_{w'} L_val``;
    the product is the derivative of ``∇_α L_train`` along ``v``: a central difference at
    ``w ± εv`` (Eq. 8), or one-sided against ``∇_α L_train(w)``, which the unrolled pass
    computes anyway (same batch and key): one pass fewer.
    """
    n = 5 if central else 4

    def post_unrolled(c, r):
        st, ex = c
        ex = {**ex, "g": r.w_grads, "D": m.update_map(st)(r.w_grads), "c": ex["c"].at[1].set(1.0)}
        return st, ex if central else {**ex, "a_other": r.a_grads}

    def post_val(c, r):
        st, ex = c
        v, eps = difference_direction(jax.vjp(m.update_map(st), ex["g"])[1], r.w_grads)
        cs = ex["c"].at[2].set(eps)
        return st, {**ex, "D": v, "c": cs.at[3].set(-eps) if central else cs, "a_direct": r.a_grads}

    def post_plus(c, r):
        st, ex = c
        if central:  # the difference waits for the w - εv pass
            return st, {**ex, "a_plus": r.a_grads}
        return m.apply_alpha(st, add_difference(ex["a_direct"], r.a_grads, ex["a_other"], ex["c"][2])), ex

    def post_minus(c, r):
        st, ex = c
        return m.apply_alpha(st, add_difference(ex["a_direct"], ex["a_plus"], r.a_grads, 2 * ex["c"][2])), ex

    passes = [
        Pass("unrolled", "train", "unrolled", True, not central, False, post_unrolled),
        Pass("val", "val", "alpha", True, True, True, post_val, shifted=True),
        Pass("plus", "train", "unrolled", False, True, False, post_plus, shifted=True),
    ]
    if central:
        passes.append(Pass("minus", "train", "unrolled", False, True, False, post_minus, shifted=True))
    passes.append(_weights_pass(m))

    def init(state):
        zeros_w = jax.tree_util.tree_map(jnp.zeros_like, state.weights)
        zeros_a = jax.tree_util.tree_map(jnp.zeros_like, state.alpha)
        c_dtype = jnp.result_type(*jax.tree_util.tree_leaves(state.weights))  # ε in the weights' precision
        ex = {"D": zeros_w, "g": zeros_w, "c": jnp.zeros((n,), c_dtype), "a_direct": zeros_a}
        ex["a_plus" if central else "a_other"] = zeros_a
        return ex

    return Plan(tuple(passes), val_pass=1, train_pass=n - 1, init=init)


@PLANS.decorator("finite_difference", lambda f: f)
def finite_difference(m: StepMaths) -> Plan:
    """DARTS' Eq. 8: central difference at ``w ± εv``, ``ε = 0.01 / ||v||``."""
    return _difference_plan(m, central=True)


@PLANS.decorator("forward_difference", lambda f: f)
def forward_difference(m: StepMaths) -> Plan:
    """One-sided difference at ``w + εv`` against ``w``: one pass fewer, O(ε) error."""
    return _difference_plan(m, central=False)


@PLANS.decorator("exact", lambda f: f)
def exact(m: StepMaths) -> Plan:
    """The hypergradient ``d/dα L_val(w + u(∇_w L_train(w, α)), α)`` by autodiff through
    the unrolled weight step (reverse over reverse; exact, slower to compile and run)."""
    def compute(state, batches, keys):
        def unrolled_objective(alpha):
            grads, _, _ = m.grads(m.objective, state.weights, alpha, state.stats, batches["train"], keys["unrolled"], state.step, False)
            unrolled = optax.apply_updates(state.weights, m.update_map(state)(grads))
            return m.objective(unrolled, alpha, state.stats, batches["val"], keys["alpha"], state.step, True)

        a_grads, (_, logits, loss, penalty) = jax.grad(unrolled_objective, has_aux=True)(state.alpha)
        return PassResult(None, a_grads, None, loss, _accuracy(logits, batches["val"][1]), penalty)

    alpha = Pass("alpha", "val", "alpha", False, True, True, lambda c, r: (m.apply_alpha(c[0], r.a_grads), c[1]), compute=compute)
    return Plan((alpha, _weights_pass(m)), val_pass=0, train_pass=1)


# ----- executors -----------------------------------------------------------------------


def _accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


def _shift(weights: Any, ex: dict[str, Any], i: int | jax.Array, on: bool | jax.Array) -> Any:
    if on is False:
        return weights
    c = ex["c"][i]
    return jax.tree_util.tree_map(lambda w, d: jnp.where(on, w + c.astype(w.dtype) * d, w), weights, ex["D"])


def _standard(m: StepMaths, st: SearchState, weights: Any, batch: Batch, key: PRNGKey, penalty: bool | jax.Array) -> PassResult:
    w_g, a_g, (stats, logits, loss, pen) = m.grads(m.objective, weights, st.alpha, st.stats, batch, key, st.step, penalty)
    return PassResult(w_g, a_g, stats, loss, _accuracy(logits, batch[1]), pen)


def run_sequential(
    m: StepMaths, plan: Plan, state: SearchState, batches: dict[str, Batch], keys: dict[str, PRNGKey]
) -> tuple[SearchState, list[PassResult]]:
    """Runs the passes one after the other (each traced separately)."""
    carry: Carry = (state, plan.init(state))
    results = []
    for i, p in enumerate(plan.passes):
        st, ex = carry
        if p.compute is not None:
            r = p.compute(st, batches, keys)
        else:
            r = _standard(m, st, _shift(st.weights, ex, i, p.shifted), batches[p.batch], keys[p.key], p.penalty)
        carry = p.post(carry, r)
        results.append(r)
    return carry[0], results


def can_fuse(plan: Plan, batches: dict[str, Batch]) -> bool:
    """Whether :func:`run_fused` applies: several standard passes over batches that stack
    (same shapes and dtypes)."""
    if len(plan.passes) < 2 or any(p.compute is not None for p in plan.passes):
        return False
    used = [batches[p.batch] for p in plan.passes]
    sig = lambda b: jax.tree_util.tree_map(lambda v: (jnp.shape(v), jnp.result_type(v)), b)  # noqa: E731
    return all(sig(b) == sig(used[0]) for b in used)


def run_fused(
    m: StepMaths, plan: Plan, state: SearchState, batches: dict[str, Batch], keys: dict[str, PRNGKey]
) -> tuple[SearchState, list[PassResult]]:
    """Runs the passes as the iterations of one ``lax.scan``: the network's forward and
    backward are in the program once; pass ``i`` opens only its gradient gates and
    ``lax.switch`` picks its post. Requires :func:`can_fuse`."""
    ps = plan.passes
    xs = (
        jnp.arange(len(ps)),
        jax.tree_util.tree_map(lambda *b: jnp.stack(b), *[batches[p.batch] for p in ps]),
        jnp.stack([keys[p.key] for p in ps]),
        *(jnp.asarray([getattr(p, f) for p in ps]) for f in ("grad_w", "grad_a", "penalty", "shifted")),
    )
    posts = [p.post for p in ps]

    def body(carry, x):
        i, batch, key, gw, ga, pen, shifted = x
        st, ex = carry
        weights = _shift(st.weights, ex, i, shifted) if "c" in ex else st.weights
        with grad_gates(GradGates(weights=gw, alpha=ga)):
            r = _standard(m, st, weights, batch, key, pen)
        return jax.lax.switch(i, posts, carry, r), (r.loss, r.acc, r.penalty)

    (state, _), (loss, acc, penalty) = jax.lax.scan(body, (state, plan.init(state)), xs)
    return state, [PassResult(None, None, None, loss[i], acc[i], penalty[i]) for i in range(len(ps))]
