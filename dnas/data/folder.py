"""ImageNet-style folders of images (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``)
as random-access arrays that decode on demand.

SPOS, ProxylessNAS, FBNet and OFA search on ImageNet, which does not fit in memory: an
:class:`ImageFiles` is an array of ``N`` images ``uint8[N, S, S, 3]`` whose elements are
decoded with Pillow when read. Reading one element with a ``numpy.random.Generator`` gives
the training transform (Inception's random-resized crop, Szegedy et al. 2015, and a
horizontal flip); without one, the evaluation transform (shorter side resized to ``S /
0.875``, centre crop), as the ImageNet reference pipelines do. Indexing with a slice or an
integer array gives a view (nothing decoded); ``np.asarray(view)`` decodes it with a pool
of threads (Pillow releases the GIL while it decodes and resizes), so the evaluation code
that slices in-memory arrays reads a folder unchanged. Normalisation stays on the device.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dnas.core.errors import DnasError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
VERIFY_LIMIT = 20_000
"""Folders with at most this many images have every file's header read before a run starts;
larger ones an evenly spaced sample of this many (a file that fails to decode later stops
the run with one line naming it)."""


def list_split(root: str | os.PathLike, split: str, classes: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """The image files of ``root/split`` in a fixed order, classes interleaved: ``(paths,
    labels int32[N], classes)``.

    Args:
      root: the dataset folder.
      split: ``"train"`` or ``"val"``.
      classes: the class names to label by (the training split's); None: this split's own
        sub-folders, sorted.
    Raises:
      DnasError: a missing split folder, one without class sub-folders, an empty class, or
        a class the training split lacks.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise DnasError(f"dataset folder {str(Path(root))!r} has no {split}/ sub-folder; expected {split}/<class>/*.jpg (ImageNet layout)")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise DnasError(f"{str(folder)!r} holds no class sub-folders; expected {split}/<class>/*.jpg, one folder per class")
    classes = found if classes is None else classes
    extra = [c for c in found if c not in classes]
    if extra:
        raise DnasError(f"{str(folder)!r} has class {extra[0]!r}, which train/ lacks; both splits need the same class folders")
    index = {c: i for i, c in enumerate(classes)}
    keyed = []
    for c in found:
        files = sorted(str(p) for p in (folder / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DnasError(f"class folder {str(folder / c)!r} holds no {'/'.join(IMAGE_SUFFIXES)} images")
        keyed += [(j, index[c], f) for j, f in enumerate(files)]
    # Classes interleaved (each class' j-th file, then the (j+1)-th): the first n examples
    # (config.max_train_examples) and DARTS' contiguous weight / α halves then hold every
    # class, as they do in CIFAR's shuffled files, not the first and last half of the classes.
    keyed.sort(key=lambda t: (t[0], t[1]))
    return [f for _, _, f in keyed], np.asarray([k for _, k, _ in keyed], np.int32), classes


def check_folder(root: str | os.PathLike) -> None:
    """Refuses a dataset folder that cannot be read, before a run writes anything: missing
    splits or classes (:func:`list_split`) or an image whose header Pillow cannot read (all
    of them up to :data:`VERIFY_LIMIT`, else an evenly spaced sample)."""
    if not Path(root).is_dir():
        raise DnasError(f"dataset folder {str(root)!r} does not exist; fix --config.data_dir")
    paths, _, classes = list_split(root, "train")
    val_paths, _, _ = list_split(root, "val", classes)
    paths = paths + val_paths
    step = max(1, math.ceil(len(paths) / VERIFY_LIMIT))
    for p in paths[::step]:
        _open(p).close()


def _open(path: str) -> Image.Image:
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise DnasError(f"cannot read image {path!r} ({type(e).__name__}: {e}); remove or replace the file") from None


def _decode(path: str, size: int, rng: np.random.Generator | None, min_scale: float) -> np.ndarray:
    """One image as ``uint8[size, size, 3]``: the training transform with ``rng``, else the
    evaluation one."""
    img = _open(path)
    try:
        if rng is None:
            short = round(size / 0.875)
            img.draft("RGB", (short, short))  # JPEG: decode at a reduced DCT scale when much larger
        img = img.convert("RGB")
    except (OSError, ValueError) as e:
        raise DnasError(f"cannot decode image {path!r} ({type(e).__name__}: {e}); remove or replace the file") from None
    w, h = img.size
    if rng is None:
        scale = round(size / 0.875) / min(w, h)
        cw, ch = size / scale, size / scale  # the centre crop, in source pixels
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        return np.asarray(img.resize((size, size), Image.BILINEAR, box=box), np.uint8)
    box = _random_resized_box(rng, w, h, min_scale)
    out = img.resize((size, size), Image.BILINEAR, box=box)
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(out, np.uint8)


def _random_resized_box(rng: np.random.Generator, w: int, h: int, min_scale: float) -> tuple[float, float, float, float]:
    """Inception's crop (torchvision's ``RandomResizedCrop``): area in ``[min_scale, 1]`` of the
    image, aspect ratio log-uniform in ``[3/4, 4/3]``, 10 tries, then the centre crop."""
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = math.sqrt(target * ratio), math.sqrt(target / ratio)
        if cw <= w and ch <= h:
            x0, y0 = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            return (x0, y0, x0 + cw, y0 + ch)
    side = min(w, h)
    return ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)


class ImageFiles:
    """A random-access array of images ``uint8[N, size, size, 3]`` decoded from files on demand.

    Args:
      paths: the image files.
      size: the side of the square images it yields.
      workers: threads that decode when a view is turned into an array.
      min_scale: the smallest crop area (fraction of the image) of the training transform.
    """

    def __init__(self, paths: list[str], size: int, *, workers: int = 4, min_scale: float = 0.08, _index: np.ndarray | None = None):
        self.paths, self.size, self.workers, self.min_scale = paths, int(size), max(1, int(workers)), float(min_scale)
        self.index = np.arange(len(paths)) if _index is None else _index

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.index), self.size, self.size, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, key: Any) -> Any:
        """An integer: that image decoded (evaluation transform). A slice or integer array:
        a view of those images (decoded by ``np.asarray``)."""
        if isinstance(key, (int, np.integer)):
            return self.load(int(key))
        return ImageFiles(self.paths, self.size, workers=self.workers, min_scale=self.min_scale, _index=self.index[key])

    def load(self, i: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Image ``i`` of this view as ``uint8[size, size, 3]``: with ``rng`` the training
        transform (random-resized crop, flip with probability 1/2), else the evaluation one.

        Raises:
          DnasError: the file cannot be read or decoded (the message names it).
        """
        return _decode(self.paths[self.index[i]], self.size, rng, self.min_scale)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, np.uint8)
        if len(self):
            with concurrent.futures.ThreadPoolExecutor(min(self.workers, len(self))) as pool:
                for i, img in enumerate(pool.map(self.load, range(len(self)))):
                    out[i] = img
        return out if dtype is None else out.astype(dtype)
