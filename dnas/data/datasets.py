"""Datasets, the DARTS search split, normalisation, augmentation and resumable batching.

Every loader takes a path and fails with one clear message when files are missing or
malformed; nothing is downloaded. Images are NHWC ``uint8`` (or ``float32`` in [0, 1] for
digits/synthetic); :func:`normalize` maps them to zero mean, unit variance per channel.

Batches are a pure function of ``(key, step)`` (:func:`batch_indices`): epoch ``e`` is the
permutation ``permutation(fold_in(key, e))``, so a resumed run only needs the step counter
to continue with exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import gzip
import os
import pickle
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from dnas.core.errors import DnasError
from dnas.core.types import PRNGKey
from dnas.data.folder import IMAGENET_MEAN, IMAGENET_STD, ImageFiles, check_folder, list_split

FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
CIFAR10_MEAN = (0.49139968, 0.48215827, 0.44653124)
CIFAR10_STD = (0.24703233, 0.24348505, 0.26158768)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An in-memory image classification dataset (NHWC).

    Attributes:
      name: dataset name.
      train_x, train_y: training images ``[N, H, W, C]`` and int labels ``[N]``.
      test_x, test_y: test split.
      num_classes: number of classes.
      mean, std: per-channel statistics in [0, 1] pixel units, for :func:`normalize`.
      flip: whether a horizontal flip is a label-preserving augmentation (not for digits:
        a flipped 2, 3, 4, 5, 7 or 9 is another shape, i.e. label noise).
      augment_on_host: the training images are augmented where they are decoded
        (:class:`~dnas.data.folder.ImageFiles`: random-resized crop and flip), so a run
        skips its on-device crop and flip.

    ``train_x``/``test_x`` are ``np.ndarray`` or, for a folder of images, an
    :class:`~dnas.data.folder.ImageFiles` that decodes on demand.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool = True
    augment_on_host: bool = False

    @property
    def pad_fill(self) -> tuple[float, ...]:
        """The normalised value of a black pixel, ``-mean / std``: DARTS pads the raw image
        with zeros before normalising, so its crop pads black, not the mean colour."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])  # type: ignore[return-value]

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train``/``n_test`` examples (a cheap proxy / smoke setting)."""
        return dataclasses.replace(
            self,
            train_x=self.train_x[:n_train], train_y=self.train_y[:n_train],
            test_x=self.test_x[:n_test], test_y=self.test_y[:n_test],
        )


    def downsample(self, factor: int) -> "Dataset":
        """Images average-pooled by ``factor`` in height and width (the lower-resolution
        proxy of accuracy estimation; NAS-Bench-201's ImageNet16-120 is ImageNet at 16x16).
        ``factor=1`` returns the dataset unchanged; H and W must be divisible by it."""
        factor = int(factor)
        if factor == 1:
            return self
        if not isinstance(self.train_x, np.ndarray):
            raise DnasError(f"config.downsample applies to in-memory datasets; {self.name}'s images are decoded from files: set config.pipeline.image_size instead")
        h, w, _ = self.image_shape
        if factor < 1 or h % factor or w % factor:
            raise DnasError(f"config.downsample={factor} must be >= 1 and divide the {h}x{w} images of {self.name}")

        def pool(x: np.ndarray) -> np.ndarray:
            n, c = x.shape[0], x.shape[-1]
            y = x.astype(np.float32).reshape(n, h // factor, factor, w // factor, factor, c).mean((2, 4))
            return np.round(y).astype(np.uint8) if x.dtype == np.uint8 else y.astype(x.dtype)

        return dataclasses.replace(self, train_x=pool(self.train_x), test_x=pool(self.test_x))


def _stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    xf = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    return tuple(float(v) for v in xf.mean((0, 1, 2))), tuple(float(v) + 1e-6 for v in xf.std((0, 1, 2)))


def load_digits() -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, no files needed): 1,440 train / 357 test."""
    from sklearn.datasets import load_digits as _load

    d = _load()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    y = d.target.astype(np.int32)
    perm = np.random.default_rng(0).permutation(len(y))  # fixed split, not a global RNG
    x, y = x[perm], y[perm]
    n = 1440
    mean, std = _stats(x[:n])
    return Dataset("digits", x[:n], y[:n], x[n:], y[n:], 10, mean, std, flip=False)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DnasError(f"cannot read IDX file {str(path)!r}: {e}") from None
    if len(data) < 8 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DnasError(f"{str(path)!r} is not a uint8 IDX file (bad magic number); re-download it")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:  # a header cut short (np.frombuffer raised ValueError here)
        raise DnasError(f"{str(path)!r} is truncated inside its IDX header; re-download it")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DnasError(f"{str(path)!r} is truncated: header says {dims}, file holds {body.size} values")
    return body.reshape(dims)


def _find(folder: Path, prefix: str, kind: str) -> Path:
    hits = sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and kind in p.name)
    if not hits:
        raise DnasError(
            f"no {prefix}*{kind}* file in {str(folder)!r}; expected the standard gzipped IDX files "
            "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)"
        )
    return hits[0]


def load_idx_folder(path: str | os.PathLike, name: str = "mnist") -> Dataset:
    """MNIST or Fashion-MNIST from a folder of the standard (gzipped) IDX files."""
    folder = Path(path)
    if not folder.is_dir():
        hint = " (install it with: apt-get install dataset-fashion-mnist)" if "fashion" in name else ""
        raise DnasError(f"dataset folder {str(folder)!r} does not exist{hint}")
    tx = _read_idx(_find(folder, "train", "images"))
    ty = _read_idx(_find(folder, "train", "labels")).astype(np.int32)
    vx = _read_idx(_find(folder, "t10k", "images"))
    vy = _read_idx(_find(folder, "t10k", "labels")).astype(np.int32)
    if len(tx) != len(ty) or len(vx) != len(vy):
        raise DnasError(f"image and label counts differ in {str(folder)!r}")
    tx, vx = tx[..., None], vx[..., None]
    mean, std = _stats(tx)
    # Mirrored handwritten digits are other shapes (label noise); mirrored clothes are not.
    return Dataset(name, tx, ty, vx, vy, 10, mean, std, flip=name != "mnist")


def load_cifar10(path: str | os.PathLike) -> Dataset:
    """CIFAR-10 from a ``cifar-10-batches-py`` folder (or its parent)."""
    folder = Path(path)
    if folder.is_dir() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DnasError(f"CIFAR-10 folder {str(folder)!r} does not exist; point it at a cifar-10-batches-py folder")

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        f = folder / name
        if not f.is_file():
            raise DnasError(f"CIFAR-10 file {str(f)!r} is missing; expected data_batch_1..5 and test_batch")
        try:
            with open(f, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(d[b"labels"], np.int32)
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as e:
            raise DnasError(f"CIFAR-10 file {str(f)!r} is malformed ({e!r}); re-download it") from None
        return x, y

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    tx, ty = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    vx, vy = read("test_batch")
    return Dataset("cifar10", tx, ty, vx, vy, 10, CIFAR10_MEAN, CIFAR10_STD)


def synthetic(n_train: int = 512, n_test: int = 128, hw: int = 8, channels: int = 3, num_classes: int = 10, seed: int = 0) -> Dataset:
    """Learnable random data: one fixed template per class plus noise (for tests)."""
    rng = np.random.default_rng(seed)
    templates = rng.uniform(0, 1, (num_classes, hw, hw, channels)).astype(np.float32)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n).astype(np.int32)
        x = np.clip(templates[y] + 0.3 * rng.normal(size=(n, hw, hw, channels)), 0, 1).astype(np.float32)
        return x, y

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    mean, std = _stats(tx)
    return Dataset("synthetic", tx, ty, vx, vy, num_classes, mean, std)


def load_folder(path: str | os.PathLike, image_size: int = 224, workers: int = 4) -> Dataset:
    """An ImageNet-style folder (``train/<class>/*.jpg``, ``val/<class>/*.jpg``; ``val`` is
    the test split) whose images are decoded on demand to ``image_size`` squares
    (:class:`~dnas.data.folder.ImageFiles`), normalised with ImageNet's statistics."""
    tp, ty, classes = list_split(path, "train")
    vp, vy, _ = list_split(path, "val", classes)
    files = functools.partial(ImageFiles, size=image_size, workers=workers)
    return Dataset("folder", files(tp), ty, files(vp), vy, len(classes), IMAGENET_MEAN, IMAGENET_STD, augment_on_host=True)


DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "synthetic", "folder")

DATASET_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet": ((224, 224, 3), 1000),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "digits": ((8, 8, 1), 10),
    "synthetic": ((8, 8, 3), 10),
}
"""Dataset name -> ``((H, W, C), classes)`` as stored (before ``config.downsample``): what a
network for it looks like, known without loading the data (``dnas info``, validation,
restoring a supernet)."""


def input_shape(name: str, downsample: int = 1) -> tuple[tuple[int, int, int], int]:
    """``((H, W, C), classes)`` of dataset ``name`` after average-pooling by ``downsample``.

    Raises:
      DnasError: for a dataset without a known shape.
    """
    if name not in DATASET_SHAPES:
        raise DnasError(f"no known input shape for dataset {name!r}; known: {', '.join(DATASET_SHAPES)}")
    (h, w, c), classes = DATASET_SHAPES[name]
    k = max(1, int(downsample))
    return (h // k, w // k, c), classes


def check_dataset(name: str, path: str | None = None) -> None:
    """Refuses an unknown dataset or a missing data folder, without loading anything (so
    a run can be refused before its directory is written)."""
    if name not in DATASETS:
        close = difflib.get_close_matches(name, DATASETS, n=1)
        raise DnasError(f"unknown dataset {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f" known datasets: {', '.join(DATASETS)}")
    if name in ("mnist", "cifar10", "folder") and not path:
        raise DnasError(f"dataset {name!r} needs a path (config key data_dir / --config.data_dir=...)")
    if name == "folder":
        check_folder(path)  # type: ignore[arg-type]
        return
    folder = path or (FASHION_MNIST_SYSTEM_DIR if name == "fashion_mnist" else None)
    if folder and not Path(folder).is_dir():
        hint = " (install it with: apt-get install dataset-fashion-mnist)" if name == "fashion_mnist" else ""
        raise DnasError(f"dataset folder {str(folder)!r} does not exist{hint}; fix --config.data_dir")


def get_dataset(name: str, path: str | None = None, *, image_size: int = 224, workers: int = 4) -> Dataset:
    """Loads a dataset by name; ``path`` is required for mnist, cifar10 and folder.

    Fashion-MNIST defaults to ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist``). ``image_size`` and ``workers`` (decoding threads) apply to
    ``folder`` (:func:`load_folder`).
    """
    if name == "folder":
        if not path:
            raise DnasError("dataset 'folder' needs a path (config key data_dir / --config.data_dir=...)")
        return load_folder(path, image_size, workers)
    if name == "digits":
        return load_digits()
    if name == "synthetic":
        return synthetic()
    if name == "fashion_mnist":
        return load_idx_folder(path or FASHION_MNIST_SYSTEM_DIR, "fashion_mnist")
    if name in ("mnist", "cifar10"):
        if not path:
            raise DnasError(f"dataset {name!r} needs a path (config key data_dir / --config.data_dir=...)")
        return load_idx_folder(path, "mnist") if name == "mnist" else load_cifar10(path)
    close = difflib.get_close_matches(name, DATASETS, n=1) if isinstance(name, str) else []
    raise DnasError(f"unknown dataset {name!r}" + (f"; did you mean {close[0]!r}?" if close else "") + f" known datasets: {', '.join(DATASETS)}")


def search_split(n_train: int, portion: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """DARTS' split of the training set: first ``portion`` for weights, the rest for α."""
    split = int(np.floor(portion * n_train))
    if split <= 0 or split >= n_train:
        raise DnasError(f"train_portion={portion} leaves an empty weight or α split of {n_train} examples")
    idx = np.arange(n_train)
    return idx[:split], idx[split:]


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped)."""
    if batch_size > n:
        raise DnasError(f"batch_size {batch_size} is larger than the {n} examples available; lower it")
    return n // batch_size


class StepIndices:
    """``step -> indices`` (into ``range(n)``) of the batch at global ``step``, a pure function
    of ``(key, n, batch_size, step)``: epoch ``e`` is ``permutation(fold_in(key, e), n)``.

    Why a class: the permutation is O(n) and was drawn afresh for every step; this keeps the
    last few epochs' (thread-safe: input pipeline workers call it concurrently).
    """

    def __init__(self, key: PRNGKey, n: int, batch_size: int):
        self.key, self.n, self.batch_size = key, int(n), int(batch_size)
        self.steps_per_epoch = steps_per_epoch(self.n, self.batch_size)
        self._lock = threading.Lock()
        self._perms: dict[int, np.ndarray] = {}

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch ``epoch``, ``int[n]``."""
        with self._lock:
            perm = self._perms.get(epoch)
            if perm is None:
                perm = np.asarray(jax.random.permutation(jax.random.fold_in(self.key, epoch), self.n))
                if len(self._perms) >= 4:
                    self._perms.pop(min(self._perms))
                self._perms[epoch] = perm
            return perm

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(int(step), self.steps_per_epoch)
        return self.permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]


def batch_indices(key: PRNGKey, n: int, batch_size: int, step: int) -> np.ndarray:
    """Indices (into ``range(n)``) of the batch at global ``step``; a pure function of its args
    (:class:`StepIndices`, which keeps the permutation between steps)."""
    return StepIndices(key, n, batch_size)(step)


def normalize(x: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
    """uint8 or [0,1] float images -> per-channel standardised float32."""
    scale = 255.0 if x.dtype == jnp.uint8 else 1.0
    return (x.astype(jnp.float32) / scale - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def augment(
    key: PRNGKey, x: jax.Array, *, pad: int = 4, flip: bool = True, cutout: int = 0, fill: tuple[float, ...] | None = None
) -> jax.Array:
    """Standard CIFAR augmentation on a normalised batch ``f32[B, H, W, C]`` (jittable).

    Random crop after padding by ``pad`` with ``fill`` per channel (pass
    :attr:`Dataset.pad_fill`, a black pixel after normalisation, to pad as DARTS does; the
    default 0 is the mean colour), horizontal flip with probability 1/2 when ``flip``, and
    Cutout (DeVries & Taylor 2017) of a ``cutout`` x ``cutout`` square (0 disables) as
    used in DARTS retraining.
    """
    b, h, w, _ = x.shape
    k_crop, k_flip, k_cut = jax.random.split(key, 3)
    if pad:
        xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        if fill is not None:
            inside = jnp.pad(jnp.ones((1, h, w, 1), bool), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
            xp = jnp.where(inside, xp, jnp.asarray(fill, x.dtype))
        offs = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
        x = jax.vmap(lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1])))(xp, offs)
    if flip:
        do = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
        x = jnp.where(do, x[:, :, ::-1, :], x)
    if cutout:
        centre = jax.random.randint(k_cut, (b, 2), 0, jnp.array([h, w]))
        rows, cols = jnp.arange(h)[None, :, None], jnp.arange(w)[None, None, :]
        cy, cx = centre[:, 0, None, None], centre[:, 1, None, None]
        half = cutout // 2  # DARTS' Cutout: rows/cols [c - L/2, c + L/2), clipped at the border
        inside = (rows >= cy - half) & (rows < cy + half) & (cols >= cx - half) & (cols < cx + half)
        x = jnp.where(inside[..., None], 0.0, x)
    return x

def shared_data_root() -> Path:
    """``<repo>/../shared/data``, where this project's real test data lives (it may be absent).

    The repository root is three levels above this file (``dnas/data/datasets.py``); counting
    one level too few after a move once pointed inside the repository, where nothing is, and
    every consumer quietly fell back (tests/test_config.py checks the location)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def shared_data(*parts: str) -> str:
    """``<repo>/../shared/data/<parts>`` when that folder exists (this project's test data),
    else ''. Experiment configs use it for smoke runs and fall back to embedded data."""
    p = shared_data_root().joinpath(*parts)
    return str(p) if p.exists() else ""


def sample_batch(dataset: str, data_dir: str | None, batch_size: int, key: jax.Array) -> tuple[np.ndarray, np.ndarray, int]:
    """A random, normalised training batch ``(x f32[B,H,W,C], y int32[B])`` and the class
    count (the one batch zero-cost proxies score on).

    Raises:
      DnasError: for a batch size outside ``[1, training examples]``.
    """
    ds = get_dataset(dataset, data_dir)
    if not 1 <= batch_size <= len(ds.train_x):
        raise DnasError(f"--batch-size must be in [1, {len(ds.train_x)}] for {dataset}, got {batch_size}")
    idx = np.asarray(jax.random.choice(key, len(ds.train_x), (batch_size,), replace=False))
    return np.asarray(normalize(jnp.asarray(ds.train_x[idx]), ds.mean, ds.std)), ds.train_y[idx].astype(np.int32), ds.num_classes

