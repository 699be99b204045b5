"""Malformed input, tried as a new user would (issue 31): every parser and loader answers
with one DnasError line naming the file or field, or succeeds; never another exception,
never a file written before validation, never a run's files overwritten.

The first half pins each hole the fuzzing pass found (a regular test each); the second half
is property-based (hypothesis, bounded examples, no network is ever compiled), and what it
shrank to became the regular tests above it. The CLI is called in-process (``main``) only
where its glue is the subject; ``--jax-cache ''`` keeps it off the suite's cache settings.
"""

from __future__ import annotations

import json
import os
import string
import sys
import threading
import time
import types
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dnas.cli.predictor import floats as _floats, read_csv as _read_csv, unique_rows, vectors as _vectors
from dnas.cli.main import interrupted_message, main
from dnas.core import checkpoint as ckpt_mod
from dnas.core.checkpoint import Checkpointer
from dnas.core.errors import DnasError
from dnas.core.imports import import_file
from dnas.core.io import check_output_file, read_csv, read_json
from dnas.estimate.nb201_table import load_table, table_row
from dnas.hardware.loaders import load_fbnet_csv, load_yaml_lut
from dnas.hardware.lut import LatencyTable
from dnas.report.show import show
from dnas.run.config import apply_overrides, from_json, load_config, read_config, to_json, validate
from dnas.run.driver import NonFiniteLoss, StepLoop, prepare_workdir, run_files
from dnas.run.search import default_search_config, run_search
from dnas.space import genotype as G
from dnas.space.genotype import NB201_OPS
from dnas.space.spaces import NB201Space

CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
LATIN1 = "arch_str,cifar10_test_200ep\n|caf\xe9~0|,1\n".encode("latin-1")  # a spreadsheet's export
# 40 examples per property keeps the file under ~30 s on 2 cores; DNAS_FUZZ_EXAMPLES=500 for a deeper local pass.
FUZZ = settings(max_examples=int(os.environ.get("DNAS_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def one_line(e: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be one line (what the CLI prints)."""
    msg = str(e.value)
    assert "\n" not in msg and msg, msg
    return msg


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to prove nothing was written or changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- the 11 tracebacks


@pytest.mark.parametrize("name,text", [("c.json", '{"epochs": 1}'), ("c.yaml", "epochs: 1\n")])
def test_a_config_that_is_not_python_is_one_line(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    with pytest.raises(DnasError) as e:
        load_config(str(tmp_path / name))
    assert "is not a Python file" in one_line(e) and name in str(e.value)
    with pytest.raises(DnasError):
        import_file(tmp_path / name)


def test_non_utf8_csvs_name_the_file_and_encoding(tmp_path):
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(LATIN1)
    for call in (lambda: load_table(str(bad)), lambda: table_row(str(bad), CELL), lambda: _read_csv(str(bad), ["arch_str"]),
                 lambda: load_fbnet_csv(bad), lambda: LatencyTable.load(bad), lambda: load_yaml_lut(bad)):
        with pytest.raises(DnasError) as e:
            call()
        assert "is not UTF-8" in one_line(e) and str(bad) in str(e.value)
    with pytest.raises(DnasError):
        show(CELL, tmp_path / "pictures", table=str(bad))
    assert not (tmp_path / "pictures").exists()  # refused before the first picture


def test_a_utf8_bom_is_read_as_text(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffarch_str,x\na,1\n".encode("utf-8"))
    assert read_csv(p) == (["arch_str", "x"], [["a", "1"]])


def test_workdir_naming_a_file_is_refused(tmp_path):
    f = tmp_path / "afile"
    f.write_text("mine")
    assert main(["search", "--workdir", str(f), "--jax-cache", ""]) == 2
    assert f.read_text() == "mine"


def test_show_of_a_run_with_invalid_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(DnasError) as e:
        show(str(tmp_path), tmp_path / "out")
    assert "not valid JSON" in one_line(e) and "config.json" in str(e.value)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(DnasError):
        show(str(tmp_path), tmp_path / "out")


@pytest.mark.parametrize("argv,words", [
    (["--chunk", "0"], "--chunk must be >= 1"), (["--chunk", "-3"], "--chunk must be >= 1"),
    (["--out", "no/such/folder/a.csv"], "does not exist"), (["--batch-size", "-1"], "--batch-size"),
    (["--table", "missing.csv"], "does not exist"), (["--table", "t.csv", "--archs", "1"], "--archs >= 2"),
])
def test_eval_refuses_bad_arguments_before_any_work(tmp_path, capsys, argv, words, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The run does not exist: a refusal that names the argument came before the run was read.
    assert main(["eval", str(tmp_path / "no-run"), "--archs", "3", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_check_output_file(tmp_path):
    assert check_output_file(tmp_path / "a.csv") == tmp_path / "a.csv"
    for bad in (tmp_path, tmp_path / "missing" / "a.csv"):
        with pytest.raises(DnasError):
            check_output_file(bad)
    (tmp_path / "f").write_text("")
    with pytest.raises(DnasError):
        check_output_file(tmp_path / "f" / "a.csv")


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # the closed-loop noise must not leak
def test_a_corrupt_checkpoint_is_one_line_and_silences_abandoned_reads(tmp_path, capsys):
    ck = Checkpointer(tmp_path / "checkpoints")
    ck.save(1, {"w": jnp.arange(4096, dtype=jnp.float32), "v": jnp.ones(300)})
    ck.close()
    for f in (tmp_path / "checkpoints" / "1").rglob("*"):
        if f.is_file() and f.parent.name == "d":  # the array data, not the metadata
            f.write_bytes(b"\x00garbage" * 10)
    ck = Checkpointer(tmp_path / "checkpoints")
    try:
        with pytest.raises(DnasError) as e:
            ck.restore_fields(1, {"w": jnp.zeros(4096), "v": jnp.zeros(300)})
    finally:
        ck.close()
    time.sleep(0.5)  # the abandoned reads land now, while this test's unraisable hook is watching
    assert "unreadable" in one_line(e)
    # Reads still in flight when orbax closed its loop report "Event loop is closed" later
    # (the filterwarnings mark fails the test if one reaches pytest): that error, and only
    # that one, is dropped.
    assert getattr(sys.unraisablehook, "_dnas", False) and getattr(threading.excepthook, "_dnas", False)
    capsys.readouterr()
    sys.unraisablehook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
    threading.excepthook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
    assert capsys.readouterr().err == ""
    assert not ckpt_mod._is_closed_loop_noise(RuntimeError("something else"))


# ---------------------------------------------------------------- silently accepted


@pytest.mark.parametrize("arch,words", [
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 nodes"),
    (CELL + "+|none~0|none~1|none~2|none~3|", "3 nodes"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "reads node 0 twice"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|", "each of nodes 0..1 once"),
    (CELL.replace("skip_connect", "sep_conv_3x3"), "NAS-Bench-201's 5 ops"),
    (CELL.replace("skip_connect", "skip_conect"), "did you mean 'skip_connect'"),
    ("|nor_conv_3x3~0~1|+|a~0|b~1|+|c~0|d~1|e~2|", "malformed"),
])
def test_nb201_strings_that_are_not_nb201_cells(arch, words):
    with pytest.raises(DnasError) as e:
        G.get(arch)
    assert words in one_line(e)
    assert str(e.value).count(",") < 10  # the 5 NB201 ops, not every registered op


def test_nb201_cell_edges_are_read_in_any_order():
    swapped = CELL.replace("|nor_conv_3x3~0|nor_conv_3x3~1|+|skip", "|nor_conv_3x3~1|nor_conv_3x3~0|+|skip")
    assert G.get(swapped).arch_str() == CELL
    # A saved run of an NB201 space with other ops still reads back (ops are the space's).
    other = {"kind": "nb201", "arch_str": CELL.replace("skip_connect", "sep_conv_3x3")}
    assert G.from_json(other).nodes[2][0] == ("sep_conv_3x3", 0)


def test_latency_csv_repeats():
    vecs = np.array([[0, 1], [0, 1], [1, 1]])
    with pytest.raises(DnasError) as e:
        unique_rows(vecs, np.array([1.0, 2.0, 3.0]), ["a", "a", "b"], "lat.csv", "arch")
    assert "rows 1 and 2" in one_line(e) and "different values" in str(e.value)
    v, lat, names = unique_rows(vecs, np.array([1.0, 1.0, 3.0]), ["a", "a", "b"], "lat.csv", "arch")
    assert v.tolist() == [[0, 1], [1, 1]] and lat.tolist() == [1.0, 3.0] and names == ["a", "b"]


def test_nb201_table_missing_or_non_numeric_column(tmp_path):
    t = tmp_path / "t.csv"
    t.write_text("arch_str,cifar10_val_12ep\n" + CELL + ",1\n")
    with pytest.raises(DnasError) as e:
        load_table(str(t))
    assert "lacks column" in one_line(e)
    t.write_text("arch_str,cifar10_val_12ep,cifar10_test_200ep,cifar10_valid_12ep_time_s\n" + CELL + ",1,abc,2\n")
    with pytest.raises(DnasError) as e:
        load_table(str(t))
    assert "not a number" in one_line(e)


def test_more_archs_than_the_space_holds():
    with pytest.raises(DnasError) as e:
        NB201Space().distinct_samples(15626, None)
    assert "15625" in one_line(e)


@pytest.mark.parametrize("override", [
    "--config.epochs=1e23", "--config.epochs=100000000000000000000000", "--config.w_lr=nan", "--config.w_lr=-1",
    "--config.grad_clip=inf", "--config.max_steps=-3", "--config.batch_size=1.5", "--config.epochs=True", "--config.seed=1e3",
    "--config.val_every_epochs=0", "--config.eval_val_batches=-1",
])
def test_absurd_config_values_are_refused(override):
    with pytest.raises(DnasError) as e:
        validate(apply_overrides(default_search_config(), [override]))
    assert override.split("=")[0][len("--"):] in one_line(e)


def test_a_saved_config_with_wrong_types_is_refused(tmp_path):
    raw = json.loads(to_json(default_search_config()))
    for key, value in (("epochs", "abc"), ("w_lr", None), ("space_kwargs", 3), ("imports", "x.py"), ("update_alpha", 1)):
        (tmp_path / "config.json").write_text(json.dumps({**raw, key: value}))
        with pytest.raises(DnasError) as e:
            read_config(tmp_path / "config.json")
        assert f"config.{key}" in one_line(e) and "config.json" in str(e.value)


# ---------------------------------------------------------------- nothing lost


def _config_less_run(root: Path) -> Path:
    run = root / "run"
    (run / "checkpoints" / "6").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 6, "train_loss": 1.0}\n')
    (run / "alpha.jsonl").write_text('{"epoch": 1}\n')
    (run / "genotype.json").write_text(json.dumps(G.get(CELL).to_json()))
    return run


def test_a_run_without_config_json_is_never_overwritten(tmp_path, capsys):
    run = _config_less_run(tmp_path)
    before = tree(run)
    assert run_files(run) == ["checkpoints", "metrics.jsonl", "alpha.jsonl", "genotype.json"]
    with pytest.raises(DnasError) as e:
        prepare_workdir(run, default_search_config())
    assert "no config.json" in one_line(e) and "move" not in str(e.value)
    # Plain `dnas search --workdir RUN` (the default config) and with a --config alike.
    assert main(["search", "--workdir", str(run), "--jax-cache", ""]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert tree(run) == before and not (run / ".lock").exists()


def test_a_data_error_leaves_no_directory_behind(tmp_path):
    """The corrected command must not be refused as "a run with a different config"."""
    c = default_search_config()
    c.batch_size = 100000  # more than the data: found when the data is loaded
    with pytest.raises(DnasError) as e:
        run_search(c, tmp_path / "w", log=lambda m: None)
    assert "larger than" in one_line(e) and not (tmp_path / "w").exists()
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    for n in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mnist / n).write_bytes(b"\x00\x00\x08\x03garbage")  # an IDX header promising data that is not there
    c = validate(apply_overrides(default_search_config(), ["--config.dataset=mnist", f"--config.data_dir={mnist}"]))
    (tmp_path / "w").mkdir()
    with pytest.raises(DnasError):
        run_search(c, tmp_path / "w", log=lambda m: None)
    assert list((tmp_path / "w").iterdir()) == []  # a folder the user made stays, empty
    good = default_search_config()
    assert prepare_workdir(tmp_path / "w", good) is good  # the corrected config is accepted


# ---------------------------------------------------------------- wrong words


def test_nan_with_no_checkpoint_says_so(tmp_path):
    class NoCheckpoints:
        def latest_step(self):
            return None

    stop = types.SimpleNamespace(signal=None, started=True, check_not_started=lambda *a: None)
    cfg = ml_collections.ConfigDict({"log_every_steps": 1, "checkpoint_every_steps": 10})
    loop = StepLoop(tmp_path, "search", NoCheckpoints(), stop, 10, 5, cfg)
    loop.steps(0)
    loop.done = 2
    with pytest.raises(NonFiniteLoss) as e:
        loop._tick(None, {"train_loss": float("nan")})
    assert "no checkpoint was written yet" in one_line(e) and "last finite" not in str(e.value)
    loop.progress.close()


def test_interrupt_words_per_command():
    assert "before the run started" not in interrupted_message("eval")
    assert "resumes" in interrupted_message("search") and "resumes" in interrupted_message("train")


def test_show_of_a_missing_run_directory(tmp_path):
    with pytest.raises(DnasError) as e:
        show(str(tmp_path / "runs" / "gone"))
    assert "does not exist" in one_line(e) and "neither a published" not in str(e.value)


# ---------------------------------------------------------------- property-based

ARCH_ALPHABET = st.sampled_from(["|", "+", "~", "0", "1", "2", "3", "-1", *NB201_OPS, "sep_conv_3x3", "x", " ", "\x00"])


def _mutated_cell(data: st.DataObject) -> str:
    parts = list(CELL)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(parts)))
        if data.draw(st.booleans()) and i < len(parts):
            del parts[i]
        else:
            parts.insert(i, data.draw(ARCH_ALPHABET))
    return "".join(parts)


@FUZZ
@given(st.data())
def test_fuzz_genotype_strings(data):
    text = data.draw(st.one_of(st.text(max_size=60), st.builds(lambda d: _mutated_cell(d), st.just(data))))
    try:
        g = G.get(text)
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:  # accepted: a real cell whose string reads back to itself
        event("accepted")
        assert G.get(str(g)) == g


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)


@FUZZ
@given(st.one_of(JSON, st.fixed_dictionaries({"kind": st.sampled_from(["darts", "nb201", "nb201_macro", "x"])}, optional={
    "arch_str": st.one_of(st.text(max_size=20), st.just(CELL)), "cells": JSON, "normal": JSON, "reduce": JSON, "schema": JSON})))
def test_fuzz_genotype_json(obj):
    try:
        G.from_json(obj)
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:
        event("accepted")


SCHEMA = default_search_config()
VALUES = st.one_of(st.sampled_from(["0", "-1", "1e23", "nan", "inf", "True", "abc", "[1, 2]", "{}", "", "3", "0.5", "none,skip"]),
                   st.text(alphabet=string.ascii_letters + string.digits + ".,-[]", max_size=8))


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([*SCHEMA.keys(), "space_kwargs.nodes", "relax_kwargs.tau", "lr", "nope.x"]), VALUES), max_size=3))
def test_fuzz_overrides(tmp_path_factory, pairs):
    overrides = [f"--config.{k}={v}" for k, v in pairs if k not in ("imports", "data_dir")]  # no paths: nothing to import
    cwd, old = tmp_path_factory.mktemp("cwd"), os.getcwd()
    os.chdir(cwd)
    try:
        c = validate(apply_overrides(default_search_config(), overrides))
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:
        event("accepted")
        assert json.loads(to_json(from_json(to_json(c)))) == json.loads(to_json(c))  # what is accepted also resumes
    finally:
        os.chdir(old)
    assert list(cwd.iterdir()) == []  # validation writes nothing


@FUZZ
@given(st.data())
def test_fuzz_saved_config_json(tmp_path_factory, data):
    raw = json.loads(to_json(SCHEMA))
    key = data.draw(st.sampled_from(sorted(raw) + ["extra"]))
    value = data.draw(JSON)
    raw[key] = value
    if data.draw(st.booleans()):
        raw.pop(data.draw(st.sampled_from(sorted(raw))))
    path = tmp_path_factory.mktemp("saved") / "config.json"
    text = json.dumps(raw)
    path.write_bytes(data.draw(st.sampled_from([text.encode(), text[: len(text) // 2].encode(), text.encode("utf-16")])))
    try:
        read_config(path)
    except DnasError as e:
        assert "\n" not in str(e) and "config" in str(e)
        event("clean error")
    else:
        event("accepted")


@FUZZ
@given(st.binary(max_size=200) | st.builds(lambda o: json.dumps(o).encode(), JSON) | st.builds(
    lambda e: json.dumps({"device": "d", "backend": "b", "dtype": "f", "batch_size": 1, "entries": e}).encode(), JSON))
def test_fuzz_lut_json(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("lut") / "lut.json"
    p.write_bytes(raw)
    try:
        LatencyTable.load(p)
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:
        event("accepted")


@FUZZ
@given(st.binary(max_size=200) | st.builds(lambda o: json.dumps(o).encode(), JSON))  # JSON is YAML
def test_fuzz_lut_yaml(tmp_path_factory, raw):
    p = tmp_path_factory.mktemp("lut") / "lut.yaml"
    p.write_bytes(raw)
    try:
        load_yaml_lut(p)
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:
        event("accepted")


CSV_CELL = st.one_of(st.just(CELL), st.sampled_from(["1.5", "abc", "nan", "", "-inf", '"q,uote"', "1e400"]), st.text(max_size=6))
TABLE_HEADER = ["arch_str", "cifar10_val_12ep", "cifar10_test_200ep", "cifar10_valid_12ep_time_s"]


def _csv_bytes(data: st.DataObject) -> bytes:
    header = data.draw(st.one_of(st.just(TABLE_HEADER), st.lists(st.sampled_from(TABLE_HEADER + ["x", "lat"]), max_size=5)))
    rows = data.draw(st.lists(st.lists(CSV_CELL, min_size=max(len(header) - 1, 0), max_size=len(header) + 1), max_size=4))
    text = "\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n"
    return data.draw(st.sampled_from([text.encode(), text.encode("utf-16"), text.encode("latin-1", "replace") + b"\xff", b"\x00" + text.encode()]))


@FUZZ
@given(st.data())
def test_fuzz_nb201_tables(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("table") / "t.csv"
    p.write_bytes(_csv_bytes(data))
    with pytest.raises(DnasError) as e:  # never accepted: the whole table has 15,625 rows
        load_table(str(p))
    assert "\n" not in str(e.value) and str(p) in str(e.value)
    event("clean error")


@FUZZ
@given(st.data())
def test_fuzz_latency_csvs(tmp_path_factory, data):
    p = tmp_path_factory.mktemp("lat") / "lat.csv"
    p.write_bytes(_csv_bytes(data))
    space = NB201Space()
    try:
        cols = _read_csv(str(p), ["arch_str", "cifar10_val_12ep"])
        vecs = _vectors(cols["arch_str"], space.arch_str_to_vec, str(p), "arch_str")
        lat = _floats(cols["cifar10_val_12ep"], str(p), "cifar10_val_12ep")
        vecs, lat, _ = unique_rows(vecs, lat, cols["arch_str"], str(p), "arch_str")
    except DnasError as e:
        assert "\n" not in str(e)
        event("clean error")
    else:
        event("accepted")
        assert len(np.unique(vecs, axis=0)) == len(vecs) and np.isfinite(lat).all()


RUN_FILE_NAMES = ("config.json", "genotype.json", "alpha.jsonl", "metrics.jsonl", "summary.json")


def _run_dir(root: Path) -> Path:
    """A finished NB201 search's files, written by hand (no search is run)."""
    run = root / "run"
    run.mkdir()
    c = default_search_config()
    c.space = "nb201"
    with c.unlocked():
        c.space_kwargs = ml_collections.ConfigDict({})
    (run / "config.json").write_text(to_json(c))
    (run / "genotype.json").write_text(json.dumps(G.get(CELL).to_json()))
    soft = {f"cell/edge_{j}_{i}": [0.2] * 5 for j in range(1, 4) for i in range(j)}
    (run / "alpha.jsonl").write_text(json.dumps({"epoch": 1, "softmax": soft}) + "\n")
    (run / "metrics.jsonl").write_text("".join(json.dumps({"event": "epoch", "epoch": e, "step": 8 * e, "epoch_val_acc": 0.1 * e,
                                                             "param_free_ops": {"cell": 2}, "epoch_alpha_entropy": 1.6}) + "\n" for e in (1, 2)))
    return run


DAMAGE = st.sampled_from(["delete", "empty", "truncate", "garbage", "latin1", "folder", "json-list", "other-record"])


@settings(max_examples=int(os.environ.get("DNAS_FUZZ_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(RUN_FILE_NAMES), DAMAGE), min_size=1, max_size=2))
def test_fuzz_damaged_run_directories(tmp_path_factory, monkeypatch, damage):
    """``dnas show`` and ``dnas config`` of a run with files missing or damaged: one line or
    success, and the run's own files are never changed."""
    monkeypatch.setattr("dnas.report.show.plot_metrics", lambda *a, **k: [])  # matplotlib is not the subject
    monkeypatch.setattr("dnas.report.show.plot_alpha", lambda *a, **k: [])
    run = _run_dir(tmp_path_factory.mktemp("rd"))
    for name, how in damage:
        p = run / name
        raw = p.read_bytes() if p.is_file() else b""
        if p.is_dir():
            continue
        p.unlink(missing_ok=True)
        if how == "empty":
            p.write_bytes(b"")
        elif how == "truncate":
            p.write_bytes(raw[: len(raw) // 2])
        elif how == "garbage":
            p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
        elif how == "latin1":
            p.write_bytes(raw + "caf\xe9".encode("latin-1"))
        elif how == "folder":
            p.mkdir()
        elif how == "json-list":
            p.write_text("[1, 2]\n")
        elif how == "other-record":  # valid JSON lines of the wrong shape
            p.write_text('{"epoch": "x", "softmax": [1], "event": "epoch", "param_free_ops": 3, "kind": "train", '
                         '"pareto": [1, {"hardware": 2, "acc": 0.5}], "hypervolume": "x"}\n')
    before = tree(run)
    for call in (lambda: show(str(run), run.parent / "out"), lambda: read_config(run / "config.json"),
                 lambda: read_json(run / "genotype.json")):
        try:
            call()
        except DnasError as e:
            assert "\n" not in str(e)
            event("clean error")
        else:
            event("accepted")
    assert tree(run) == before


# ---------------------------------------------------------------- the second hour


def test_show_understands_a_train_run(tmp_path, monkeypatch):
    from dnas.run.train import train_defaults

    monkeypatch.setattr("dnas.report.show.plot_metrics", lambda *a, **k: [])
    run = tmp_path / "train-run"
    run.mkdir()
    c = train_defaults()
    c.genotype = CELL
    (run / "config.json").write_text(to_json(c))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 5, "event": "epoch", "epoch": 1, "epoch_test_acc": 0.5}) + "\n")
    lines = show(str(run), tmp_path / "out")
    assert "not finished" in lines[0] and "dnas train --workdir" in lines[0] and CELL in lines[1]
    (run / "result.json").write_text(json.dumps({"test_acc": 0.9375, "test_loss": 0.25}))
    lines = show(str(run), tmp_path / "out")
    assert "test_acc 0.9375" in lines[0]
    # A finished DARTS retraining (the README's `dnas train --genotype RUN`): its config names
    # no space to build α tables from (once a traceback).
    searched = tmp_path / "search-run"
    searched.mkdir()
    (searched / "genotype.json").write_text(json.dumps(G.get("DARTS_V2").to_json()))
    c.genotype, c.dataset = str(searched), "digits"
    (run / "config.json").write_text(to_json(c))
    (run / "genotype.json").write_text(json.dumps(G.get("DARTS_V2").to_json()))
    assert any("sep_conv_3x3" in l for l in show(str(run), tmp_path / "out"))


def test_multitrial_pareto_title_counts_every_run(tmp_path):
    from dnas.report.plots import multitrial_pareto_data

    config = {"kind": "multitrial", "runs": 4, "strategy": "rea", "report_metric": "acc", "valid_metric": "acc"}
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"run": 0, "eval": e, "acc": 90.0 + e, "lat_ms_x": 1.0 + e}) + "\n" for e in range(3)))
    data = multitrial_pareto_data(tmp_path, config)
    assert data is not None and "1 logged run of 4" in data.title


def test_registry_lookups_say_did_you_mean():
    from dnas.search.strategies import STRATEGIES
    from dnas.space.base import SPACES

    for reg, typo, meant in ((SPACES, "nb210", "nb201"), (STRATEGIES, "raa", "rea")):
        with pytest.raises(DnasError) as e:
            reg[typo]
        assert f"did you mean {meant!r}" in one_line(e)
    with pytest.raises(DnasError):
        SPACES[["not", "hashable"]]


def test_list_covers_every_registry_and_the_experiments():
    from dnas.cli.registered import WHAT, registries

    lines = registries("all")
    for what in WHAT:
        assert f"{what}:" in lines
    assert "  rea  Aging evolution (Real et al. 2019), mutation by ``space.mutate``." in lines
    multitrial = next(i for i, l in enumerate(lines) if "nb201_multitrial/config.py" in l)
    assert "rs" in lines[multitrial + 1] and "reinforce" in lines[multitrial + 1]
    with pytest.raises(DnasError) as e:
        registries("strategy")
    assert "did you mean 'strategies'" in one_line(e)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = next(l for l in readme.splitlines() if l.startswith("dnas list "))
    assert shown.split("[", 1)[1].rstrip("]").split("|") == [*WHAT, "all"]  # the README names what dnas list takes


def test_eval_and_multitrial_tables_keep_json_last():
    from dnas.cli.eval import summary_table as eval_table
    from dnas.cli.search import multitrial_table
    from dnas.cli.zero_cost import summary_table as zero_cost_table

    ev = {"archs": 3, "seconds": 2.0, "archs_per_s": 1.5, "compiles": 1, "bn": "running", "val_examples": 64,
          "best_oneshot_acc": 0.5, "best": CELL, "oneshot_acc_mean": 0.25, "kendall_tau": 0.1, "spearman": 0.2,
          "kendall_tau_by_loss": 0.3, "spearman_by_loss": 0.4, "metric": "cifar10_test_200ep"}
    assert CELL in eval_table(ev)[1] and "Kendall τ 0.100" in eval_table(ev)[3]
    zc = {"archs": 5, "compiles": 1, "archs_per_s": 2.0, "compile_and_first_s": 1.0, "proxies": {"synflow": {"spearman": 0.5, "kendall": 0.4}}}
    assert "synflow" in zero_cost_table(zc)[2] and "0.5000" in zero_cost_table(zc)[2]
    mt = {"runs": 4, "strategy": "rea", "evals_mean": 10, "test_metric": "t", "test_acc_mean": 93.9, "test_acc_std": 0.3,
          "valid_metric": "v", "valid_acc_mean": 91.0, "valid_acc_std": 0.2, "most_chosen": CELL, "most_chosen_runs": 2}
    assert "4 runs of rea" in multitrial_table(mt)[0] and "93.900 ± 0.300" in multitrial_table(mt)[1]


def test_search_help_shows_the_defaults_that_run():
    from dnas.cli.common import keys_epilog

    epilog = keys_epilog("search", default_search_config)
    assert "dataset='digits'" in epilog and "init_channels=8" in epilog


def test_a_torn_metrics_line_does_not_stop_a_resume(tmp_path):
    from dnas.run.metrics import MetricWriter

    w = MetricWriter(tmp_path / "metrics.jsonl")
    for s in (1, 2, 3):
        w.write({"step": s, "train_loss": 1.0 / s})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "train_lo')  # killed mid-write
    w.truncate_after(2)
    assert [r["step"] for r in w.read()] == [1, 2]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(DnasError) as e:
        w.truncate_after(1)
    assert "line 2" in one_line(e) and (tmp_path / "metrics.jsonl").read_bytes() == before


PREDICTOR = st.fixed_dictionaries({"schema": st.just("dnas.latency_predictor"), "version": st.just(1)}, optional={
    "model": JSON, "features": JSON, "num_candidates": JSON, "ids": JSON, "source_mean": JSON, "source_std": JSON})


@FUZZ
@given(st.binary(max_size=120) | st.builds(lambda o: json.dumps(o).encode(), PREDICTOR | JSON))
def test_fuzz_other_hardware_files(tmp_path_factory, raw):
    """A latency predictor, an FBNet layer table and a ProxylessNAS network config, each
    from the same bytes: one line or success, whatever the bytes."""
    from dnas.hardware.predictor import LatencyPredictor
    from dnas.space.spaces.proxylessnas import ProxylessGenotype

    folder = tmp_path_factory.mktemp("hw")
    for name, load in (("p.json", LatencyPredictor.load), ("t.csv", load_fbnet_csv), ("n.json", ProxylessGenotype.from_net_config)):
        (folder / name).write_bytes(raw)
        try:
            load(folder / name)
        except DnasError as e:
            assert "\n" not in str(e)
            event("clean error")
        else:
            event("accepted")


FBNET_ROW = st.tuples(st.sampled_from(["s8", "pixel"]), st.sampled_from(["-1", "0", "1", "x", ""]), st.sampled_from(["0", "1", "-1", "2"]),
                      st.sampled_from(["k3_e1", "k5_e1", ""]), st.sampled_from(["0", "1.5", "2", "nan", "-1", "abc"]))


@FUZZ
@given(st.lists(FBNET_ROW, max_size=8))
def test_fuzz_fbnet_tables(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fbnet") / "t.csv"
    path.write_text("device,layer,op_idx,op,delta_ms_vs_k3_e1_same_layer\n" + "".join(",".join(r) + "\n" for r in rows))
    try:
        tables = load_fbnet_csv(path)
    except DnasError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        event("clean error")
    else:
        event("accepted")
        assert all(np.isfinite(t.delta).all() and (t.delta[:, 0] == 0).all() for t in tables.values())


def test_layerwise_alpha_tables_name_each_rows_ops():
    from dnas.report.show import alpha_table

    last = {"layer0/op": [0.7, 0.3], "layer1/op": [0.1, 0.2, 0.7]}
    rows = alpha_table(last, {"layer0/op": ["skip", "conv3"], "layer1/op": ["skip", "conv3", "conv5"]})
    assert "skip 0.700" in rows[0] and "conv5 0.700" in rows[1]  # not bare columns "0 1 2"
    shared = alpha_table({"a": [0.5, 0.5]}, {"a": ["none", "skip"]})
    assert shared[0].split()[1:] == ["none", "skip"]


def test_a_run_saved_before_a_key_existed_still_reads_back(tmp_path):
    """Every group the search schema has gained since runs were first written has a value
    for older runs (config.summary did not: a run from before it failed `dnas show`)."""
    raw = json.loads(to_json(default_search_config()))
    for group in ("summary", "latency"):
        old = {k: v for k, v in raw.items() if k != group}
        (tmp_path / "config.json").write_text(json.dumps(old))
        assert read_config(tmp_path / "config.json")[group].to_dict() == raw[group]
