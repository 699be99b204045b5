"""The jitted bi-level DARTS search step (Liu et al., ICLR 2019, Alg. 1).

One pure function does, on a train batch and a val batch:

1. α update on the val batch: ``∇_α L_val(w, α)`` (``order=1``) or the hypergradient
   ``d/dα L_val(w', α)`` with ``w' = w + u(∇_w L_train(w, α))`` one unrolled step of the
   *actual* weight optimizer ``u`` (``order=2``). Two ways to get its second-order term:

   - ``hypergradient="finite_difference"`` (default, DARTS Eq. 7-8): the Hessian-vector
     product is a central difference of two α-gradients of the train loss at
     ``w ± εv``, ``ε = 0.01 / ||v||``. Only first-order gradients are taken, so it costs
     about two more α-gradients than the first-order step.
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

from dnas.relax import Relaxation, relax_all, softmax
from dnas.state import SearchState, step_compiler_options
from dnas.types import Batch, Metrics

HYPERGRADIENTS = ("finite_difference", "exact")
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
) -> "SearchStep":
    """Builds the pure bi-level step ``step(state, train_batch, val_batch) -> (state, metrics)``.

    Args:
      graphdef: from :func:`dnas.state.init_search_state` (training mode).
      w_optimizer, a_optimizer: optax transforms for weights and α.
      order: 1 (first-order DARTS) or 2 (second-order DARTS: one unrolled weight step).
      hypergradient: for ``order=2``, ``"finite_difference"`` (DARTS' Eq. 8, fast) or
        ``"exact"`` (autodiff through the unrolled step).
      relax: α -> mixing weights (default: DARTS softmax).
      loss_fn: ``(logits, labels) -> scalar``.
      arch_penalty: extra differentiable α-loss term of the mixing weights.

    Returns:
      A :class:`SearchStep` (call it, or ``.jit()`` it). Metrics: ``train_loss``, ``train_acc``, ``val_loss``,
      ``val_acc``, ``penalty``, ``w_lr``, ``a_lr``, ``alpha_entropy`` (mean per label).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order}")
    if hypergradient not in HYPERGRADIENTS:
        raise ValueError(f"hypergradient must be one of {HYPERGRADIENTS}, got {hypergradient!r}")
    relax = relax or softmax()

    def forward(alpha, weights, stats, x, arch_inputs):
        # copy=True: fresh Variables at this trace level, so BatchNorm may update them
        # inside jax.grad (reused Variables would belong to the outer jit trace).
        model = nnx.merge(graphdef, alpha, weights, stats, copy=True)
        logits = model(x, arch_inputs)
        return logits, nnx.state(model, nnx.BatchStat)

    def mixing(alpha, key, step):
        logits = dict(nnx.to_pure_dict(alpha)["alpha"])
        return relax_all(relax, key, logits, step)

    def train_loss(weights, alpha, stats, batch, key, step):
        x, y = batch
        logits, new_stats = forward(alpha, weights, stats, x, mixing(alpha, key, step))
        return loss_fn(logits, y), (new_stats, logits)

    def val_objective(alpha, weights, stats, batch, key, step):
        x, y = batch
        arch = mixing(alpha, key, step)
        logits, new_stats = forward(alpha, weights, stats, x, arch)
        loss = loss_fn(logits, y)
        penalty = arch_penalty(arch, step) if arch_penalty is not None else jnp.zeros((), loss.dtype)
        return loss + penalty, (new_stats, logits, loss, penalty)

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

    def unrolled_objective(alpha, state, train_batch, val_batch, key_w, key_a):
        grads, _, _ = grads_wrt_weights_and_alpha(train_loss, state.weights, alpha, state.stats, train_batch, key_w, state.step)
        updates, _ = w_optimizer.update(grads, state.w_opt, state.weights)
        unrolled = optax.apply_updates(state.weights, updates)
        return val_objective(alpha, unrolled, state.stats, val_batch, key_a, state.step)

    def finite_difference_hypergradient(state, train_batch, val_batch, key_u, key_a):
        grads, _, _ = grads_wrt_weights_and_alpha(train_loss, state.weights, state.alpha, state.stats, train_batch, key_u, state.step)
        updates, update_vjp = jax.vjp(lambda g: w_optimizer.update(g, state.w_opt, state.weights)[0], grads)
        unrolled = optax.apply_updates(state.weights, updates)
        w_val, a_direct, aux = grads_wrt_weights_and_alpha(val_objective_wa, unrolled, state.alpha, state.stats, val_batch, key_a, state.step)
        # d/dα L_val(w + u(g(α))) = direct + ∂g/∂α^T (∂u/∂g^T ∇_{w'} L_val); the inner
        # product with v = ∂u/∂g^T ∇_{w'} L_val is a directional derivative of ∇_α L_train
        # along v, taken as a central difference (DARTS Eq. 8: ε = 0.01 / ||v||).
        (v,) = update_vjp(w_val)
        eps = 0.01 / jnp.maximum(optax.tree.norm(v), 1e-12)

        def alpha_grad_at(sign):
            shifted = jax.tree_util.tree_map(lambda w, d: w + (sign * eps).astype(w.dtype) * d, state.weights, v)
            return grads_wrt_weights_and_alpha(train_loss, shifted, state.alpha, state.stats, train_batch, key_u, state.step)[1]

        plus, minus = alpha_grad_at(1.0), alpha_grad_at(-1.0)
        a_grads = jax.tree_util.tree_map(lambda d, p, m: d + (p - m) / (2 * eps).astype(d.dtype), a_direct, plus, minus)
        return a_grads, aux

    def alpha_update(state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        key_a, _, key_u = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
        if order == 1:
            _, a_grads, (stats, v_logits, v_loss, penalty) = grads_wrt_weights_and_alpha(
                val_objective_wa, state.weights, state.alpha, state.stats, val_batch, key_a, state.step
            )
        else:
            if hypergradient == "finite_difference":
                a_grads, (_, v_logits, v_loss, penalty) = finite_difference_hypergradient(state, train_batch, val_batch, key_u, key_a)
            else:
                a_grads, (_, v_logits, v_loss, penalty) = jax.grad(unrolled_objective, has_aux=True)(
                    state.alpha, state, train_batch, val_batch, key_u, key_a
                )
            # Running stats come from the real weights' forward, not the unrolled copy's.
            stats = state.stats
        a_updates, a_opt = a_optimizer.update(a_grads, state.a_opt, state.alpha)
        alpha = optax.apply_updates(state.alpha, a_updates)
        metrics = {
            "val_loss": v_loss,
            "val_acc": jnp.mean(jnp.argmax(v_logits, -1) == val_batch[1]),
            "penalty": penalty,
            "a_lr": _learning_rate(state.a_opt),
        }
        return state.replace(alpha=alpha, stats=stats, a_opt=a_opt), metrics

    def weight_update(state: SearchState, train_batch: Batch) -> tuple[SearchState, Metrics]:
        _, key_w, _ = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
        w_grads, _, (stats, t_logits) = grads_wrt_weights_and_alpha(
            train_loss, state.weights, state.alpha, state.stats, train_batch, key_w, state.step
        )
        w_updates, w_opt = w_optimizer.update(w_grads, state.w_opt, state.weights)
        weights = optax.apply_updates(state.weights, w_updates)
        metrics = {
            "train_loss": loss_fn(t_logits, train_batch[1]),
            "train_acc": jnp.mean(jnp.argmax(t_logits, -1) == train_batch[1]),
            "w_lr": _learning_rate(state.w_opt),
        }
        return state.replace(weights=weights, stats=stats, w_opt=w_opt), metrics

    return SearchStep(alpha_update, weight_update)


def alpha_entropy(alpha: nnx.State) -> jax.Array:
    """Mean entropy of ``softmax(α)`` over labels (nats); falls as α commits to ops."""
    probs = [jax.nn.softmax(a) for a in jax.tree_util.tree_leaves(alpha)]
    return jnp.mean(jnp.stack([-(p * jnp.log(p + 1e-12)).sum() for p in probs]))


class SearchStep(NamedTuple):
    """A bi-level search step: call it for α-then-weights, or use either half alone.

    ``step(state, train_batch, val_batch) -> (state, metrics)`` runs ``alpha_update`` on the
    val batch, then ``weight_update`` on the train batch with the new α (DARTS' order), and
    increments ``state.step``. Both halves are pure; ``jit()`` returns the whole step jitted
    with ``state`` donated.
    """

    alpha_update: Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]
    weight_update: Callable[[SearchState, Batch], tuple[SearchState, Metrics]]

    def __call__(self, state: SearchState, train_batch: Batch, val_batch: Batch) -> tuple[SearchState, Metrics]:
        state, a_metrics = self.alpha_update(state, train_batch, val_batch)
        state, w_metrics = self.weight_update(state, train_batch)
        metrics = {**w_metrics, **a_metrics, "alpha_entropy": alpha_entropy(state.alpha)}
        return state.replace(step=state.step + 1), metrics

    def jit(self, donate: bool = True) -> Callable[[SearchState, Batch, Batch], tuple[SearchState, Metrics]]:
        """The whole step under ``jax.jit`` (``state`` donated unless ``donate=False``), compiled
        with :func:`~dnas.state.step_compiler_options`."""
        return jax.jit(self.__call__, donate_argnums=(0,) if donate else (), compiler_options=step_compiler_options())
