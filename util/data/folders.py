"""Image folders: a tree root/<class>/*.png|jpg|jpeg read with Pillow.

The only module of `util.data` that imports Pillow (tqdm too, as does
`download`); the package imports it when an image folder is first read, so
that unpickling a `Normalizer` on a Spark executor stays light.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from util.data.dataset import CIFAR10_CLASSES, DataError, Dataset
from util.data.decode import decode_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_PROGRESS_MIN = 5000  # image folders at least this large get a progress bar (on a tty)


def _visible(path: Path) -> list[Path]:
    """Entries of a directory in name order, without hidden ones (".DS_Store", ...)."""
    return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def class_folders(root: Path) -> list[str]:
    """Names of the visible sub-folders of `root`, in name order."""
    return [p.name for p in _visible(root) if p.is_dir()]


def class_order(names: Sequence[str]) -> list[str]:
    """The official CIFAR-10 order when the names are exactly its classes, else sorted."""
    return list(CIFAR10_CLASSES) if set(names) == set(CIFAR10_CLASSES) else sorted(names)


def list_image_folder(
    root: str | Path, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """The image files of a tree root/<class>/*.png|jpg|jpeg in load order, with labels.

    Returns ([(file, label)] class by class in `classes` order and by file name within a
    class, the classes); `classes` as in `load_image_folder`. DataError for a missing or
    empty folder or a file that is not an image.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected an image folder tree)")
    found = class_folders(root)
    for p in _visible(root):
        if not p.is_dir():
            log.warning("%s: not a class folder; ignored", p)
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/*.jpg|png)")
    if classes is None:
        classes = class_order(found)
    classes = list(classes)
    if sorted(classes) != sorted(found):
        raise DataError(
            f"{root}: class folders {found} do not match the expected classes {classes}"
        )
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        entries = _visible(root / name)
        if not entries:
            raise DataError(f"{root / name}: empty class folder")
        for p in entries:
            if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{p}: not an image file (expected {'/'.join(IMAGE_SUFFIXES)})")
            files.append((p, label))
    return files, classes


def load_image_folder(
    root: str | Path, classes: Sequence[str] | None = None, size: tuple[int, int] = (32, 32)
) -> Dataset:
    """Loads a tree root/<class>/*.png|jpg|jpeg with Pillow.

    Labels follow `classes` (which must name exactly the class folders); by
    default the folder names sorted, or the official CIFAR-10 order when the
    folders are exactly the ten CIFAR-10 classes. Files are read in sorted
    name order. Images must be `size` (width, height) pixels; modes L, LA, P,
    PA, RGBA, CMYK, YCbCr and 1 are converted to RGB (alpha is dropped, not
    composited). Returns X (N, 3, H, W) uint8, y (N,) int64.
    """
    root = Path(root)
    files, classes = list_image_folder(root, classes)
    w, h = size
    X = np.empty((len(files), 3, h, w), dtype=np.uint8)
    y = np.array([label for _, label in files], dtype=np.int64)
    small = len(files) < _PROGRESS_MIN or not sys.stderr.isatty()
    for i, (p, _) in enumerate(tqdm(files, desc=root.name, unit="img", disable=small)):
        X[i] = _read_image(p, size)
    log.info("%s: %d images in %d classes", root, len(y), len(classes))
    return Dataset(X, y, classes)


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One image as (3, H, W) uint8."""
    return decode_image(path, size)
