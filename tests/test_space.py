"""Search-space core: encodings, sizes, sampling, mutation, crossover, label sharing."""

import math

import jax
import numpy as np
import pytest

from dnas.core.errors import DnasError
from dnas.space.base import Choice, SearchSpace
from dnas.space.spaces import DARTS_OPS, DartsSpace, NB201Space


def test_encode_decode_roundtrip_and_names():
    sp = SearchSpace([Choice("s1/op", ("a", "b")), Choice("s2/k", (3, 5, 7)), Choice("s1/op", ("a", "b"))])
    assert len(sp) == 2  # the repeated label is one decision
    vec = sp.encode({"s1/op": "b", "s2/k": 7})
    assert vec.tolist() == [1, 2]
    assert sp.decode(vec) == {"s1/op": 1, "s2/k": 2}
    assert sp.names(vec) == {"s1/op": "b", "s2/k": 7}
    assert sp.encode({"s1/op": 0, "s2/k": 3}).tolist() == [0, 0]  # int values of int choices are values


def test_bad_architectures_raise_clear_errors():
    sp = SearchSpace([Choice("a", ("x", "y"))])
    with pytest.raises(DnasError, match="missing labels"):
        sp.encode({})
    with pytest.raises(DnasError, match="not a candidate"):
        sp.encode({"a": "z"})
    with pytest.raises(DnasError, match="shape"):
        sp.decode(np.array([0, 1]))
    with pytest.raises(DnasError, match="different candidates"):
        SearchSpace([Choice("a", ("x",)), Choice("a", ("x", "y"))])


def test_sizes_micro_vs_macro():
    k, o = len(DARTS_OPS), 14
    micro, macro = DartsSpace(layers=8, shared=True), DartsSpace(layers=8, shared=False)
    assert len(micro) == 2 * o and micro.num_configurations() == k ** (2 * o)
    assert len(macro) == 8 * o and macro.num_configurations() == k ** (o * 8)
    # Valid DARTS cells keep 2 inputs per node: prod_j C(j,2) * 7^2 per cell type, ~1e18 total.
    per_cell = math.prod(math.comb(n, 2) * 49 for n in range(2, 6))
    assert micro.size() == per_cell**2
    assert 1e17 < micro.size() < 1e19
    nb = NB201Space()
    assert nb.size() == 5**6 == 15625
    assert NB201Space(layers=5, shared=False).size() == 5 ** (6 * 15)


@pytest.mark.parametrize("space", [DartsSpace(layers=3), NB201Space(), DartsSpace(layers=3, shared=False)])
def test_sample_mutate_crossover_stay_valid(space):
    sample, mutate, cross = jax.jit(space.sample), jax.jit(space.mutate), jax.jit(space.crossover)
    seen = set()
    for i in range(20):
        a = sample(jax.random.key(i))
        b = sample(jax.random.key(1000 + i))
        assert space.is_valid(a) and space.is_valid(b)
        seen.add(tuple(np.asarray(a)))
        m = mutate(jax.random.key(2000 + i), a)
        assert space.is_valid(m)
        changed = np.flatnonzero(np.asarray(m) != np.asarray(a))
        assert changed.size > 0
        # Mutation touches exactly one group.
        groups_touched = {gi for gi, g in enumerate(space.groups) if set(g) & set(changed.tolist())}
        assert len(groups_touched) == 1
        c = cross(jax.random.key(3000 + i), a, b)
        assert space.is_valid(c)
        assert all(np.asarray(c)[j] in (np.asarray(a)[j], np.asarray(b)[j]) for j in range(len(space)))
    assert len(seen) == 20


def test_darts_sample_is_uniform_over_inputs():
    sp = DartsSpace(layers=3, nodes=2)
    counts = np.zeros(3)
    node3 = [sp.index(f"normal/edge_3_{i}") for i in range(3)]
    sample = jax.jit(jax.vmap(sp.sample))
    vecs = np.asarray(sample(jax.random.split(jax.random.key(0), 3000)))
    counts = (vecs[:, node3] != sp.none_index).sum(0)
    # Each of 3 inputs is kept with probability 2/3.
    np.testing.assert_allclose(counts / 3000, 2 / 3, atol=0.04)
