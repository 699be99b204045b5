"""The sandwich rule and in-place distillation (US-Nets, BigNAS, OFA) on the layer-wise
spaces: which paths a step trains, what the distilled paths learn from, and where the
config refuses it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from dnas.core.errors import DnasError
from dnas.run.search import candidate_sizes, check_search, search_defaults
from dnas.search.bilevel import make_search_step
from dnas.search.methods import apply_method
from dnas.search.plans import sandwich_paths, soft_cross_entropy
from dnas.search.state import alpha_dict, build_jitted, init_search_state
from dnas.core.types import Sampled
from dnas.space.relax import MASKED
from dnas.space.spaces.proxylessnas import ProxylessSpace

OPS = ("mb_k3_e3", "mb_k7_e6", "mb_k5_e3")  # the largest not last: the order must come from the sizes


def _setup(distill: bool, n_random: int = 2):
    # One stage of two blocks, the second of which may be zero (it has the shortcut); the
    # paper's stem width (32, no scaling) on 6x6 images keeps the program small.
    space = ProxylessSpace(layers=2, width_stages=(24,), n_cell_stages=(2,), stride_stages=(2,), ops=OPS)
    sizes = candidate_sizes(space, C=32, num_classes=3, image_shape=(6, 6, 3))
    net = build_jitted(lambda r: space.supernet(C=32, num_classes=3, in_channels=3, rngs=r), jax.random.key(0))
    graphdef, state = init_search_state(net, optax.sgd(0.1), optax.adam(1e-3), key=jax.random.key(1))
    step = make_search_step(graphdef, optax.sgd(0.1), optax.adam(1e-3), relax=None, update_alpha=False,
                            sandwich={"sizes": {l: jnp.asarray(v) for l, v in sizes.items()}, "n_random": n_random, "distill": distill})
    kx, ky = jax.random.split(jax.random.key(2))
    batch = (jax.random.normal(kx, (4, 6, 6, 3)), jax.random.randint(ky, (4,), 0, 3))
    return space, sizes, net, graphdef, state, step, batch


@pytest.fixture(scope="module")
def distilled():
    """One distilling sandwich step's setup and its compiled pass, shared by the tests."""
    setup = _setup(distill=True)
    return setup, jax.jit(setup[5].plan.passes[0].compute)


def test_sandwich_paths_take_the_largest_the_smallest_and_random_allowed_candidates():
    sizes = {"a": jnp.asarray([2.0, 9.0, 5.0, 0.0]), "b": jnp.asarray([3.0, 1.0, 7.0])}
    for s in range(5):
        p = sandwich_paths(jax.random.key(s), {"a": jnp.zeros(4), "b": jnp.zeros(3)}, sizes, 3)
        assert np.asarray(p["a"][:2]).tolist() == [1, 3] and np.asarray(p["b"][:2]).tolist() == [2, 1]
        assert p["a"].shape == (5,) and all(0 <= int(i) < 4 for i in p["a"][2:])
    # A few-shot sub-supernet's masked candidates are never taken, not even as the largest.
    masked = {"a": jnp.asarray([0.0, MASKED, 0.0, MASKED]), "b": jnp.zeros(3)}
    draws = np.concatenate([np.asarray(sandwich_paths(jax.random.key(s), masked, sizes, 4)["a"]) for s in range(6)])
    assert np.asarray(sandwich_paths(jax.random.key(0), masked, sizes, 0)["a"]).tolist() == [2, 0]
    assert set(draws.tolist()) == {0, 2}


def test_a_sandwich_step_trains_exactly_the_largest_smallest_and_random_paths(distilled):
    """Gradients reach the weights of the per-block largest candidate (most MACs, here
    mb_k7_e6), of the smallest (zero where the block may be skipped, else mb_k3_e3) and of
    the random paths' candidates, and no other candidate's."""
    (space, sizes, net, graphdef, state, step, batch), compute = distilled
    for l, v in sizes.items():
        c = space.choice(l).candidates
        assert c[int(np.argmax(v))] == "mb_k7_e6"
        assert c[int(np.argmin(v))] == ("zero" if "zero" in c else "mb_k3_e3")
    labels_of_block = {i: b.label for i, b in enumerate(net.blocks) if b.label is not None}
    for s in range(2):
        keys = {"weight": jax.random.key(10 + s)}
        r = compute(state, {"train": batch}, keys)
        paths = sandwich_paths(keys["weight"], alpha_dict(state.alpha), {l: jnp.asarray(v) for l, v in sizes.items()}, 2)
        blocks = r.w_grads["blocks"]
        for i, label in labels_of_block.items():
            cands = space.choice(label).candidates
            want = set(np.asarray(paths[label]).tolist())
            got = {j for j, c in enumerate(cands) if c != "zero"
                   and any(float(jnp.abs(g).sum()) > 0 for g in jax.tree_util.tree_leaves(blocks[i]["op"]["ops"][j]))}
            assert got == {j for j in want if cands[j] != "zero"}, (label, got, want)
            assert int(np.argmax(sizes[label])) in got


def _by_hand(graphdef, state, batch, paths):
    """The step's summed gradient computed path by path outside the plan:
    ``{distill: gradient}`` for distillation on and off."""
    x, y = batch
    k = {l: int(v.shape[-1]) for l, v in alpha_dict(state.alpha).items()}

    @jax.jit
    def path_grad(weights, stats, index, target):
        def loss(w):
            arch = {l: Sampled(i[None], jax.nn.one_hot(i, k[l])) for l, i in index.items()}
            model = nnx.merge(graphdef, state.alpha, w, stats, copy=True)
            logits = model(x, arch).logits
            return soft_cross_entropy(logits, target), (logits, nnx.state(model, nnx.BatchStat))

        return jax.grad(loss, has_aux=True)(weights)

    out = {}
    for distill in (True, False):
        stats, total, teacher = state.stats, None, None
        for i in range(int(next(iter(paths.values())).shape[0])):
            target = jax.nn.softmax(teacher) if (distill and i > 0) else jax.nn.one_hot(y, 3)
            g, (logits, stats) = path_grad(state.weights, stats, {l: p[i] for l, p in paths.items()}, target)
            teacher = logits if i == 0 else teacher
            total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
        out[distill] = total
    return out


def test_in_place_distillation_learns_from_the_largest_paths_predictions(distilled):
    """With distillation, the plan's gradient is the sum over paths of the label loss of the
    largest path and the soft loss against the largest path's softmax for the others
    (computed here path by path, BatchNorm statistics following each path in turn); the
    label-only gradient differs, so the check can fail."""
    (_, sizes, _, graphdef, state, step, batch), compute = distilled
    keys = {"weight": jax.random.key(7)}
    r = compute(state, {"train": batch}, keys)
    paths = sandwich_paths(keys["weight"], alpha_dict(state.alpha), {l: jnp.asarray(v) for l, v in sizes.items()}, 2)
    by_hand = _by_hand(graphdef, state, batch, paths)
    diff = lambda a, b: max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))  # noqa: E731
    scale = max(float(jnp.max(jnp.abs(u))) for u in jax.tree_util.tree_leaves(by_hand[True]))
    assert diff(r.w_grads, by_hand[True]) < 1e-4 * scale
    assert diff(r.w_grads, by_hand[False]) > 1e-2 * scale


def _config(space: str):
    c = search_defaults()
    apply_method(c, "spos")
    c.space, c.layers, c.dataset = space, 1, "digits"
    if space == "proxylessnas":
        c.space_kwargs.ops = list(OPS)
    c.sandwich.enabled = True
    return c


def test_the_sandwich_config_is_refused_where_it_does_not_apply():
    check_search(_config("proxylessnas"))
    with pytest.raises(DnasError, match="layer-wise space"):
        check_search(_config("nb201"))
    c = _config("proxylessnas")
    c.update_alpha = True
    with pytest.raises(DnasError, match="update_alpha=False"):
        check_search(c)
    c = _config("proxylessnas")
    c.fair_sampling = True
    with pytest.raises(DnasError, match="one of them"):
        check_search(c)
    c = _config("proxylessnas")
    c.sandwich.enabled, c.sandwich.distill = False, True
    with pytest.raises(DnasError, match="enabled=True"):
        check_search(c)
    c = _config("proxylessnas")
    c.sandwich.random_paths = -1
    with pytest.raises(DnasError, match="random_paths"):
        check_search(c)
