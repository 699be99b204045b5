"""Configs: validation names bad keys, overrides are typed, every experiment loads."""

import json
from pathlib import Path

import pytest

from dnas.config import apply_overrides, from_json, load_config, search_defaults, to_json, validate
from dnas.errors import DnasError

EXPERIMENTS = sorted(Path(__file__).resolve().parents[1].glob("experiments/*/config.py"))


def test_unknown_key_suggests_the_right_one():
    c = search_defaults()
    with c.unlocked():
        c.batchsize = 3
    with pytest.raises(DnasError, match="unknown config key 'batchsize'; did you mean 'batch_size'"):
        validate(c)
    with pytest.raises(DnasError, match="unknown config key 'lerning_rate'"):
        apply_overrides(search_defaults(), ["--config.lerning_rate=0.1"])


def test_missing_key_and_bad_values():
    c = search_defaults()
    del c["order"]
    with pytest.raises(DnasError, match="lacks key 'order'"):
        validate(c)
    with pytest.raises(DnasError, match="cannot read 'abc' as int"):
        apply_overrides(search_defaults(), ["--config.batch_size=abc"])
    with pytest.raises(DnasError, match="order must be 1 or 2"):
        validate(apply_overrides(search_defaults(), ["--config.order=3"]))
    with pytest.raises(DnasError, match="hypergradient must be one of"):
        validate(apply_overrides(search_defaults(), ["--config.hypergradient=hessian"]))
    with pytest.raises(DnasError, match="fuse_passes must be True or False"):
        from_json(json.dumps({**json.loads(to_json(search_defaults())), "fuse_passes": "yes"}))


def test_run_saved_before_a_key_existed_resumes_with_its_old_behaviour():
    saved = json.loads(to_json(search_defaults()))
    del saved["hypergradient"]  # config.json written before second order had a choice
    assert from_json(json.dumps(saved)).hypergradient == "exact"
    assert from_json(to_json(search_defaults())).hypergradient == "finite_difference"
    del saved["fuse_passes"]  # written when the step always ran its passes one after the other
    assert from_json(json.dumps(saved)).fuse_passes is False
    assert from_json(to_json(search_defaults())).fuse_passes is True


def test_overrides_are_typed():
    c = apply_overrides(search_defaults(), ["--config.batch_size=32", "--config.w_lr=0.1", "--config.shared=false", "--config.ops=none,skip_connect"])
    assert c.batch_size == 32 and c.w_lr == 0.1 and c.shared is False and c.ops == ["none", "skip_connect"]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.parent.name)
@pytest.mark.parametrize("arg", ["", "smoke"])
def test_experiment_configs_load_and_validate(path, arg):
    c = load_config(f"{path}:{arg}" if arg else str(path))
    assert c.kind in ("search", "train")
    assert (Path(path).read_text().count('"""') >= 2), "experiment configs document paper, command, expected result"


def test_missing_config_file():
    with pytest.raises(DnasError, match="does not exist"):
        load_config("experiments/nope/config.py")
