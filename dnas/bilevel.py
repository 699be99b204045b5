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
the mixing weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from dnas.ops.layers import GradGates, grad_gates
from dnas.relax import Relaxation, relax_all, softmax
from dnas.state import SearchState, step_compiler_options
from dnas.types import Batch, Metrics

HYPERGRADIENTS = ("finite_difference", "forward_difference", "exact")
"""How ``order=2`` gets its second-order term (see the module docstring)."""

ArchPenalty = Callable[[Mapping[str, jax.Array], jax.Array], jax.Array]
"""``(mixing weights per label, step) -> scalar`` added to the α loss."""


def darts_weight_optimizer(
    lr: float = 0.025, lr_min: float = 0.001, epochs: int = 50, steps_per_epoch: int = 1, momentum: float = 0.9,
    weight_decay: float = 3e-4, grad_clip: float = 5.0,
) -> optax.GradientTransformation:
    """DARTS' weight optimizer: clip(5) -> L2 3e-4 -> SGD momentum 0.9, cosine lr per epoch.

    The learning rate is constant within an epoch and follows
    ``CosineAnnealingLR(T_max=epochs, eta_min=lr_min)``, as in DARTS' ``train_search.py``.
    """
    cosine = optax.cosine_decay_schedule(lr, max(epochs, 1), alpha=lr_min / lr)
    schedule = lambda step: cosine(step // max(steps_per_epoch, 1))  # noqa: E731
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.add_decayed_weights(weight_decay),
        optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=momentum),
    )


def darts_alpha_optimizer(lr: float = 3e-4, b1: float = 0.5, b2: float = 0.999, weight_decay: float = 1e-3) -> optax.GradientTransformation:
    """DARTS' α optimizer: Adam(3e-4, betas (0.5, 0.999)) with L2 weight decay 1e-3."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.inject_hyperparams(optax.adam)(learning_rate=lr, b1=b1, b2=b2))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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
) -> "SearchStep":
    """Builds the pure bi-level step ``step(state, train_batch, val_batch) -> (state, metrics)``.

    Args:
      graphdef: from :func:`dnas.state.init_search_state` (training mode).
      w_optimizer, a_optimizer: optax transforms for weights and α.
      order: 1 (first-order DARTS) or 2 (second-order DARTS: one unrolled weight step).
      hypergradient: for ``order=2``, ``"finite_difference"`` (DARTS' Eq. 8, fast),
        ``"forward_difference"`` (one-sided difference, one pass fewer) or ``"exact"``
        (autodiff through the unrolled step).
      relax: α -> mixing weights (default: DARTS softmax).
      loss_fn: ``(logits, labels) -> scalar``.
      arch_penalty: extra differentiable α-loss term of the mixing weights.
      fuse_passes: run the step's passes (α pass and weight pass; for second-order
        differences the unrolled, val, shifted (two, or one for one-sided) and weight
        passes) as the iterations of one ``lax.scan``, so the program holds the network's forward and
        backward once instead of once per pass. Gradient gates
        (:func:`dnas.ops.layers.grad_gates`) skip in each iteration the gradients it
        discards. The same maths as the unfused step (tested equal to float rounding).
        On a 2-core CPU (``benchmarks/RESULTS.md``), DARTS at C=16/8 cells, first
        order: cold compile 39 -> 30 s, warm start (trace + cache load) 19 -> 9-10 s,
        peak memory 1.97 -> 1.42 GB; second order at C=8/5 cells: compile 63 -> 38 s,
        memory 2.7 -> 1.4 GB. The step itself runs 0-10 % slower (in-process interleaved
        medians; the gates' conditionals and the loop's carried state cost a little).
        Used for ``order=1`` and the two difference hypergradients when the train
        and val batches have the same shapes; otherwise the unfused step runs.

    Returns:
      A :class:`SearchStep` (call it, or ``.jit()`` it). Metrics: ``train_loss``, ``train_acc``, ``val_loss``,
      ``val_acc``, ``penalty``, ``w_lr``, ``a_lr``, ``alpha_entropy`` (mean per label).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if hypergradient not in HYPERGRADIENTS:
        raise ValueError(f"hypergradient must be one of {HYPERGRADIENTS}, got {hypergradient!r}")
    relax = relax or softmax()
    central = hypergradient == "finite_difference"

    def forward(alpha, weights, stats, x, arch_inputs):
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them
        # inside jax.grad (reused Variables would belong to the outer jit trace).
        model = nnx.merge(graphdef, alpha, weights, stats, copy=True)
        logits = model(x, arch_inputs)
        return logits, nnx.state(model, nnx.BatchStat)

    def mixing(alpha, key, step):
        logits = dict(nnx.to_pure_dict(alpha)["alpha"])
        return relax_all(relax, key, logits, step)

    def objective(weights, alpha, stats, batch, key, step, penalty_on):
        # The loss of one pass, plus arch_penalty where penalty_on (the α loss): a Python
        # bool in the unfused step, a traced one in the fused step's loop.
        x, y = batch
        arch = mixing(alpha, key, step)
        logits, new_stats = forward(alpha, weights, stats, x, arch)
        loss = loss_fn(logits, y)
        if arch_penalty is None or penalty_on is False:
            penalty, total = jnp.zeros((), loss.dtype), loss
        else:
            penalty = arch_penalty(arch, step)
            total = loss + (penalty if penalty_on is True else jnp.where(penalty_on, penalty, jnp.zeros((), penalty.dtype)))
        return total, (new_stats, logits, loss, penalty)

    def train_loss(weights, alpha, stats, batch, key, step):
        return objective(weights, alpha, stats, batch, key, step, False)

    def val_objective(alpha, weights, stats, batch, key, step):
        return objective(weights, alpha, stats, batch, key, step, True)

    def grads_wrt_weights_and_alpha(objective, weights, alpha, *args):
        # Every pass of the step differentiates w.r.t. weights *and* α, even where it needs
        # one of them. Why: JAX caches the linearization and transposition of each jitted
        # edge scan (dnas.mixed._edge_scan_run) per tangent pattern; with one pattern for
        # all passes the α half, the weight half and the finite-difference passes share
        # them (C=16, 8 cells, first order: trace 10.5 s -> 6.0 s on top of the jitted
        # scans; second order roughly halves). The unused gradients are dead code that
        # JAX removes before XLA sees the program.
        (w_grads, a_grads), aux = jax.grad(lambda w, a: objective(w, a, *args), argnums=(0, 1), has_aux=True)(weights, alpha)
        return w_grads, a_grads, aux

    def val_objective_wa(weights, alpha, *args):
        return val_objective(alpha, weights, *args)

    def pass_keys(state):
        # (α pass, weight pass, unrolled / finite-difference passes): one split per step.
        return jax.random.split(jax.random.fold_in(state.rng, state.step), 3)

    def apply_alpha(state, a_grads):
        a_updates, a_opt = a_optimizer.update(a_grads, state.a_opt, state.alpha)
        return state.replace(alpha=optax.apply_updates(state.alpha, a_updates), a_opt=a_opt)

    def apply_weights(state, w_grads, stats):
        w_updates, w_opt = w_optimizer.update(w_grads, state.w_opt, state.weights)
        return state.replace(weights=optax.apply_updates(state.weights, w_updates), w_opt=w_opt, stats=stats)

    def difference_direction(update_vjp, w_val):
        # v = ∂u/∂g^T ∇_{w'} L_val and DARTS' ε = 0.01 / ||v|| (Eq. 8).
        (v,) = update_vjp(w_val)
        return v, 0.01 / jnp.maximum(optax.tree.norm(v), 1e-12)

    def add_difference(direct, plus, other, eps):
        # direct + the directional derivative of ∇_α L_train along v: central
        # (∇_α at w+εv minus at w-εv, over 2ε; Eq. 8) or one-sided (minus at w, over ε).
        span = (2 if central else 1) * eps
        return jax.tree_util.tree_map(lambda d, p, m: d + (p - m) / span.astype(d.dtype), direct, plus, other)

    def unrolled_objective(alpha, state, train_batch, val_batch, key_w, key_a):
        grads, _, _ = grads_wrt_weights_and_alpha(train_loss, state.weights, alpha, state.stats, train_batch, key_w, state.step)
        updates, _ = w_optimizer.update(grads, state.w_opt, state.weights)
        unrolled = optax.apply_updates(state.weights, updates)
        return val_objective(alpha, unrolled, state.stats, val_batch, key_a, state.step)

    def difference_hypergradient(state, train_batch, val_batch, key_u, key_a):
        grads, a_train, _ = grads_wrt_weights_and_alpha(train_loss, state.weights, state.alpha, state.stats, train_batch, key_u, state.step)
        updates, update_vjp = jax.vjp(lambda g: w_optimizer.update(g, state.w_opt, state.weights)[0], grads)
        unrolled = optax.apply_updates(state.weights, updates)
        w_val, a_direct, aux = grads_wrt_weights_and_alpha(val_objective_wa, unrolled, state.alpha, state.stats, val_batch, key_a, state.step)
        # d/dα L_val(w + u(g(α))) = direct + ∂g/∂α^T (∂u/∂g^T ∇_{w'} L_val); the inner
        # product with v = ∂u/∂g^T ∇_{w'} L_val is a directional derivative of ∇_α L_train
        # along v, taken as a central (DARTS Eq. 8: ε = 0.01 / ||v||) or one-sided difference.
        v, eps = difference_direction(update_vjp, w_val)

        def alpha_grad_at(sign):
            shifted = jax.tree_util.tree_map(lambda w, d: w + (sign * eps).astype(w.dtype) * d, state.weights, v)
            return grads_wrt_weights_and_alpha(train_loss, shifted, state.alpha, state.stats, train_batch, key_u, state.step)[1]

        other = alpha_grad_at(-1.0) if central else a_train
        return add_difference(a_direct, alpha_grad_at(1.0), other, eps), aux

    def alpha_update(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        key_a, _, key_u = pass_keys(state)
        if order == 1:
            _, a_grads, (stats, v_logits, v_loss, penalty) = grads_wrt_weights_and_alpha(
                val_objective_wa, state.weights, state.alpha, state.stats, val_batch, key_a, state.step
            )
        else:
            if hypergradient != "exact":
                a_grads, (_, v_logits, v_loss, penalty) = difference_hypergradient(state, train_batch, val_batch, key_u, key_a)
            else:
                a_grads, (_, v_logits, v_loss, penalty) = jax.grad(unrolled_objective, has_aux=True)(
                    state.alpha, state, train_batch, val_batch, key_u, key_a
                )
            # Running stats come from the real weights' forward, not the unrolled copy's.
            stats = state.stats
        metrics = {
            "val_loss": v_loss,
            "val_acc": jnp.mean(jnp.argmax(v_logits, -1) == val_batch[1]),
            "penalty": penalty,
            "a_lr": _learning_rate(state.a_opt),
        }
        return apply_alpha(state, a_grads).replace(stats=stats), metrics

    def weight_update(state: SearchState, train_batch: Batch) -> tuple[SearchState, Metrics]:
        _, key_w, _ = pass_keys(state)
        w_grads, _, (stats, t_logits, t_loss, _) = grads_wrt_weights_and_alpha(
            train_loss, state.weights, state.alpha, state.stats, train_batch, key_w, state.step
        )
        metrics = {
            "train_loss": t_loss,
            "train_acc": jnp.mean(jnp.argmax(t_logits, -1) == train_batch[1]),
            "w_lr": _learning_rate(state.w_opt),
        }
        return apply_weights(state, w_grads, stats), metrics

    def fused(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        # The passes of the step run as iterations of one lax.scan (see fuse_passes).
        # Pass p evaluates the objective at weights w + c_p * D (D, c carried), on its
        # batch and key, computing only the gradients its gates allow; posts[p] consumes them.
        if jax.tree_util.tree_map(jnp.shape, train_batch) != jax.tree_util.tree_map(jnp.shape, val_batch) or (
            jax.tree_util.tree_map(jnp.result_type, train_batch) != jax.tree_util.tree_map(jnp.result_type, val_batch)
        ):
            return unfused(state, train_batch, val_batch)  # batches that cannot be stacked
        key_a, key_w, key_u = pass_keys(state)
        if order == 1:
            plan = [(val_batch, key_a, False, True, True), (train_batch, key_w, True, False, False)]
        else:  # unrolled grad (one-sided: with ∇_α at w), val grad at w', α-grads at w ± εv (or w + εv), weight pass
            plan = [(train_batch, key_u, True, not central, False), (val_batch, key_a, True, True, True)]
            plan += [(train_batch, key_u, False, True, False)] * (2 if central else 1) + [(train_batch, key_w, True, False, False)]
        batches = jax.tree_util.tree_map(lambda *b: jnp.stack(b), *[p[0] for p in plan])
        keys = jnp.stack([p[1] for p in plan])
        gate_w, gate_a, pen = (jnp.asarray([p[j] for p in plan]) for j in (2, 3, 4))
        zeros_w = jax.tree_util.tree_map(jnp.zeros_like, state.weights)
        zeros_a = jax.tree_util.tree_map(jnp.zeros_like, state.alpha)
        c_dtype = jnp.result_type(*jax.tree_util.tree_leaves(state.weights))  # ε in the weights' precision
        # a_plus: ∇_α at w + εv until the w - εv pass (central); a_other: ∇_α at w (one-sided).
        extra = {"D": zeros_w, "g": zeros_w, "c": jnp.zeros((len(plan),), c_dtype), "a_direct": zeros_a}
        extra["a_plus" if central else "a_other"] = zeros_a
        carry0 = (state, extra if order == 2 else {})
        lrs = {"a_lr": _learning_rate(state.a_opt), "w_lr": _learning_rate(state.w_opt)}

        def update_map(st):
            return lambda g: w_optimizer.update(g, st.w_opt, st.weights)[0]

        if order == 1:
            posts = [
                lambda st, ex, w_g, a_g, stats: (apply_alpha(st, a_g).replace(stats=stats), ex),
                lambda st, ex, w_g, a_g, stats: (apply_weights(st, w_g, stats), ex),
            ]
        else:
            def post_unrolled(st, ex, w_g, a_g, stats):
                # One-sided: a_g is ∇_α L_train at w (its gate is open in this pass only then).
                ex = {**ex, "a_other": a_g} if not central else ex
                return st, {**ex, "g": w_g, "D": update_map(st)(w_g), "c": ex["c"].at[1].set(1.0)}

            def post_val(st, ex, w_g, a_g, stats):
                v, eps = difference_direction(jax.vjp(update_map(st), ex["g"])[1], w_g)
                c = ex["c"].at[2].set(eps).at[3].set(-eps) if central else ex["c"].at[2].set(eps)
                return st, {**ex, "D": v, "c": c, "a_direct": a_g}

            def post_plus(st, ex, w_g, a_g, stats):
                if central:  # the difference waits for the w - εv pass
                    return st, {**ex, "a_plus": a_g}
                return apply_alpha(st, add_difference(ex["a_direct"], a_g, ex["a_other"], ex["c"][2])), ex

            def post_minus(st, ex, w_g, a_g, stats):
                return apply_alpha(st, add_difference(ex["a_direct"], ex["a_plus"], a_g, ex["c"][2])), ex

            posts = [post_unrolled, post_val, post_plus] + ([post_minus] if central else [])
            posts.append(lambda st, ex, w_g, a_g, stats: (apply_weights(st, w_g, stats), ex))

        def body(carry, xs):
            st, ex = carry
            i, batch, key, gw, ga, pen_on = xs
            weights = st.weights
            if order == 2:  # the val and difference passes run at shifted weights: w + u(g), w ± εv
                c = ex["c"][i]
                weights = jax.tree_util.tree_map(lambda w, d: jnp.where(c != 0, w + c.astype(w.dtype) * d, w), weights, ex["D"])
            with grad_gates(GradGates(weights=gw, alpha=ga)):
                w_g, a_g, (stats, logits, loss, penalty) = grads_wrt_weights_and_alpha(
                    objective, weights, st.alpha, st.stats, batch, key, st.step, pen_on
                )
            carry = jax.lax.switch(i, posts, st, ex, w_g, a_g, stats)
            return carry, (loss, jnp.mean(jnp.argmax(logits, -1) == batch[1]), penalty)

        xs = (jnp.arange(len(plan)), batches, keys, gate_w, gate_a, pen)
        (state, _), (loss, acc, penalty) = jax.lax.scan(body, carry0, xs)
        v, t = (0, 1) if order == 1 else (1, len(plan) - 1)
        metrics = {"val_loss": loss[v], "val_acc": acc[v], "penalty": penalty[v], "train_loss": loss[t], "train_acc": acc[t], **lrs}
        return state, metrics

    def unfused(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        state, a_metrics = alpha_update(state, train_batch, val_batch)
        state, w_metrics = weight_update(state, train_batch)
        return state, {**w_metrics, **a_metrics}

    use_fused = fuse_passes and (order == 1 or hypergradient != "exact")
    return SearchStep(alpha_update, weight_update, fused if use_fused else unfused)


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
    step increment and ``alpha_entropy``.
    """

    alpha_update: Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]
    weight_update: Callable[[SearchState, Batch], tuple[SearchState, Metrics]]
    both: Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]

    def __call__(self, state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        state, metrics = self.both(state, train_batch, val_batch)
        metrics = {**metrics, "alpha_entropy": alpha_entropy(state.alpha)}
        return state.replace(step=state.step + 1), metrics

    def jit(self, donate: bool = True) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
        """The whole step under ``jax.jit`` (``state`` donated unless ``donate=False``), compiled
        with :func:`~dnas.state.step_compiler_options`."""
        return jax.jit(self.__call__, donate_argnums=(0,) if donate else (), compiler_options=step_compiler_options())
