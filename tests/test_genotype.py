"""Genotype derivation, JSON round-trips, published cells, NB201 strings."""

import json

import numpy as np
import pytest

from dnas.space import genotype as G
from dnas.core.errors import DnasError
from dnas.space.spaces import DARTS_OPS, DartsSpace, NB201Space


def _alpha_for(space, table):
    """Hand-set α: all edges flat except the (label -> op, strength) entries."""
    alpha = {l: np.zeros(len(space.ops), np.float32) for l in space.labels}
    for label, (op, value) in table.items():
        alpha[label][space.ops.index(op)] = value
    return alpha


def test_darts_rule_on_hand_set_alpha():
    space = DartsSpace(layers=8, nodes=4)
    table = {
        "normal/edge_2_0": ("sep_conv_3x3", 3.0),
        "normal/edge_2_1": ("dil_conv_5x5", 2.0),
        "normal/edge_3_2": ("skip_connect", 3.0),
        "normal/edge_3_0": ("max_pool_3x3", 2.5),
        "normal/edge_3_1": ("none", 9.0),  # none never counts, however strong
        "normal/edge_4_3": ("sep_conv_5x5", 2.0),
        "normal/edge_4_1": ("avg_pool_3x3", 1.0),
        "normal/edge_5_4": ("dil_conv_3x3", 2.0),
        "normal/edge_5_0": ("sep_conv_3x3", 1.5),
        "reduce/edge_2_1": ("max_pool_3x3", 2.0),
        "reduce/edge_2_0": ("max_pool_3x3", 1.0),
    }
    geno = space.derive(_alpha_for(space, table))
    assert geno.normal.edges == (
        ("sep_conv_3x3", 0), ("dil_conv_5x5", 1),
        ("skip_connect", 2), ("max_pool_3x3", 0),
        ("sep_conv_5x5", 3), ("avg_pool_3x3", 1),
        ("dil_conv_3x3", 4), ("sep_conv_3x3", 0),
    )
    assert geno.normal.concat == (2, 3, 4, 5)
    assert geno.reduce.edges[:2] == (("max_pool_3x3", 1), ("max_pool_3x3", 0))


def test_nb201_rule_is_argmax_including_none():
    space = NB201Space()
    alpha = {l: np.zeros(5, np.float32) for l in space.labels}
    alpha["cell/edge_1_0"][3] = 1
    alpha["cell/edge_2_1"][0] = 1
    alpha["cell/edge_3_2"][4] = 1
    geno = space.derive(alpha)
    assert geno.arch_str() == "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~2|"
    vec = space.genotype_to_vec(geno)
    assert space.derive({l: np.eye(5)[v] for l, v in zip(space.labels, vec)}) == geno


def test_macro_derive_gives_one_cell_per_layer():
    space = DartsSpace(layers=3, nodes=2, shared=False)
    alpha = {l: np.random.default_rng(0).normal(size=len(DARTS_OPS)) for l in space.labels}
    geno = space.derive(alpha)
    assert isinstance(geno, G.MacroGenotype) and len(geno.cells) == 3
    assert G.from_json(json.loads(json.dumps(geno.to_json()))) == geno


def test_json_roundtrip_and_published(tmp_path):
    for name in G.published_names():
        geno = G.get(name)
        path = tmp_path / f"{name}.json"
        G.save(geno, path)
        assert G.load(path) == geno
    assert {"DARTS_V1", "DARTS_V2", "PC_DARTS", "GDAS_V1", "ENAS", "NASNet", "AmoebaNet"} <= set(G.published_names())
    v2 = G.get("DARTS_V2")
    assert v2.normal.edges[-1] == ("dil_conv_3x3", 2) and v2.reduce.concat == (2, 3, 4, 5)


def test_genotype_to_vec_roundtrip_through_derive():
    space = DartsSpace(layers=8)
    geno = G.get("DARTS_V2")
    vec = space.genotype_to_vec(geno)
    assert space.is_valid(vec)
    alpha = {l: np.zeros(len(space.ops)) for l in space.labels}
    for prefix, cell in (("normal", geno.normal), ("reduce", geno.reduce)):
        for e, (op, inp) in enumerate(cell.edges):
            # Published cells list each node's stronger edge first.
            alpha[f"{prefix}/edge_{2 + e // 2}_{inp}"][space.ops.index(op)] = 5.0 - e % 2
    assert space.derive(alpha) == geno


def test_nb201_arch_str_roundtrip():
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    assert G.NB201Genotype.from_arch_str(s).arch_str() == s
    assert G.get(s).arch_str() == s


@pytest.mark.parametrize(
    "obj,msg",
    [
        ({"schema": "dnas.genotype/1", "kind": "darts", "normal": [["sep_conv_9x9", 0], ["skip_connect", 1]], "normal_concat": [2], "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]}, "unknown op 'sep_conv_9x9'"),
        ({"schema": "dnas.genotype/1", "kind": "darts", "normal": [["skip_connect", 5], ["skip_connect", 1]], "normal_concat": [2], "reduce": [["skip_connect", 0], ["skip_connect", 1]], "reduce_concat": [2]}, "reads state 5"),
        ({"schema": "dnas.genotype/9", "kind": "darts"}, "schema"),
        ({"schema": "dnas.genotype/1", "kind": "darts", "normal": []}, "lacks the key"),
        ({"schema": "dnas.genotype/1", "kind": "nb201", "arch_str": "|conv~x|"}, "malformed NB201"),
    ],
)
def test_malformed_json_names_the_problem(obj, msg):
    with pytest.raises(DnasError, match=msg):
        G.from_json(obj)


def test_load_missing_and_corrupt(tmp_path):
    with pytest.raises(DnasError, match="does not exist"):
        G.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DnasError, match="not valid JSON"):
        G.load(tmp_path / "bad.json")


def test_darts_rule_ranks_edges_by_softmax_then_masks_none():
    """DARTS ranks a node's inputs by softmax(α) with 'none' masked afterwards, so a strong
    'none' weakens its edge: raw logits would rank edge 4_0 (4.0) above 4_2 (2.0)."""
    space = DartsSpace(layers=8, nodes=4)
    table = {"normal/edge_4_0": ("sep_conv_5x5", 4.0), "normal/edge_4_2": ("avg_pool_3x3", 2.0), "normal/edge_4_3": ("dil_conv_3x3", 1.9)}
    alpha = _alpha_for(space, table)
    alpha["normal/edge_4_0"][space.ops.index("none")] = 6.0
    node4 = space.derive(alpha).normal.edges[4:6]
    assert node4 == (("avg_pool_3x3", 2), ("dil_conv_3x3", 3))
    raw_choice = sorted(range(4), key=lambda i: -max(v for k, v in enumerate(alpha[f"normal/edge_4_{i}"]) if space.ops[k] != "none"))[:2]
    assert raw_choice[0] == 0  # what a raw-α rule would have kept


def test_genotype_with_two_ops_from_one_input_is_refused_not_truncated():
    """ENAS/NASNet/AmoebaNet cells take two ops from the same state into a node; the DARTS
    space has one op per (node, input), so converting must fail, not drop an edge."""
    space = DartsSpace(layers=8, nodes=5)
    assert G.get("ENAS").normal.steps == 5
    with pytest.raises(DnasError, match="two ops from state"):
        space.genotype_to_vec(G.get("ENAS"))
    space = DartsSpace(layers=8)
    assert space.is_valid(space.genotype_to_vec(G.get("DARTS_V1")))


def test_keep_one_input_per_node_derives_builds_and_roundtrips():
    from flax import nnx

    from dnas.space.nets import build_eval_network

    space = DartsSpace(layers=3, nodes=3, keep=1)
    alpha = {l: np.random.default_rng(1).normal(size=len(space.ops)) for l in space.labels}
    geno = space.derive(alpha)
    assert geno.normal.per_node == 1 and len(geno.normal.edges) == 3
    assert G.from_json(json.loads(json.dumps(geno.to_json()))) == geno
    vec = space.genotype_to_vec(geno)
    assert space.is_valid(vec) and space.size() == ((2 * 7) * (3 * 7) * (4 * 7)) ** 2
    net = build_eval_network(geno, "cifar10", 4, 3, 10, auxiliary=False, rngs=nnx.Rngs(0))
    assert net(np.zeros((1, 8, 8, 3), np.float32)).logits.shape == (1, 10)
    with pytest.raises(DnasError, match="keep must be 1 or 2"):
        DartsSpace(keep=3)


def test_every_genotype_kind_names_a_registered_space_and_draws():
    from dnas.space.base import SPACES

    for kind in G.GENOTYPES:
        assert G.GENOTYPES[kind].space in SPACES, kind
    for name in G.published_names():
        dots = G.get(name).dot_graphs()
        assert dots and all(d.startswith("digraph") for d in dots.values())
