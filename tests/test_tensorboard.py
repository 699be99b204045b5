"""Optional TensorBoard event files beside the JSONL: what gets written, the resume purge,
and the one-line error when tensorboardX is missing."""

import struct
import sys

import pytest

from dnas.core.errors import DnasError
from dnas.run.metrics import MetricWriter
from dnas.run.tensorboard import scalars


def _events(path):
    """Events of a TFRecord event file (length, crc, payload, crc), parsed with tensorboardX's protos."""
    from tensorboardX.proto.event_pb2 import Event

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        e = Event()
        e.ParseFromString(data[i + 12 : i + 12 + n])
        out.append(e)
        i += 12 + n + 4
    return out


def _scalars(events):
    return {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value}


def test_scalars_flattens_records():
    rec = {"step": 4, "epoch": 1, "event": "epoch", "genotype": "G(...)", "ok": True, "epoch_val_acc": 0.5,
           "softmax": {"normal/edge_2_0": [0.25, 0.75]}}
    assert scalars(rec) == {"epoch_val_acc": 0.5, "softmax/normal/edge_2_0/0": 0.25, "softmax/normal/edge_2_0/1": 0.75}
    assert scalars(rec, list_names=["none", "skip"])["softmax/normal/edge_2_0/skip"] == 0.75


def test_missing_tensorboardx_is_one_line_naming_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes `import tensorboardX` fail
    with pytest.raises(DnasError) as e:
        MetricWriter(tmp_path / "metrics.jsonl", tensorboard_dir=tmp_path / "tb")
    assert "pip install tensorboardX" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "tb").exists()
    MetricWriter(tmp_path / "metrics.jsonl").write({"step": 1, "loss": 1.0})  # without TensorBoard: unaffected


def test_metric_writer_mirrors_scalars_and_purges_on_resume(tmp_path):
    pytest.importorskip("tensorboardX")
    tb = tmp_path / "tb"
    m = MetricWriter(tmp_path / "metrics.jsonl", tensorboard_dir=tb)
    a = MetricWriter(tmp_path / "alpha.jsonl", tensorboard_dir=tb, list_names=["none", "conv"])
    for s in (2, 4, 6):
        m.write({"step": s, "epoch": 1, "train_loss": 1.0 / s, "val_acc": s / 10})
    m.write({"step": 6, "event": "epoch", "epoch": 1, "epoch_val_acc": 0.7, "genotype": "G"})
    a.write({"step": 6, "epoch": 1, "softmax": {"normal/edge_2_0": [0.4, 0.6]}})
    m.close()
    a.close()
    files = {p.name.rsplit(".", 1)[-1]: p for p in tb.iterdir()}
    assert set(files) == {"metrics", "alpha"}  # one file per writer, told apart by name
    got = _scalars(_events(files["metrics"]))
    assert got[("train_loss", 4)] == pytest.approx(0.25)
    assert got[("val_acc", 6)] == pytest.approx(0.6)
    assert got[("epoch_val_acc", 6)] == pytest.approx(0.7)
    assert not any(tag in ("step", "epoch", "genotype") for tag, _ in got)
    assert _scalars(_events(files["alpha"]))[("softmax/normal/edge_2_0/conv", 6)] == pytest.approx(0.6)

    # Resume at step 4: the JSONL is cut and the new event file tells TensorBoard to drop steps >= 5.
    for p in files.values():
        p.unlink()
    m2 = MetricWriter(tmp_path / "metrics.jsonl", tensorboard_dir=tb)
    m2.truncate_after(4)
    m2.write({"step": 6, "train_loss": 0.1})
    m2.close()
    assert [r["step"] for r in m2.read()] == [2, 4, 6]
    (new,) = list(tb.iterdir())
    events = _events(new)
    starts = [e.step for e in events if e.HasField("session_log")]
    assert starts == [5]
    assert _scalars(events) == {("train_loss", 6): pytest.approx(0.1)}
