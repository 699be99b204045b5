"""Genotype derivation, JSON round-trips, published cells, NB201 strings."""

import json

import numpy as np
import pytest

from dnas import genotype as G
from dnas.errors import DnasError
from dnas.spaces import DARTS_OPS, DartsSpace, NB201Space


def _alpha_for(space, table):
    """Hand-set α: all edges flat except the (label -> op, strength) entries."""
    alpha = {l: np.zeros(len(space.ops), np.float32) for l in space.labels}
    for label, (op, value) in table.items():
        alpha[label][space.ops.index(op)] = value
    return alpha


def test_darts_rule_on_hand_set_alpha():
    space = DartsSpace(layers=8, steps=4)
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
    space = DartsSpace(layers=3, steps=2, shared=False)
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
