"""Configs: validation names bad keys and parts, overrides are typed, old runs migrate,
every experiment loads."""

import json
from pathlib import Path

import pytest

from dnas.run.config import apply_overrides, differing_keys, from_json, load_config, to_json, validate

from dnas.run.search import search_defaults

from dnas.run.train import train_defaults
from dnas.core.errors import DnasError

EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].glob("experiments/*/config.py"))


def _search():
    c = search_defaults()
    c.dataset = "digits"  # the defaults' CIFAR-10 needs a data folder
    return c


def test_unknown_key_suggests_the_right_one():
    c = _search()
    with c.unlocked():
        c.batchsize = 3
    with pytest.raises(DnasError, match="unknown config key 'batchsize'; did you mean 'batch_size'"):
        validate(c)
    with pytest.raises(DnasError, match="unknown config key 'lerning_rate'"):
        apply_overrides(_search(), ["--config.lerning_rate=0.1"])
    # Names from other codebases point at ours.
    with pytest.raises(DnasError, match="did you mean 'w_lr'"):
        apply_overrides(_search(), ["--config.learning_rate=0.1"])
    with pytest.raises(DnasError, match="did you mean 'space_kwargs.nodes'"):
        apply_overrides(_search(), ["--config.nodes=2"])


def test_missing_key_and_bad_values():
    c = _search()
    del c["order"]
    with pytest.raises(DnasError, match="lacks key 'order'"):
        validate(c)
    with pytest.raises(DnasError, match="cannot read 'abc' as int"):
        apply_overrides(_search(), ["--config.batch_size=abc"])
    with pytest.raises(DnasError, match="order must be 1 or 2"):
        validate(apply_overrides(_search(), ["--config.order=3"]))
    with pytest.raises(DnasError, match="hypergradient must be one of"):
        validate(apply_overrides(_search(), ["--config.hypergradient=hessian"]))
    with pytest.raises(DnasError, match="fuse_passes must be True or False"):
        from_json(json.dumps({**json.loads(to_json(_search())), "fuse_passes": "yes"}))


def test_named_parts_and_their_kwargs_are_checked():
    with pytest.raises(DnasError, match="unknown space 'nb202'; known spaces: .*darts.*nb201"):
        validate(apply_overrides(_search(), ["--config.space=nb202"]))
    with pytest.raises(DnasError, match="unknown relaxation 'gumbal'; known relaxations: .*gumbel"):
        validate(apply_overrides(_search(), ["--config.relax=gumbal"]))
    with pytest.raises(DnasError, match="relaxation 'gumbel' takes no argument 'temp'; it accepts: tau0, decay, tau_min, hard, tau"):
        validate(apply_overrides(_search(), ["--config.relax=gumbel", "--config.relax_kwargs.temp=2"]))
    with pytest.raises(DnasError, match="space 'nb201' takes no argument 'nodes'"):
        validate(apply_overrides(_search(), ["--config.space=nb201", "--config.space_kwargs.nodes=2"]))
    with pytest.raises(DnasError, match="unknown op 'sep_conv_9x9'"):
        validate(apply_overrides(_search(), ["--config.space_kwargs.ops=none,sep_conv_9x9"]))
    with pytest.raises(DnasError, match="unknown dataset 'cifar'; did you mean 'cifar10'"):
        validate(apply_overrides(_search(), ["--config.dataset=cifar"]))
    with pytest.raises(DnasError, match="does not exist; fix --config.data_dir"):
        validate(apply_overrides(_search(), ["--config.dataset=mnist", "--config.data_dir=/nonexistent/mnist"]))
    with pytest.raises(DnasError, match="neither a published genotype"):
        validate(apply_overrides(train_defaults(), ["--config.genotype=DARTS_V9", "--config.dataset=digits"]))


def test_space_is_nb201_with_its_own_ops_when_only_the_name_changes():
    """Switching the space does not carry DARTS' op list over (it used to search a space
    that was not NB201)."""
    from dnas.run.search import build_space

    c = validate(apply_overrides(_search(), ["--config.space=nb201", "--config.layers=1"]))
    space = build_space(c)
    assert space.ops == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert space.size() == 5**6


def test_overrides_are_typed_and_reach_into_kwargs():
    c = apply_overrides(
        _search(),
        ["--config.batch_size=32", "--config.w_lr=0.1", "--config.space_kwargs.shared=false",
         "--config.space_kwargs.ops=none,skip_connect", "--config.relax_kwargs.tau_max=10.0"],
    )
    assert c.batch_size == 32 and c.w_lr == 0.1
    assert c.space_kwargs.shared is False and c.space_kwargs.ops == ["none", "skip_connect"]
    assert c.relax_kwargs.tau_max == 10.0
    with pytest.raises(DnasError, match="is a value, not a group"):
        apply_overrides(_search(), ["--config.epochs.x=1"])


def test_run_saved_before_a_key_existed_resumes_with_its_old_behaviour():
    saved = json.loads(to_json(_search()))
    del saved["hypergradient"]  # config.json written before second order had a choice
    assert from_json(json.dumps(saved)).hypergradient == "exact"
    assert from_json(to_json(_search())).hypergradient == "finite_difference"
    del saved["fuse_passes"]  # written when the step always ran its passes one after the other
    assert from_json(json.dumps(saved)).fuse_passes is False
    assert from_json(to_json(_search())).fuse_passes is True


def test_run_saved_with_top_level_space_keys_migrates_to_space_kwargs():
    old = {k: v for k, v in json.loads(to_json(_search())).items() if k not in ("space_kwargs", "relax_kwargs", "imports", "update_alpha", "w_nesterov")}
    old.update(nodes=2, ops=["none", "skip_connect"], shared=True, cell_impl="scan", remat=True)
    c = from_json(json.dumps(old))
    assert c.space_kwargs.to_dict() == {"nodes": 2, "ops": ["none", "skip_connect"], "shared": True, "cell_impl": "scan", "remat": True}
    assert "nodes" not in c and c.update_alpha is True


def test_differing_keys_name_the_change():
    a, b = _search(), apply_overrides(_search(), ["--config.epochs=3", "--config.space_kwargs.nodes=2"])
    assert differing_keys(a, b) == ["epochs", "space_kwargs.nodes"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("arg", ["", "smoke"])
def test_experiment_configs_load_and_validate(path, arg, require_shared):
    from dnas.run.config import RUN_KINDS
    from dnas.core.imports import import_file

    raw = import_file(path).get_config(arg or None)
    overrides = []
    if raw.get("dataset") == "cifar10" and not raw.get("data_dir"):  # the paper settings point at the user's CIFAR-10
        cifar = require_shared("images", "cifar10_subset", why="the full config names CIFAR-10, which needs its folder to validate")
        overrides = [f"--config.data_dir={cifar}"]
    c = load_config(f"{path}:{arg}" if arg else str(path), overrides)
    assert c.kind in RUN_KINDS
    assert str(path.resolve()) in c.imports
    assert (Path(path).read_text().count('"""') >= 2), "experiment configs document paper, command, expected result"


def test_second_order_darts_config_loads():
    c = load_config("experiments/darts/config.py:second,smoke")
    assert c.order == 2 and c.hypergradient == "finite_difference" and c.layers == 3


def test_smoke_configs_contain_a_normal_cell():
    from dnas.run.search import build_space

    for name in ("darts", "nb201"):
        space = build_space(load_config(f"experiments/{name}/config.py:smoke"))
        assert any(l.startswith(("normal/", "cell")) for l in space.labels), space.labels[:4]


def test_bad_variant_and_missing_config_file_are_one_line():
    with pytest.raises(DnasError, match="does not exist"):
        load_config("experiments/nope/config.py")
    with pytest.raises(DnasError, match=r"experiments/darts/config.py:smok .*unknown config arg"):
        load_config("experiments/darts/config.py:smok")


def test_shared_data_is_looked_for_beside_the_repository(tmp_path):
    """``shared_data`` looks in ``<repo>/../shared/data`` (the repository root being this
    tests folder's parent), whether or not it exists here: a module move once made it
    count one level too few, so it looked inside the repository and every consumer quietly
    fell back to embedded data or skipped."""
    from dnas.data.datasets import shared_data
    from dnas.data.datasets import shared_data_root

    repo = Path(__file__).resolve().parents[1]
    assert shared_data_root() == repo.parent / "shared" / "data"
    assert shared_data("no", "such", "file") == ""  # absent parts: '' (callers fall back)


def test_require_shared_fails_in_ci_and_skips_elsewhere(require_shared, monkeypatch, tmp_path):
    """The tests' one way to the shared data (tests/conftest.py): the path when present; when
    absent a failure under CI=true (a silent skip would hide the real-data checks) and a
    skip naming the missing file, where it was looked for and why, elsewhere."""
    import re

    (tmp_path / "nb201").mkdir()
    (tmp_path / "nb201" / "t.csv").write_text("x\n")
    monkeypatch.setenv("DNAS_TEST_SHARED_DATA", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_shared("nb201", "t.csv") == str(tmp_path / "nb201" / "t.csv")
    with pytest.raises(pytest.fail.Exception, match=r"'nb201/missing.csv' is absent from .*: to check X; CI is set"):
        require_shared("nb201", "missing.csv", why="to check X")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"'nb201/missing.csv' is absent from " + re.escape(str(tmp_path)) + ": to check X$"):
        require_shared("nb201", "missing.csv", why="to check X")


# Each kind's keys as runs were first written, before any key of _ADDED_KEYS existed. A key
# added to a kind's defaults must also go into dnas.run.config._ADDED_KEYS with the value
# that reproduces what older runs did, or those runs no longer load ("config lacks key").
FIRST_SCHEMA = {
    "search": ["a_b1", "a_b2", "a_lr", "a_weight_decay", "augment", "batch_size", "checkpoint_every_steps", "data_dir", "dataset",
               "devices", "epochs", "grad_clip", "init_channels", "keep_checkpoints", "kind", "layers", "log_every_steps", "max_steps",
               "max_train_examples", "order", "relax", "seed", "space", "space_kwargs", "train_portion", "w_lr", "w_lr_min",
               "w_momentum", "w_weight_decay"],
    "train": ["auxiliary", "auxiliary_weight", "batch_size", "checkpoint_every_steps", "cutout", "data_dir", "dataset", "devices",
              "drop_path_prob", "epochs", "genotype", "grad_clip", "init_channels", "keep_checkpoints", "kind", "layers",
              "log_every_steps", "lr", "max_steps", "max_test_examples", "max_train_examples", "momentum", "seed", "valid_examples",
              "weight_decay"],
}


@pytest.mark.parametrize("kind", sorted(FIRST_SCHEMA))
def test_every_key_added_since_the_first_runs_has_a_migration_value(kind, tmp_path):
    """A run written with only the first schema's keys still reads back (every later key is
    filled with its migration value), and no key exists outside both lists."""
    from dnas.run.config import _ADDED_KEYS, RUN_KINDS, read_config, to_json

    d = json.loads(to_json(RUN_KINDS[kind].defaults()))
    unmigrated = sorted(set(d) - set(FIRST_SCHEMA[kind]) - set(_ADDED_KEYS[kind]))
    assert not unmigrated, f"keys {unmigrated} need a value in dnas.run.config._ADDED_KEYS (what runs written before them did)"
    old = tmp_path / "config.json"
    old.write_text(json.dumps({**{k: d[k] for k in FIRST_SCHEMA[kind]}, "dataset": "digits"}))
    assert sorted(read_config(old)) == sorted(d)


@pytest.mark.parametrize("variant", ["spos", "rea_combined"])
def test_fewshot_search_variants_take_the_supernet_run_from_the_argument(variant, require_shared):
    """``fewshot_nb201:spos=RUN`` / ``:rea_combined=RUN``: multi-trial configs over that
    supernet whose chosen cells the table reports (report_metric is not an estimator metric)."""
    require_shared("images", "cifar10_subset", why="the combined estimator's zero-cost batch comes from the CIFAR-10 subset")
    c = load_config(f"experiments/fewshot_nb201/config.py:{variant}=/runs/fs")
    kw = c.estimator_kwargs.to_dict()
    run_dir = kw["run_dir"] if variant == "spos" else kw["features"][0]["kwargs"]["run_dir"]
    assert c.kind == "multitrial" and run_dir == "/runs/fs" and c.report_metric == "cifar10_test_200ep"
    assert c.runs == 10 and c.max_evals == 100
