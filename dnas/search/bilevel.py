"""The jitted bi-level DARTS search step (Liu et al., ICLR 2019, Alg. 1).

One pure function does, on a train batch and a val batch:

1. α update on the val batch: ``∇_α L_val(w, α)`` (``order=1``) or the hypergradient
   ``d/dα L_val(w', α)`` with ``w' = w + u(∇_w L_train(w, α))`` one unrolled step of the
   *actual* weight optimizer ``u`` (``order=2``). Two ways to get its second-order term:

   - ``hypergradient="finite_difference"`` (default, DARTS Eq. 7-8): the Hessian-vector
     product is a central difference of two α-gradients of the train loss at
     ``w ± εv``, ``ε = 0.01 / ||v||``. Only first-order gradients are taken, so it costs
     about two more α-gradients than the first-order step.
   - ``hypergradient="forward_difference"``: the same product as a one-sided difference,
     ``(∇_α L_train(w + εv) - ∇_α L_train(w)) / ε``. The gradient at ``w`` comes free
     with the unrolled step's weight gradient (same batch and key), so one α-gradient
     pass fewer than Eq. 8: on a 2-core CPU the second-order step costs about 2.3x the
     first-order one instead of 2.6x (``benchmarks/RESULTS.md``). Its error is O(ε)
     instead of O(ε²); it is not the paper's formula, so it is an option, not the default.
   - ``hypergradient="exact"``: autodiff differentiates through the unrolled step
     (reverse over reverse). Exact, but much slower and larger to compile.

   For DARTS' SGD ``v = -ξ ∇_{w'} L_val(w', α)`` and the two agree with the paper's
   formula; for any other optax optimizer ``v`` is the VJP of the update map with respect
   to the gradient (so gradient clipping's Jacobian is included, which DARTS ignores).
2. weight update on the train batch with the new α (DARTS' order).

The α loss accepts extra differentiable terms (``arch_penalty``), e.g. a latency term of
the architecture's probabilities. ``update_alpha=False`` gives the weight step alone
(supernet training by sampled paths: SPOS, RSPS).

Each method is a plan of passes (:mod:`dnas.search.plans`) run by a sequential or a fused
executor; this module builds the pieces the plans are made of (objective, optimizers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dnas.core.errors import DnasError
from dnas.core.losses import cross_entropy
from dnas.search.plans import PLANS, Plan, StepMaths, can_fuse, run_fused, run_sequential
from dnas.space.relax import Relaxation, relax_all, softmax
from dnas.search.state import SearchState, step_compiler_options
from dnas.core.types import ArchWeights, Batch, Metrics

HYPERGRADIENTS = tuple(n for n in PLANS.names() if n not in ("first_order", "weights_only", "fair_weights", "sandwich_weights", "reinforce"))
"""How ``order=2`` gets its second-order term (see the module docstring and :mod:`dnas.search.plans`)."""

ArchPenalty = Callable[[Mapping[str, jax.Array], Mapping[str, ArchWeights], jax.Array], jax.Array]
"""``(α logits per label, relaxed inputs per label, step) -> scalar`` added to the α loss. A
callable with a true ``takes_loss`` attribute is called with the α pass' task loss as a
fourth argument (``dnas.search.latency.LatencyPenalty``: penalties that scale the loss)."""


def darts_weight_optimizer(
    lr: float = 0.025, lr_min: float = 0.001, epochs: int = 50, steps_per_epoch: int = 1, momentum: float = 0.9,
    weight_decay: float = 3e-4, grad_clip: float = 5.0, nesterov: bool = False, decay_norm_and_bias: bool = True,
) -> optax.GradientTransformation:
    """DARTS' weight optimizer: clip(5) -> L2 3e-4 -> SGD momentum 0.9, cosine lr per epoch.

    ``nesterov=True`` is the NAS-Bench-201 baselines' variant (their DARTS uses Nesterov
    momentum, AutoDL ``configs/nas-benchmark/algos/DARTS.config``).
    ``decay_norm_and_bias=False`` exempts normalisation scales and every bias from the L2
    term (Once-for-All's ``no_decay_keys="bn#bias"``; one of the super-net training
    heuristics Yu, Ranftl & Salzmann, "How to Train Your Super-Net", ICLR 2021, examine).

    The learning rate is constant within an epoch and follows
    ``CosineAnnealingLR(T_max=epochs, eta_min=lr_min)``, as in DARTS' ``train_search.py``.
    """
    cosine = optax.cosine_decay_schedule(lr, max(epochs, 1), alpha=lr_min / lr if lr else 0.0)
    schedule = lambda step: cosine(step // max(steps_per_epoch, 1))  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.add_decayed_weights(weight_decay, mask=None if decay_norm_and_bias else decayed_kernels),
        optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=momentum, nesterov=nesterov),
    )


def decayed_kernels(params: Any) -> Any:
    """``True`` for every leaf of ``params`` but normalisation scales and biases (leaf names
    ``scale`` and ``bias``): the weight-decay mask of ``decay_norm_and_bias=False``. The
    name, not the rank, decides, so stacked (scanned, few-shot) parameters keep their role."""
    def keep(path: tuple, _: Any) -> bool:
        names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
        return not any(n in ("scale", "bias") for n in names[-2:])

    return jax.tree_util.tree_map_with_path(keep, params)


def darts_alpha_optimizer(lr: float = 3e-4, b1: float = 0.5, b2: float = 0.999, weight_decay: float = 1e-3) -> optax.GradientTransformation:
    """DARTS' α optimizer: Adam(3e-4, betas (0.5, 0.999)) with L2 weight decay 1e-3."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=b1, b2=b2))




def _learning_rate(opt_state: Any) -> jax.Array:
    """The injected learning rate found in an optax state, or NaN if none is injected."""
    kinds = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
    for s in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda x: isinstance(x, kinds)):
        if isinstance(s, kinds):
            return jnp.asarray(s.hyperparams["learning_rate"], jnp.float32)
    return jnp.asarray(jnp.nan, jnp.float32)


def make_search_step(
    graphdef: nnx.GraphDef,
    w_optimizer: optax.GradientTransformation,
    a_optimizer: optax.GradientTransformation,
    *,
    order: int = 1,
    hypergradient: str = "finite_difference",
    relax: Relaxation | None = None,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    arch_penalty: ArchPenalty | None = None,
    fuse_passes: bool = True,
    update_alpha: bool = True,
    steps_per_epoch: int = 1,
    alpha_grad: str = "relaxation",
    alpha_grad_kwargs: Mapping[str, Any] | None = None,
    fair: bool = False,
    sandwich: Mapping[str, Any] | None = None,
) -> "SearchStep":
    """Builds the pure bi-level step ``step(state, train_batch, val_batch) -> (state, metrics)``.

    Args:
      graphdef: from :func:`dnas.search.state.init_search_state` (training mode).
      w_optimizer, a_optimizer: optax transforms for weights and α.
      order: 1 (first-order DARTS) or 2 (second-order DARTS: one unrolled weight step).
      hypergradient: for ``order=2``, a registered plan: ``"finite_difference"`` (DARTS'
        Eq. 8, fast), ``"forward_difference"`` (one-sided difference, one pass fewer) or
        ``"exact"`` (autodiff through the unrolled step).
      relax: α -> what the mixed ops take (default: DARTS softmax); called with the epoch
        ``state.step // steps_per_epoch``.
      loss_fn: ``(logits, labels) -> scalar``.
      arch_penalty: extra differentiable α-loss term (:data:`ArchPenalty`).
      fuse_passes: run the step's passes as the iterations of one ``lax.scan``
        (:func:`dnas.search.plans.run_fused`), so the program holds the network's forward and
        backward once instead of once per pass, each iteration computing only the
        gradients its pass uses. The same maths as the passes run one after the other
        (tested equal to float rounding); smaller programs, faster compiles, less memory
        (``benchmarks/RESULTS.md``). Used when the plan has several standard passes and
        the train and val batches stack; otherwise the passes run sequentially.
      update_alpha: False gives the weight step alone (SPOS/RSPS supernet training with a
        sampling relaxation such as ``uniform``); the val batch is then unused.
      steps_per_epoch: converts the step counter to the epoch the relaxation sees.
      alpha_grad: how α learns with ``order=1``: ``"relaxation"`` (the gradient through
        the relaxed network, DARTS and its family) or ``"reinforce"`` (ENAS' policy
        gradient, :func:`dnas.search.plans.reinforce`; needs a sampling policy such as
        ``relax="policy"`` and an α optimizer wrapped by
        :func:`dnas.search.plans.with_reward_baseline`).
      alpha_grad_kwargs: ``reinforce``'s ``entropy_weight`` (1e-4) and ``baseline_decay`` (0.99).
      fair: with ``update_alpha=False``, FairNAS' strictly fair sampling
        (:func:`dnas.search.plans.fair_weights`): every candidate of every label trained
        once per step, ``M`` paths with gradients summed before one update.
      sandwich: with ``update_alpha=False``, the sandwich rule
        (:func:`dnas.search.plans.sandwich_weights`): ``{"sizes": label -> f[k] candidate
        sizes, "n_random": int, "distill": bool}``; None: not used.

    Returns:
      A :class:`SearchStep` (call it, or ``.jit()`` it). Metrics: ``train_loss``, ``train_acc``, ``val_loss``,
      ``val_acc``, ``penalty``, ``w_lr``, ``a_lr``, ``alpha_entropy`` (mean per label).
    """
    if order not in (1, 2):
        raise DnasError(f"order must be 1 or 2, got {order}")
    if order == 2 and hypergradient not in HYPERGRADIENTS:
        raise DnasError(f"hypergradient must be one of {HYPERGRADIENTS}, got {hypergradient!r}")
    relax = relax or softmax()
    spe = max(int(steps_per_epoch), 1)

    def objective(weights, alpha, stats, batch, key, step, penalty_on, arch=None, loss_override=None):
        # The loss of one pass, plus arch_penalty where penalty_on (the α objective): a
        # Python bool in the sequential executor, a traced one in the fused loop. A plan
        # that chooses the path itself (FairNAS' fair_weights) passes ``arch``; one that
        # learns from other targets (in-place distillation) passes ``loss_override``.
        x, y = batch
        logits_by_label = dict(nnx.to_pure_dict(alpha)["alpha"])
        if arch is None:
            arch = relax_all(relax, key, logits_by_label, step // spe)
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them
        # inside jax.grad (reused Variables would belong to the outer jit trace).
        model = nnx.merge(graphdef, alpha, weights, stats, copy=True)
        logits = model(x, arch).logits
        loss = (loss_override or loss_fn)(logits, y)
        if arch_penalty is None or penalty_on is False:
            penalty, total = jnp.zeros((), loss.dtype), loss
        else:
            # A penalty with ``takes_loss`` also gets the task loss: the multiplicative
            # latency losses (ProxylessNAS mul#log, FBNet) scale it.
            penalty = (arch_penalty(logits_by_label, arch, step, loss) if getattr(arch_penalty, "takes_loss", False)
                       else arch_penalty(logits_by_label, arch, step))
            total = loss + (penalty if penalty_on is True else jnp.where(penalty_on, penalty, jnp.zeros((), penalty.dtype)))
        return total, (nnx.state(model, nnx.BatchStat), logits, loss, penalty)

    def grads(objective, weights, alpha, *args):
        # Every pass differentiates w.r.t. weights *and* α, even where it needs one of
        # them. Why: JAX caches the linearization and transposition of each jitted edge
        # scan (dnas.space.mixed._edge_scan_run) per tangent pattern; with one pattern for all
        # passes they share them (C=16, 8 cells, first order: trace 10.5 s -> 6.0 s). The
        # unused gradients are dead code that JAX removes before XLA sees the program.
        (w_grads, a_grads), aux = jax.grad(lambda w, a: objective(w, a, *args), argnums=(0, 1), has_aux=True)(weights, alpha)
        return w_grads, a_grads, aux

    def apply_alpha(state, a_grads):
        a_updates, a_opt = a_optimizer.update(a_grads, state.a_opt, state.alpha)
        return state.replace(alpha=optax.apply_updates(state.alpha, a_updates), a_opt=a_opt)

    def apply_weights(state, w_grads, stats):
        w_updates, w_opt = w_optimizer.update(w_grads, state.w_opt, state.weights)
        return state.replace(weights=optax.apply_updates(state.weights, w_updates), w_opt=w_opt, stats=stats)

    def update_map(state):
        return lambda g: w_optimizer.update(g, state.w_opt, state.weights)[0]

    if alpha_grad not in ("relaxation", "reinforce"):
        raise DnasError(f"alpha_grad must be 'relaxation' or 'reinforce', got {alpha_grad!r}")
    if alpha_grad == "reinforce" and order != 1:
        raise DnasError("alpha_grad='reinforce' (ENAS) is a first-order policy gradient; set order=1")
    options = dict(alpha_grad_kwargs or {})
    if sandwich is not None:
        options["sandwich"] = dict(sandwich)
    maths = StepMaths(objective, apply_alpha, apply_weights, update_map, grads, relax, spe, options)
    if (fair or sandwich is not None) and update_alpha:
        raise DnasError(f"{'fair sampling (FairNAS)' if fair else 'the sandwich rule'} trains the supernet's weights only; set update_alpha=False")
    if fair and sandwich is not None:
        raise DnasError("fair sampling and the sandwich rule each choose the step's paths; use one of them")
    weights_plan = "fair_weights" if fair else "sandwich_weights" if sandwich is not None else "weights_only"
    name = weights_plan if not update_alpha else ("reinforce" if alpha_grad == "reinforce" else "first_order") if order == 1 else hypergradient
    plan = PLANS[name](maths)

    def execute(plan: Plan, state: SearchState, train_batch: Batch, val_batch: Batch | None, fuse: bool) -> tuple[SearchState, Metrics]:
        # One split per step: (α pass, weight pass, unrolled / difference passes).
        key_a, key_w, key_u = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
        keys = {"alpha": key_a, "weight": key_w, "unrolled": key_u}
        batches = {"train": train_batch, "val": val_batch if val_batch is not None else train_batch}
        lrs = {"a_lr": _learning_rate(state.a_opt), "w_lr": _learning_rate(state.w_opt)}
        run = run_fused if fuse and can_fuse(plan, batches) else run_sequential
        new, results = run(maths, plan, state, batches, keys)
        metrics: Metrics = {}
        if plan.val_pass is not None:
            r = results[plan.val_pass]
            metrics.update(val_loss=r.loss, val_acc=r.acc, penalty=r.penalty, a_lr=lrs["a_lr"])
        if plan.train_pass is not None:
            r = results[plan.train_pass]
            metrics.update(train_loss=r.loss, train_acc=r.acc, w_lr=lrs["w_lr"])
        return new, metrics

    def alpha_update(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        return execute(plan.alpha_passes, state, train_batch, val_batch, False)

    def weight_update(state: SearchState, train_batch: Batch) -> tuple[SearchState, Metrics]:
        return execute(plan.weight_passes, state, train_batch, None, False)

    def both(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        return execute(plan, state, train_batch, val_batch, fuse_passes)

    return SearchStep(alpha_update, weight_update, both, plan)


def alpha_entropy(alpha: nnx.State) -> jax.Array:
    """Mean entropy of ``softmax(α)`` over labels (nats); falls as α commits to ops."""
    probs = [jax.nn.softmax(a) for a in jax.tree_util.tree_leaves(alpha)]
    return jnp.mean(jnp.stack([-(p * jnp.log(p + 1e-12)).sum() for p in probs]))


class SearchStep(NamedTuple):
    """A bi-level search step: call it for α-then-weights, or use either half alone.

    ``step(state, train_batch, val_batch) -> (state, metrics)`` runs ``alpha_update`` on the
    val batch, then ``weight_update`` on the train batch with the new α (DARTS' order), and
    increments ``state.step``. Both halves are pure; ``jit()`` returns the whole step jitted
    with ``state`` donated. ``both`` is the two halves in one function (fused into one loop
    or one after the other, per ``make_search_step(fuse_passes=...)``), without the
    step increment and ``alpha_entropy``. ``plan`` is the method's passes
    (:mod:`dnas.search.plans`).
    """

    alpha_update: Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]
    weight_update: Callable[[SearchState, Batch], tuple[SearchState, Metrics]]
    both: Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]
    plan: Plan

    def __call__(self, state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        state, metrics = self.both(state, train_batch, val_batch)
        metrics = {**metrics, "alpha_entropy": alpha_entropy(state.alpha)}
        return state.replace(step=state.step + 1), metrics

    def jit(self, donate: bool = True) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
        """The whole step under ``jax.jit`` (``state`` donated unless ``donate=False``), compiled
        with :func:`~dnas.search.state.step_compiler_options`."""
        return jax.jit(self.__call__, donate_argnums=(0,) if donate else (), compiler_options=step_compiler_options())
