"""CIFAR-10 data: pickled batches and image folders -> uint8 arrays; split; normalisation.

Every loader returns a `Dataset` of raw pixels, X (N, 3, 32, 32) uint8 and
y (N,) int64, plus the class names in label order. Preprocessing to floats is
a separate, explicit step (`Normalizer`) whose statistics come from the
training data only and travel with a saved model.

Sources understood by `load()`:
- the official CIFAR-10 python batches (`data_batch_1..5`, `test_batch`,
  `batches.meta`, as extracted from cifar-10-python.tar.gz);
- a directory with `train/` and `test/` image-folder trees;
- a plain image-folder tree `root/<class>/*.png|jpg|jpeg` (a "train" split only).

Bad input (corrupt, truncated or foreign files, wrong sizes, out-of-range
labels, empty folders) raises `DataError` naming the file and the problem.
No file is ever dropped silently; hidden entries (names starting with ".",
e.g. `.DS_Store`) are the only ones skipped.

Security: the batches are pickles, and unpickling an untrusted file can run
arbitrary code. `load_cifar_batches` therefore unpickles with an allow-list
that admits only what the batch format needs (dicts, lists, bytes, numbers
and plain bool/int/float numpy arrays, rebuilt by `util.data.safe_pickle`
rather than by numpy's own unpickling code); any other global in the file is
refused. Still, prefer batch files from a source you trust.

The modules, one job each:

    dataset      Dataset, DataError, train_val_split, the CIFAR-10 class names
    safe_pickle  the allow-list unpickler for the batch format
    batches      read and write CIFAR-10 python batch files
    download     fetch and extract the official tarball
    folders      image-folder trees (Pillow, tqdm)
    normalize    Normalizer
    sample       the CLI that draws the shipped sample

Importing this package imports neither Pillow nor tqdm (Spark executors
import it to unpickle a `Normalizer`): `folders` and `download` are imported
when first used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from util.data.batches import BATCHES_DIR, load_cifar_batches, write_cifar_batches
from util.data.dataset import CIFAR10_CLASSES, DataError, Dataset, check_split, train_val_split
from util.data.normalize import Normalizer

if TYPE_CHECKING:
    from util.data.download import CIFAR10_MD5, CIFAR10_URL, download_cifar10
    from util.data.folders import IMAGE_SUFFIXES, load_image_folder

__all__ = [
    "BATCHES_DIR",
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "IMAGE_SUFFIXES",
    "SAMPLE",
    "DataError",
    "Dataset",
    "Normalizer",
    "download_cifar10",
    "Located",
    "load",
    "locate",
    "load_cifar_batches",
    "load_image_folder",
    "train_val_split",
    "write_cifar_batches",
]

# the CIFAR-10 sample shipped with the project (data/README.md says how it was drawn)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "cifar10-sample"

# public names of the modules that import Pillow or tqdm, resolved on first access
_LAZY = {
    "load_image_folder": "folders",
    "IMAGE_SUFFIXES": "folders",
    "download_cifar10": "download",
    "CIFAR10_URL": "download",
    "CIFAR10_MD5": "download",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def _is_batches_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("batches.meta", "data_batch_1", "test_batch"))


@dataclass(frozen=True)
class Located:
    """Where `split` of a data directory is: kind "batches" (root: the batch files' folder)
    or "folders" (root: the split's image-folder tree; classes: the label order, from
    train/, or None for a plain tree's own folders)."""

    kind: str
    root: Path
    classes: list[str] | None = None


def locate(path: str | Path, split: str = "train") -> Located:
    """Finds `split` in whatever `path` holds (auto-detected, in this order).

    1. CIFAR-10 python batches in `path` or in `path/cifar-10-batches-py`;
    2. image-folder trees `path/train/<class>/...` and `path/test/<class>/...`
       (labels follow the class folders of train/; test/ must have the same);
    3. a plain image-folder tree `path/<class>/...`: all of it is "train";
       asking it for "test" is a DataError (use `train_val_split`).
    """
    path = Path(path)
    check_split(split)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a data directory")
    for candidate in (path, path / BATCHES_DIR):
        if candidate.is_dir() and _is_batches_dir(candidate):
            return Located("batches", candidate)
    from util.data import folders  # Pillow and tqdm only when image folders are read

    if (path / "train").is_dir() or (path / "test").is_dir():
        if not (path / split).is_dir():
            raise DataError(f"{path}: has no {split}/ folder")
        ref = path / "train" if (path / "train").is_dir() else path / split
        return Located("folders", path / split, folders.class_order(folders.class_folders(ref)))
    if folders.class_folders(path):
        if split == "test":
            raise DataError(
                f"{path}: a single image-folder tree has no test split "
                "(add train/ and test/ subfolders, or split off validation data)"
            )
        return Located("folders", path)
    raise DataError(
        f"{path}: found neither CIFAR-10 python batches (data_batch_*, test_batch, "
        "batches.meta), nor train/ and test/ image folders, nor class folders of images"
    )


def load(path: str | Path, split: str = "train") -> Dataset:
    """Loads `split` from whatever `path` holds (found by `locate`).
    Returns X (N, 3, 32, 32) uint8, y (N,) int64."""
    where = locate(path, split)
    if where.kind == "batches":
        return load_cifar_batches(where.root, split)
    from util.data import folders

    return folders.load_image_folder(where.root, classes=where.classes)
