"""Reading and writing the official CIFAR-10 python batch files.

A batch directory (as extracted from cifar-10-python.tar.gz) holds
`data_batch_1..5`, `test_batch` and `batches.meta`. Reading unpickles with
the allow-list of `util.data.safe_pickle`; still, prefer batch files from a
source you trust.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from util.data.dataset import CIFAR10_CLASSES, DataError, Dataset, check_split, describe
from util.data.safe_pickle import resolve, unpickle

log = logging.getLogger(__name__)

BATCHES_DIR = "cifar-10-batches-py"  # the folder inside the official tarball
_SHAPE = (3, 32, 32)  # the fixed image shape of the batch format: 3072 bytes per row


def _bytes_keys(d: dict, path: Path) -> dict[bytes, Any]:
    """Keys as bytes: Python 2 pickles load with bytes keys, Python 3 ones may use str."""
    out = {}
    for k, v in d.items():
        if isinstance(k, str):
            k = k.encode("utf-8")
        if not isinstance(k, bytes):
            raise DataError(f"{path}: dictionary key {k!r} is not a string")
        out[k] = v
    return out


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """X (n, 3, 32, 32) uint8 and y (n,) int64 from one batch file."""
    d = unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    d = _bytes_keys(d, path)
    missing = [k.decode() for k in (b"data", b"labels") if k not in d]
    if missing:
        raise DataError(f"{path}: the batch dict lacks the key(s) {missing}")
    data = resolve(d[b"data"], path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a 2-d uint8 array, got {describe(data)}")
    if data.shape[1] != np.prod(_SHAPE):
        raise DataError(
            f"{path}: 'data' rows have {data.shape[1]} values, expected {np.prod(_SHAPE)} "
            "(32x32 pixels, R then G then B planes)"
        )
    if len(data) == 0:
        raise DataError(f"{path}: the batch holds no images")
    labels = resolve(d[b"labels"], path)
    try:
        y = np.asarray(labels)
    except Exception as e:  # arbitrary objects: anything may go wrong
        raise DataError(f"{path}: 'labels' is not a list of integers ({e})") from e
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a list of integers, got {describe(y)}")
    if len(y) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(y)} labels")
    bad = np.flatnonzero((y < 0) | (y >= num_classes))
    if bad.size:
        raise DataError(
            f"{path}: label {y[bad[0]]} at position {bad[0]} is out of range "
            f"0..{num_classes - 1} ({bad.size} bad labels in all)"
        )
    return data.reshape((-1, *_SHAPE)), y.astype(np.int64)


def _read_meta(directory: Path) -> list[str]:
    """Class names from batches.meta (b"label_names"); the CIFAR-10 names if it is absent."""
    path = directory / "batches.meta"
    if not path.exists():
        log.warning("%s: not found; using the CIFAR-10 class names", path)
        return list(CIFAR10_CLASSES)
    d = unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    names = _bytes_keys(d, path).get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: 'label_names' must be a non-empty list of names")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: a label name is not UTF-8 text ({e})") from e


def _batch_files(directory: Path, split: str) -> list[Path]:
    if split == "test":
        return [directory / "test_batch"]
    numbered = {}
    for p in directory.glob("data_batch_*"):
        m = re.fullmatch(r"data_batch_(\d+)", p.name)
        if m:
            numbered[int(m.group(1))] = p
    expected = list(range(1, len(numbered) + 1))
    if sorted(numbered) != expected:
        raise DataError(
            f"{directory}: training batches must be data_batch_1..data_batch_<n> without gaps, "
            f"found numbers {sorted(numbered)}"
        )
    return [numbered[i] for i in expected] or [directory / "data_batch_1"]


def iter_cifar_batches(
    directory: str | Path, split: str = "train"
) -> tuple[list[str], Iterator[tuple[Path, np.ndarray, np.ndarray]]]:
    """The class names and, one batch file at a time, (file, X (n, 3, 32, 32) uint8,
    y (n,) int64) of `split`, in the order `load_cifar_batches` concatenates them (so a
    conversion need not hold the whole split)."""
    directory = Path(directory)
    check_split(split)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory (expected CIFAR-10 python batches)")
    classes = _read_meta(directory)
    paths = _batch_files(directory, split)
    for path in paths:
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR-10 batch file")

    def read() -> Iterator[tuple[Path, np.ndarray, np.ndarray]]:
        for path in paths:
            yield (path, *_read_batch(path, len(classes)))

    return classes, read()


def load_cifar_batches(directory: str | Path, split: str = "train") -> Dataset:
    """Loads the official CIFAR-10 python batches from `directory`.

    split "train" reads data_batch_1..n (n = 5 for the official set), "test"
    reads test_batch; class names come from batches.meta. Each batch is a
    pickled dict with b"data" (n, 3072) uint8 (each row the R, then G, then B
    32x32 plane) and b"labels" (n ints). Returns X (N, 3, 32, 32) uint8,
    y (N,) int64. Unpickling uses an allow-list (see util.data.safe_pickle).
    """
    directory = Path(directory)
    classes, batches = iter_cifar_batches(directory, split)
    parts = [(X, y) for _, X, y in batches]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    log.info("%s: %d %s images from CIFAR-10 batches", directory, len(y), split)
    return Dataset(X, y, classes)


def write_cifar_batches(
    directory: str | Path, train: Dataset, test: Dataset, n_train_batches: int = 5
) -> None:
    """Writes train/test in the official CIFAR-10 python batch format.

    Produces data_batch_1..n_train_batches (train split into nearly equal
    parts, in order), test_batch and batches.meta, each a pickle (protocol 4)
    of a dict with bytes keys: b"batch_label", b"labels" (list of int),
    b"data" ((n, 3072) uint8), b"filenames" (synthetic names). Images must be
    (N, 3, 32, 32) uint8 and both sets must share one class list.
    """
    directory = Path(directory)
    if test.classes != train.classes:
        raise ValueError(f"write_cifar_batches: train classes {train.classes} != {test.classes}")
    for name, ds in (("train", train), ("test", test)):
        if ds.X.shape[1:] != _SHAPE or len(ds) == 0:
            raise ValueError(
                f"write_cifar_batches: {name} images must be (N>0, 3, 32, 32), got {ds.X.shape}"
            )
    if not 1 <= n_train_batches <= len(train):
        raise ValueError(f"write_cifar_batches: n_train_batches must be 1..{len(train)}")
    directory.mkdir(parents=True, exist_ok=True)
    names = {f"data_batch_{i + 1}" for i in range(n_train_batches)}
    stale = sorted(p.name for p in directory.glob("data_batch_*") if p.name not in names)
    if stale:  # they would be read back as extra training data
        raise ValueError(f"write_cifar_batches: {directory} already holds {stale}")
    batches = [
        (f"data_batch_{i + 1}", f"training batch {i + 1} of {n_train_batches}", idx)
        for i, idx in enumerate(np.array_split(np.arange(len(train)), n_train_batches))
    ]
    for fname, label, idx in batches:
        _write_pickle(directory / fname, _batch_dict(train, idx, label))
    _write_pickle(
        directory / "test_batch", _batch_dict(test, np.arange(len(test)), "testing batch 1 of 1")
    )
    meta = {
        b"num_cases_per_batch": len(batches[0][2]),
        b"label_names": [c.encode("utf-8") for c in train.classes],
        b"num_vis": int(np.prod(_SHAPE)),
    }
    _write_pickle(directory / "batches.meta", meta)


def _batch_dict(ds: Dataset, idx: np.ndarray, label: str) -> dict[bytes, Any]:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in ds.y[idx]],
        b"data": np.ascontiguousarray(ds.X[idx].reshape(len(idx), -1)),
        b"filenames": [f"image_{i:06d}.png".encode() for i in idx],
    }


def _write_pickle(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        # Protocol 4 stores bytes verbatim (protocol 2 from Python 3 inflates them ~1.5x);
        # readers see the same dict either way.
        pickle.dump(obj, f, protocol=4)
    tmp.replace(path)
