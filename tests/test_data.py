"""Datasets: loaders, clear errors, the search split, deterministic resumable batches, augmentation."""

import gzip
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dnas.data import datasets as D
from dnas.core.errors import DnasError


def test_digits_and_synthetic():
    d = D.load_digits()
    assert d.train_x.shape == (1440, 8, 8, 1) and d.test_x.shape == (357, 8, 8, 1)
    assert d.num_classes == 10 and set(np.unique(d.train_y)) == set(range(10))
    s = D.synthetic(n_train=64, n_test=16, hw=8)
    assert s.train_x.shape == (64, 8, 8, 3)


def _write_idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_folder_roundtrip_and_errors(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 255, (10, 28, 28))
    labels = np.arange(10) % 10
    for split in ("train", "t10k"):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", imgs)
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", labels)
    d = D.load_idx_folder(tmp_path, "fashion_mnist")
    assert d.train_x.shape == (10, 28, 28, 1) and np.array_equal(d.train_y, labels)
    with pytest.raises(DnasError, match="does not exist.*apt-get install dataset-fashion-mnist"):
        D.get_dataset("fashion_mnist", str(tmp_path / "nope"))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"garbage!")
    with pytest.raises(DnasError, match="bad magic"):
        D.load_idx_folder(tmp_path)


def test_cifar_errors(tmp_path):
    with pytest.raises(DnasError, match="does not exist"):
        D.load_cifar10(tmp_path / "missing")
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    with pytest.raises(DnasError, match="data_batch_1.*missing"):
        D.load_cifar10(tmp_path)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"nope": 1}))
    with pytest.raises(DnasError, match="malformed"):
        D.load_cifar10(folder)
    with pytest.raises(DnasError, match="needs a path"):
        D.get_dataset("cifar10")
    with pytest.raises(DnasError, match="unknown dataset"):
        D.get_dataset("imagenet22k")


def test_real_cifar_subset(require_shared):
    d = D.load_cifar10(require_shared("images", "cifar10_subset", why="the CIFAR-10 loader is checked on real python-format batches"))
    assert d.train_x.shape[1:] == (32, 32, 3) and d.train_x.dtype == np.uint8 and len(d.train_y) > 5000


def test_real_mnist(require_shared):
    m = D.load_idx_folder(require_shared("images", "mnist", why="the IDX loader is checked on the real MNIST files"))
    assert m.train_x.shape == (60000, 28, 28, 1) and m.test_x.shape == (10000, 28, 28, 1) and m.flip is False


def test_search_split_is_darts_halves():
    w, a = D.search_split(10, 0.5)
    assert w.tolist() == [0, 1, 2, 3, 4] and a.tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(DnasError):
        D.search_split(10, 1.0)


def test_batches_are_pure_function_of_step():
    key = jax.random.key(3)
    epoch0 = np.concatenate([D.batch_indices(key, 10, 3, s) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no repeats inside an epoch
    assert np.array_equal(D.batch_indices(key, 10, 3, 4), D.batch_indices(key, 10, 3, 4))
    assert not np.array_equal(D.batch_indices(key, 10, 3, 0), D.batch_indices(key, 10, 3, 3))  # new epoch, new order
    with pytest.raises(DnasError, match="larger than"):
        D.batch_indices(key, 4, 8, 0)


def _windows(img, pad, fill):
    """Every crop a random crop of ``img`` padded by ``pad`` (with ``fill``) can give."""
    h, w, c = img.shape
    p = np.full((h + 2 * pad, w + 2 * pad, c), fill, np.float32)
    p[pad : pad + h, pad : pad + w] = img
    return [p[i : i + h, j : j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]


def test_augment_crops_are_windows_of_the_black_padded_image_and_flips_mirror():
    x = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6, 1) + 1
    fill = (-7.5,)  # a black pixel after normalisation
    crops = np.asarray(D.augment(jax.random.key(0), jnp.asarray(x), pad=2, flip=False, fill=fill))
    offsets = set()
    for b in range(4):
        wins = _windows(x[b], 2, fill[0])
        matches = [k for k, win in enumerate(wins) if np.array_equal(win, crops[b])]
        assert matches, "a crop is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1  # the offsets are random
    flipped = np.asarray(D.augment(jax.random.key(3), jnp.asarray(x), pad=0, flip=True))
    kinds = [("same" if np.array_equal(f, o) else "mirror" if np.array_equal(f, o[:, ::-1]) else "other") for f, o in zip(flipped, x)]
    assert "other" not in kinds
    many = np.asarray(D.augment(jax.random.key(4), jnp.asarray(np.repeat(x[:1], 64, 0)), pad=0, flip=True))
    n_mirrored = sum(np.array_equal(m, x[0, :, ::-1]) for m in many)
    assert 16 < n_mirrored < 48  # about half
    cut = np.asarray(D.augment(jax.random.key(0), jnp.asarray(x), pad=0, flip=False, cutout=4))
    assert np.all(np.sum(cut == 0, axis=(1, 2, 3)) >= 4)  # part of a 4x4 square is zeroed (x has no zeros)
    assert np.array_equal(np.asarray(D.augment(jax.random.key(1), jnp.asarray(x), pad=0, flip=False, cutout=0)), x)


def test_digit_datasets_are_not_flipped_and_pad_black():
    d = D.load_digits()
    assert d.flip is False
    np.testing.assert_allclose(D.normalize(jnp.zeros((1, 1, 1, 1)), d.mean, d.std).ravel(), d.pad_fill, rtol=1e-6)
    assert D.get_dataset("synthetic").flip is True
    n = D.normalize(jnp.full((1, 2, 2, 1), 255, jnp.uint8), (0.5,), (0.25,))
    np.testing.assert_allclose(n, 2.0)


def test_downsample_is_average_pooling_and_bad_factors_are_refused():
    import numpy as np
    import pytest

    from dnas.run.config import load_config
    from dnas.data.datasets import Dataset
    from dnas.core.errors import DnasError

    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    d = Dataset("t", x, np.zeros(2, np.int32), x[:1], np.zeros(1, np.int32), 2, (0.0,) * 3, (1.0,) * 3)
    small = d.downsample(2)
    assert small.image_shape == (2, 2, 3) and small.test_x.shape == (1, 2, 2, 3)
    np.testing.assert_allclose(small.train_x[1, 1, 0], x[1, 2:4, 0:2].mean((0, 1)))
    assert d.downsample(1) is d
    with pytest.raises(DnasError, match="divide"):
        d.downsample(3)
    with pytest.raises(DnasError, match="does not divide"):
        load_config("experiments/darts/config.py:smoke", ["--config.dataset=cifar10", "--config.data_dir=", "--config.downsample=3"])
    with pytest.raises(DnasError, match="positive integer"):
        load_config("experiments/darts/config.py:smoke", ["--config.downsample=0"])
