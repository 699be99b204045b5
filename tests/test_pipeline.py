"""The input pipeline (dnas.data.pipeline, dnas.data.folder): folder sources, batches as a
pure function of (seed, step) for both loaders, per-process shards, clear errors, and a
folder of JPEGs through a 2-step retraining run."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dnas.core.errors import DnasError
from dnas.data import datasets as D
from dnas.data.folder import ImageFiles, check_folder
from dnas.data.pipeline import Stream, read_batch, step_batches
from dnas.run.parallel import host_rows

CLASSES = ("cat", "dog", "emu")


def make_folder(root, per_class=(4, 2), size=(30, 22)):
    """``root/{train,val}/<class>/*.jpg``: class k's images are mostly of grey level 40 + 80k,
    so labels can be checked from the pixels."""
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for k, c in enumerate(CLASSES):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                img = np.clip(40 + 80 * k + rng.integers(-10, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / c / f"{i}.jpg", quality=95)
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def test_folder_source_shapes_labels_and_transforms(folder):
    d = D.get_dataset("folder", str(folder), image_size=16, workers=2)
    assert d.num_classes == 3 and d.augment_on_host and d.image_shape == (16, 16, 3)
    assert d.train_x.shape == (12, 16, 16, 3) and d.test_x.shape == (6, 16, 16, 3)
    # Classes interleaved, so that a subset or DARTS' weight / α halves hold every class.
    assert d.train_y.tolist() == [0, 1, 2] * 4 and d.test_y.tolist() == [0, 1, 2, 0, 1, 2]
    assert d.train_x.paths[:2] == [str(folder / "train/cat/0.jpg"), str(folder / "train/dog/0.jpg")]
    x = np.asarray(d.test_x[np.array([5, 0])])  # a view, decoded by threads
    assert x.shape == (2, 16, 16, 3) and x.dtype == np.uint8
    assert abs(x[0].mean() - 200) < 12 and abs(x[1].mean() - 40) < 12  # labels follow the class folders
    assert np.array_equal(x[1], d.test_x[0])  # evaluation transform: deterministic
    a, b = d.train_x.load(3, np.random.default_rng(1)), d.train_x.load(3, np.random.default_rng(2))
    assert a.shape == (16, 16, 3) and not np.array_equal(a, b)  # training transform: random crop / flip
    assert np.array_equal(a, d.train_x.load(3, np.random.default_rng(1)))
    with pytest.raises(DnasError, match="image_size"):
        d.downsample(2)


def test_folder_errors_name_the_problem(tmp_path, folder):
    with pytest.raises(DnasError, match="does not exist"):
        D.check_dataset("folder", str(tmp_path / "missing"))
    with pytest.raises(DnasError, match="needs a path"):
        D.check_dataset("folder", None)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "train" / "a.jpg")
    with pytest.raises(DnasError, match="no class sub-folders"):
        check_folder(tmp_path / "flat")
    (folder / "val" / "cat" / "0.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(DnasError, match=r"cannot read image .*val/cat/0\.jpg"):
        check_folder(folder)
    (folder / "val" / "yak").mkdir()
    Image.new("RGB", (8, 8)).save(folder / "val" / "yak" / "a.jpg")
    with pytest.raises(DnasError, match="'yak', which train/ lacks"):
        check_folder(folder)


def _streams(d, seed_key=0, n_sub=None):
    key = jax.random.key(seed_key)
    n = len(d.train_y) if n_sub is None else n_sub
    sub = None if n_sub is None else np.arange(len(d.train_y))[-n_sub:]
    return [Stream(d.train_x, d.train_y, D.StepIndices(jax.random.fold_in(key, 1), n, 4), sub),
            Stream(d.train_x, d.train_y, D.StepIndices(jax.random.fold_in(key, 2), n, 4), sub)]


@pytest.mark.parametrize("source", ["folder", "arrays"])
def test_batches_are_a_function_of_seed_and_step_and_resume_identically(folder, source):
    d = D.get_dataset("folder", str(folder), image_size=12, workers=2) if source == "folder" else D.synthetic(24, 8, hw=6)
    streams = _streams(d)
    rows = slice(0, 4)
    full = list(step_batches(streams, rows, 0, 7, loader="memory", seed=3))  # crosses epochs (3 steps per epoch)
    grained = list(step_batches(streams, rows, 0, 7, loader="grain", seed=3, workers=3, prefetch=2))
    resumed = list(step_batches(_streams(d), rows, 4, 7, loader="grain", seed=3, workers=2, prefetch=1))  # a restart at step 4
    assert len(full) == len(grained) == 7 and len(resumed) == 3
    assert all(len(b) == 4 and b[0].shape[0] == 4 and b[1].dtype == np.int32 for b in full)
    for a, b in zip(full, grained):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    for a, b in zip(full[4:], resumed):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    # The indices are DARTS' batch_indices, so a memory run's batches did not change.
    assert np.array_equal(full[5][1], d.train_y[D.batch_indices(jax.random.fold_in(jax.random.key(0), 1), len(d.train_y), 4, 5)])
    if source == "folder":  # the host augmentation follows the seed
        other = read_batch(streams, 5, rows, seed=4)
        assert np.array_equal(other[1], full[5][1]) and not np.array_equal(other[0], full[5][0])


def test_process_shards_are_disjoint_cover_the_epoch_and_match_one_process(folder):
    d = D.get_dataset("folder", str(folder), image_size=8, workers=2)
    streams = _streams(d, n_sub=8)  # a subset, as DARTS' weight / α splits
    bs, spe = 4, 2
    for stream in streams:
        seen = [np.concatenate([stream.rows_at(step, host_rows(bs, p, 2)) for step in range(spe)]) for p in range(2)]
        assert not set(seen[0]) & set(seen[1])
        assert sorted(np.concatenate(seen)) == sorted(stream.subset)
    one = read_batch(streams, 1, slice(0, bs), seed=0)
    two = [read_batch(streams, 1, host_rows(bs, p, 2), seed=0) for p in range(2)]
    for i in range(len(one)):  # images decode and augment the same whichever process reads them
        assert np.array_equal(one[i], np.concatenate([two[0][i], two[1][i]]))


def test_pipeline_config_is_checked_before_a_run(tmp_path, folder, capsys):
    from dnas.cli.main import main

    work = tmp_path / "run"
    assert main(["train", "--config.dataset=folder", f"--config.data_dir={tmp_path / 'nope'}", "--workdir", str(work)]) == 2
    assert "does not exist" in capsys.readouterr().err and not work.exists()
    assert main(["train", "--config.dataset=folder", f"--config.data_dir={folder}", "--config.pipeline.loader=tf",
                 "--workdir", str(work)]) == 2
    assert "config.pipeline.loader must be one of memory, grain" in capsys.readouterr().err and not work.exists()


def test_a_run_saved_before_the_pipeline_existed_reads_in_the_loop():
    from dnas.run.config import from_json, to_json
    from dnas.run.train import train_defaults

    saved = json.loads(to_json(train_defaults()))
    saved["dataset"] = "digits"  # the defaults' cifar10 needs a folder
    del saved["pipeline"]
    assert from_json(json.dumps(saved)).pipeline.loader == "memory"


def test_a_folder_of_jpegs_trains_through_the_grain_loader(tmp_path, folder):
    from dnas.run.train import run_train, train_defaults

    c = train_defaults()
    c.genotype = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
    c.dataset, c.data_dir = "folder", str(folder)
    c.pipeline.loader, c.pipeline.image_size, c.pipeline.workers = "grain", 16, 2
    c.init_channels, c.layers, c.auxiliary, c.batch_size, c.max_steps, c.epochs = 4, 1, False, 4, 2, 1
    c.log_every_steps = c.checkpoint_every_steps = 1
    c.devices = 1  # one fake device: a smaller program to compile
    result = run_train(c, tmp_path / "run", log=lambda s: None)
    assert result["test_examples"] == 6 and result["steps"] == 2 and np.isfinite(result["test_loss"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["pipeline"]["loader"] == "grain"
