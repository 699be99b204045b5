"""Discrete strategies: the (init, ask, tell) contract for every registered strategy,
search on an analytic objective with a known optimum (NNI's sanity tests), NSGA-II's
sorting against a brute-force count, and REINFORCE's baseline maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.space.base import Choice, JointSpace, SearchSpace
from dnas.space.spaces import DartsSpace, NB201Space
from dnas.search.strategies import STRATEGIES, Strategy
from dnas.search.strategies.grid import enumerate_space
from dnas.search.strategies.nsga2 import crowding_distance, non_dominated_rank

TOY = SearchSpace([Choice(f"l{i}", tuple(range(4))) for i in range(8)])  # 4^8 = 65,536
MIXED = SearchSpace([Choice("a", ("x", "y")), Choice("b", (1, 2, 3)), Choice("c", ("p", "q", "r", "s", "t"))])
HW = SearchSpace([Choice("hw/rows", (8, 16, 32)), Choice("hw/dataflow", ("os", "ws"))])  # what the sequential strategy searches second
W = jax.random.uniform(jax.random.key(42), (8, 4))  # separable objective: sum of per-label scores
OPTIMUM = np.asarray(jnp.argmax(W, axis=1))


def toy_fitness(archs):
    return W[jnp.arange(8), archs].sum(-1)


def _fitness(name, archs):
    f = archs.sum(-1).astype(jnp.float32)
    return jnp.stack([f, -archs[:, 0].astype(jnp.float32)], axis=1) if name == "nsga2" else f


def _strategy(name, space):
    kw = {"nsga2": dict(population=6, batch=4), "predictor": dict(initial=4, batch=2, candidates=16, predictor_kwargs=dict(steps=5)),
          "sequential": dict(network_evals=6, batch=2)}.get(name, {})
    return STRATEGIES[name](space, **kw)


def _spaces(name):
    """The contract's spaces; the sequential strategy searches joint (network + hardware) ones."""
    return (JointSpace(TOY, HW), JointSpace(MIXED, HW)) if name == "sequential" else (TOY, MIXED)


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_contract_every_strategy(name):
    """optax alias_test style: pure init/ask/tell, shapes, dtypes, validity, jit + vmap over keys."""
    for space in _spaces(name):
        s = _strategy(name, space)
        assert isinstance(s, Strategy)

        def run(key):
            state = s.init(key)

            def step(state, i):
                archs, state = s.ask(state, jax.random.fold_in(key, i))
                return s.tell(state, archs, _fitness(name, archs)), archs

            return jax.lax.scan(step, state, jnp.arange(6))[1]  # int32[6, P, n]

        keys = jax.random.split(jax.random.key(1), 3)
        out = jax.jit(jax.vmap(run))(keys)
        assert out.dtype == jnp.int32 and out.ndim == 4 and out.shape[0] == 3 and out.shape[-1] == len(space)
        flat = np.asarray(out).reshape(-1, len(space))
        assert all(space.is_valid(v) for v in flat)
        if name != "grid":  # grid ignores keys by design
            assert not np.array_equal(np.asarray(out[0]), np.asarray(out[1])), "different seeds should search differently"


@pytest.mark.parametrize("name", ["random", "rea", "predictor", "nsga2"])
def test_constrained_space_stays_valid(name):
    """DARTS cells keep two inputs per node: sample/mutate/crossover keep that, so do the strategies."""
    space = DartsSpace(nodes=2)  # 2 nodes: the constraint without a big program to compile
    s = _strategy(name, space)
    state, archs_all = s.init(jax.random.key(0)), []
    ask, tell = jax.jit(s.ask), jax.jit(s.tell)
    for i in range(4):
        archs, state = ask(state, jax.random.key(i))
        state = tell(state, archs, _fitness(name, archs))
        archs_all.append(np.asarray(archs))
    assert all(space.is_valid(v) for v in np.concatenate(archs_all))


def test_refusals_are_one_line_errors():
    with pytest.raises(DnasError, match="reinforce samples every label independently"):
        STRATEGIES["reinforce"](DartsSpace())
    with pytest.raises(DnasError, match=r"grid search .* 4\.29e\+09 configurations"):
        STRATEGIES["grid"](SearchSpace([Choice(f"l{i}", tuple(range(4))) for i in range(16)]))
    with pytest.raises(DnasError, match="batch"):
        STRATEGIES["rea"](TOY, population=4, batch=5)
    with pytest.raises(DnasError, match="unknown strategy .evo.; known"):
        STRATEGIES["evo"]


# NAS-Bench-201's R_EA (``mutate_arch_func``): a node uniformly among 3, then one of its
# incoming edges uniformly (node j has j), then a different op. Per edge, in the space's
# label order edge_1_0, edge_2_0, edge_2_1, edge_3_0, edge_3_1, edge_3_2:
NB201_EDGE_MUTATION = np.array([1 / 3, 1 / 6, 1 / 6, 1 / 9, 1 / 9, 1 / 9])


@pytest.mark.parametrize("path", ["space.mutate", "evolution.mutate", "rea.ask"])
def test_nb201_mutation_follows_the_benchmark(path):
    """Every route to a mutation on NB201 (the space's own, the strategies' loop-free one,
    and REA's batched ask) changes exactly one edge, with the benchmark's per-edge
    probabilities (not 1/6 each), to one of the 4 other ops uniformly."""
    from dnas.search.strategies.evolution import mutate

    space = NB201Space()
    parent = jnp.array([0, 1, 2, 3, 4, 0], jnp.int32)
    n = 36_000
    keys = jax.random.split(jax.random.key(7), n)
    if path == "space.mutate":
        children = jax.jit(jax.vmap(lambda k: space.mutate(k, parent)))(keys)
    elif path == "evolution.mutate":
        children = jax.jit(jax.vmap(lambda k: mutate(space, k, parent)))(keys)
    else:  # a full population of copies of the parent: every child is a mutation of it
        s = STRATEGIES["rea"](space, population=10, batch=10)
        full = s.init(keys[0])._replace(archs=jnp.tile(parent, (10, 1)), fitness=jnp.zeros(10), count=jnp.int32(10))
        children = jax.jit(jax.vmap(lambda k: s.ask(full, k)[0]))(keys[: n // 10]).reshape(n, 6)
    changed = np.asarray(children) != np.asarray(parent)
    assert (changed.sum(1) == 1).all(), "a mutation changes exactly one edge, to a different op"
    # 36,000 draws: a frequency's standard error is at most 0.0025, so 0.012 is ~5 sigma.
    np.testing.assert_allclose(changed.mean(0), NB201_EDGE_MUTATION, atol=0.012)
    new_ops = np.asarray(children)[changed[:, 0], 0]  # edge_1_0 (parent op 0): ~12,000 draws
    np.testing.assert_allclose(np.bincount(new_ops, minlength=5) / len(new_ops), [0, 0.25, 0.25, 0.25, 0.25], atol=0.02)


def test_bad_mutation_weights_are_one_line_errors():
    from dnas.search.strategies.evolution import mutate

    class Fractions(SearchSpace):
        def mutation_weights(self):
            return np.array([0.5, 0.25, 0.25])  # probabilities: the hook wants integers

    class Zeros(SearchSpace):
        def mutation_weights(self):
            return np.zeros(3, np.int64)

    with pytest.raises(DnasError, match=r"Fractions.mutation_weights\(\) must give one non-negative integer per group \(3\)"):
        mutate(Fractions(MIXED.choices), jax.random.key(0), jnp.zeros(3, jnp.int32))
    with pytest.raises(DnasError, match=r"Zeros.mutation_weights\(\) gives no group a positive weight"):
        Zeros(MIXED.choices).mutate(jax.random.key(0), jnp.zeros(3, jnp.int32))


def test_grid_enumerates_every_architecture_once_in_order():
    table = enumerate_space(NB201Space())
    assert table.shape == (5**6, 6)
    assert len(np.unique(table, axis=0)) == 5**6
    assert table[:2].tolist() == [[0] * 6, [0, 0, 0, 0, 0, 1]]
    s = STRATEGIES["grid"](NB201Space(), batch=7)
    state = s.init(jax.random.key(0))
    seen = []
    for _ in range(3):
        a, state = s.ask(state, jax.random.key(0))
        seen.append(np.asarray(a))
    np.testing.assert_array_equal(np.concatenate(seen), table[:21])


def _evals_to_optimum(s, key, budget):
    """1-based index of the first evaluation that hits the optimum (budget + 1 = never)."""
    state = s.init(key)
    P = jax.eval_shape(s.ask, state, key)[0].shape[0]

    def step(c, i):
        state, hit = c
        archs, state = s.ask(state, jax.random.fold_in(key, i + 1))
        state = s.tell(state, archs, toy_fitness(archs))
        found = jnp.all(archs == OPTIMUM, axis=-1)
        return (state, jnp.minimum(hit, jnp.where(found.any(), i * P + jnp.argmax(found) + 1, budget + 1))), None

    return jax.lax.scan(step, (state, jnp.int32(budget + 1)), jnp.arange(budget // P))[0][1]


def test_strategies_beat_random_search_on_a_separable_objective():
    """NNI-style sanity test: evolution, REINFORCE and the predictor find the unique optimum
    of a separable 4^8 objective within the budget for every seed; random search (65,536
    architectures, one optimum) does not, on average."""
    seeds = jax.random.split(jax.random.key(0), 4)
    found = {}
    for name, budget, kw in [
        ("random", 600, {}),
        ("rea", 600, dict(population=20, sample_size=5)),
        ("reinforce", 600, dict(learning_rate=0.1)),
        # the predictor refits every round: a smaller budget keeps the test fast
        ("predictor", 200, dict(initial=20, batch=5, candidates=200, history=64, predictor_kwargs=dict(steps=100, members=3))),
    ]:
        s = STRATEGIES[name](TOY, **kw)
        found[name] = np.asarray(jax.jit(jax.vmap(lambda k: _evals_to_optimum(s, k, budget)))(seeds))
        if name != "random":
            assert (found[name] <= budget).all(), (name, found[name])
            assert found[name].mean() < found["random"].mean(), (name, found)


def test_reinforce_baseline_and_policy_gradient():
    """The first reward is its own (bias-corrected) baseline, so it moves nothing; a later
    reward above the baseline raises the sampled architecture's probability."""
    s = STRATEGIES["reinforce"](MIXED, learning_rate=0.1)
    state = s.init(jax.random.key(0))
    arch = jnp.array([[1, 2, 3]], jnp.int32)
    after = s.tell(state, arch, jnp.array([5.0]))
    np.testing.assert_allclose(after.ema_num / after.ema_den, 5.0, rtol=1e-6)
    np.testing.assert_allclose(after.logits, state.logits, atol=1e-7)
    later = s.tell(after, arch, jnp.array([9.0]))
    assert float(later.ema_num / later.ema_den) == pytest.approx((0.9 * 0.1 * 5 + 0.1 * 9) / (0.9 * 0.1 + 0.1))
    lp = lambda st: jax.nn.log_softmax(jnp.where(jnp.isfinite(st.logits) & (jnp.arange(5) < MIXED.num_candidates[:, None]), st.logits, -jnp.inf))
    assert all(float(lp(later)[i, a]) > float(lp(after)[i, a]) for i, a in enumerate([1, 2, 3]))


def test_nsga2_sorting_matches_brute_force():
    objs = jax.random.normal(jax.random.key(3), (40, 2))
    rank = np.asarray(non_dominated_rank(objs, jnp.ones(40, bool)))
    o = np.asarray(objs)
    dom = (o[:, None] >= o[None]).all(-1) & (o[:, None] > o[None]).any(-1)
    remaining, level, expect = np.ones(40, bool), 0, np.zeros(40, int)
    while remaining.any():
        front = remaining & ~(dom & remaining[:, None]).any(0)
        expect[front], remaining, level = level, remaining & ~front, level + 1
    np.testing.assert_array_equal(rank, expect)
    crowd = np.asarray(crowding_distance(objs, jnp.asarray(rank)))
    for r in range(level):  # each front's extremes are infinitely crowded-out, the inner points finite
        idx = np.flatnonzero(rank == r)
        ends = {idx[np.argmin(o[idx, j])] for j in range(2)} | {idx[np.argmax(o[idx, j])] for j in range(2)}
        assert all(np.isinf(crowd[i]) for i in ends)
        if len(idx) > 4:
            assert np.isfinite(crowd[idx]).sum() >= len(idx) - 4
