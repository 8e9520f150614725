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
and plain bool/int/float numpy arrays, rebuilt by this module rather than by
numpy's own unpickling code); any other global in the file is refused. Still,
prefer batch files from a source you trust.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import pickletools
import re
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

log = logging.getLogger(__name__)

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
# the CIFAR-10 sample shipped with the project (data/README.md says how it was drawn)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "cifar10-sample"
BATCHES_DIR = "cifar-10-batches-py"  # the folder inside the official tarball
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SHAPE = (3, 32, 32)  # the fixed image shape of the batch format: 3072 bytes per row
_PROGRESS_MIN = 5000  # image folders at least this large get a progress bar (on a tty)


class DataError(ValueError):
    """A data file or folder is missing, malformed, or not what was expected."""


@dataclass
class Dataset:
    """Raw images and labels.

    X: (N, 3, H, W) uint8 pixels, channels R, G, B;
    y: (N,) int64 labels in 0..len(classes)-1;
    classes: class names in label order.
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.X, np.ndarray) or self.X.dtype != np.uint8 or self.X.ndim != 4:
            raise TypeError(f"Dataset: X must be a 4-d uint8 array, got {_describe(self.X)}")
        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.ndim != 1:
            raise TypeError(f"Dataset: y must be a 1-d int64 array, got {_describe(self.y)}")
        if len(self.X) != len(self.y):
            raise ValueError(f"Dataset: {len(self.X)} images but {len(self.y)} labels")
        self.classes = list(self.classes)
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise ValueError(
                f"Dataset: labels span {self.y.min()}..{self.y.max()}, "
                f"expected 0..{len(self.classes) - 1} for {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        """The images at the integer indices `idx` (copies), same classes."""
        return Dataset(self.X[idx], self.y[idx], list(self.classes))


def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return type(a).__name__


# --------------------------------------------------------------------------- pickled batches


# Unpickling never hands attacker-chosen state to numpy: the globals that numpy's array
# pickles name (dtype, _reconstruct, _frombuffer, scalar) resolve to the small stand-ins
# below, which accept only plain bool/int/float arrays whose byte count matches their
# shape and build them with np.frombuffer. Every other global is refused.


def _text(v: Any) -> str:
    """A pickled string as str (Python 2 pickles load them as bytes)."""
    if isinstance(v, bytes):
        return v.decode("latin1")
    if isinstance(v, str):
        return v
    raise pickle.UnpicklingError(f"expected a string in an array pickle, got {type(v).__name__}")


class _NDArrayToken:
    """Stands in for `numpy.ndarray`, which array pickles only pass to `_reconstruct`."""

    def __init__(self, *args: Any) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray")


class _DTypeStub:
    """Stands in for `numpy.dtype(name, align, copy)`; BUILD then sets the byte order."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True) -> None:
        self.name = _text(name)
        if not re.fullmatch(r"b1|[iu][1248]|f[248]", self.name):
            raise pickle.UnpicklingError(f"refusing array dtype {self.name!r}")
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        order = _text(state[1]) if isinstance(state, tuple) and len(state) > 1 else None
        if order not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError("malformed dtype state")
        self.byteorder = order

    def dtype(self) -> np.dtype:
        return np.dtype(self.byteorder + self.name)


def _make_array(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """A fresh array from pickled bytes, after checking dtype, shape and byte count."""
    if not isinstance(dtype, _DTypeStub):
        raise pickle.UnpicklingError("array pickle without a dtype")
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"array data must be bytes, got {type(raw).__name__}")
    if (
        not isinstance(shape, tuple)
        or len(shape) > 32
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise pickle.UnpicklingError(f"bad array shape {shape!r}")
    dt = dtype.dtype()
    need = dt.itemsize
    for n in shape:
        need *= n  # Python ints: no overflow
    if need != len(raw):
        raise pickle.UnpicklingError(f"array data has {len(raw)} bytes, shape {shape} needs {need}")
    order = _text(order)
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"bad array order {order!r}")
    return np.frombuffer(raw, dtype=dt).reshape(shape, order=order).copy()


class _ArrayStub:
    """Stands in for numpy's `_reconstruct(ndarray, (0,), b"b")`; BUILD supplies the array.

    `array` holds the result; `_resolve` swaps the stub for it after loading.
    """

    def __init__(self, cls: Any, shape: Any = None, typecode: Any = None) -> None:
        if cls is not _NDArrayToken:
            raise pickle.UnpicklingError("_reconstruct of something other than an ndarray")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, raw)
        if not (isinstance(state, tuple) and len(state) == 4):
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state
        self.array = _make_array(raw, dtype, shape, "F" if fortran else "C")


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stands in for numpy's `_frombuffer` (protocol-5 array pickles)."""
    return _make_array(bytes(buf) if isinstance(buf, bytearray) else buf, dtype, shape, order)


def _scalar(dtype: Any, raw: Any) -> Any:
    """Stands in for numpy's `scalar(dtype, raw)` (numpy ints in a pickled list of labels)."""
    return _make_array(raw, dtype, (), "C")[()]


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it, limited to latin-1 (no other codecs)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """`bytes()` as protocol-2 pickles use it for b""; refuses arguments (bytes(10**12)...)."""
    if args:
        raise pickle.UnpicklingError("refusing bytes() with arguments")
    return b""


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The only globals a batch pickle may name, each mapped to a safe stand-in."""
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDArrayToken,
        ("numpy", "dtype"): _DTypeStub,
        ("_codecs", "encode"): _latin1_encode,  # how protocol-2 pickles store bytes
        ("__builtin__", "bytes"): _empty_bytes,  # ... and empty bytes
        ("builtins", "bytes"): _empty_bytes,
    }
    for pkg in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x names
        allowed[(f"{pkg}.multiarray", "_reconstruct")] = _ArrayStub
        allowed[(f"{pkg}.numeric", "_frombuffer")] = _frombuffer
        allowed[(f"{pkg}.multiarray", "scalar")] = _scalar
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global outside `_safe_globals()`."""

    def find_class(self, module: str, name: str) -> Any:
        obj = _safe_globals().get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return obj


def _resolve(v: Any, path: Path) -> Any:
    """A loaded value with an array stand-in replaced by its array."""
    if isinstance(v, _ArrayStub):
        if v.array is None:
            raise DataError(f"{path}: an array in the pickle has no data")
        return v.array
    return v


def _unpickle(path: Path) -> Any:
    """Unpickles one batch file safely; every failure becomes a DataError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if not raw:
        raise DataError(f"{path}: empty file, expected a pickled CIFAR-10 batch")
    try:
        # Walk the opcodes first: catches truncation early and bounds the memo, so a
        # corrupt file cannot make the unpickler allocate gigabytes for a huge memo index.
        for op, arg, pos in pickletools.genops(raw):
            if op.name.endswith("PUT") and isinstance(arg, int) and arg > pos:
                raise pickle.UnpicklingError(f"memo index {arg} out of range at byte {pos}")
        return _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # arbitrary bytes can make the unpickler raise anything
        raise DataError(
            f"{path}: not a readable CIFAR-10 batch (corrupt, truncated or foreign pickle: "
            f"{type(e).__name__}: {e})"
        ) from e


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
    d = _unpickle(path)
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    d = _bytes_keys(d, path)
    missing = [k.decode() for k in (b"data", b"labels") if k not in d]
    if missing:
        raise DataError(f"{path}: the batch dict lacks the key(s) {missing}")
    data = _resolve(d[b"data"], path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: 'data' must be a 2-d uint8 array, got {_describe(data)}")
    if data.shape[1] != np.prod(_SHAPE):
        raise DataError(
            f"{path}: 'data' rows have {data.shape[1]} values, expected {np.prod(_SHAPE)} "
            "(32x32 pixels, R then G then B planes)"
        )
    if len(data) == 0:
        raise DataError(f"{path}: the batch holds no images")
    labels = _resolve(d[b"labels"], path)
    try:
        y = np.asarray(labels)
    except Exception as e:  # arbitrary objects: anything may go wrong
        raise DataError(f"{path}: 'labels' is not a list of integers ({e})") from e
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"{path}: 'labels' must be a list of integers, got {_describe(y)}")
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
    d = _unpickle(path)
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


def load_cifar_batches(directory: str | Path, split: str = "train") -> Dataset:
    """Loads the official CIFAR-10 python batches from `directory`.

    split "train" reads data_batch_1..n (n = 5 for the official set), "test"
    reads test_batch; class names come from batches.meta. Each batch is a
    pickled dict with b"data" (n, 3072) uint8 (each row the R, then G, then B
    32x32 plane) and b"labels" (n ints). Returns X (N, 3, 32, 32) uint8,
    y (N,) int64. Unpickling uses an allow-list (see the module docstring).
    """
    directory = Path(directory)
    _check_split(split)
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory (expected CIFAR-10 python batches)")
    classes = _read_meta(directory)
    parts = []
    for path in _batch_files(directory, split):
        if not path.is_file():
            raise DataError(f"{path}: missing CIFAR-10 batch file")
        parts.append(_read_batch(path, len(classes)))
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


# --------------------------------------------------------------------------- download


def download_cifar10(
    directory: str | Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 30
) -> Path:
    """Downloads and extracts the official CIFAR-10 python batches into `directory`.

    Returns `directory/cifar-10-batches-py` (what `load_cifar_batches` reads).
    Does nothing if its batches are already there; reuses an already
    downloaded tarball if its md5 matches. The tarball is checked against
    `md5` and extracted only if every member is a plain file or folder inside
    cifar-10-batches-py/. Without network, raises DataError saying where to
    put the batches by hand. `url` may be any urllib URL (tests use file://).
    """
    directory = Path(directory)
    target = directory / BATCHES_DIR
    if (target / "test_batch").is_file() and (target / "batches.meta").is_file():
        log.info("%s: CIFAR-10 batches already present", target)
        return target
    directory.mkdir(parents=True, exist_ok=True)
    tarball = directory / "cifar-10-python.tar.gz"
    if not (tarball.is_file() and _md5(tarball) == md5):
        _fetch(url, tarball, target, timeout)
        digest = _md5(tarball)
        if digest != md5:
            tarball.unlink()
            raise DataError(
                f"{tarball}: md5 {digest} does not match the expected {md5}; "
                "the download is corrupt and was deleted - try again"
            )
    _extract(tarball, directory)
    if not (target / "test_batch").is_file():
        raise DataError(f"{tarball}: holds no {BATCHES_DIR}/test_batch; not the CIFAR-10 tarball")
    return target


def _fetch(url: str, dest: Path, target: Path, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name) as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        raise DataError(
            f"cannot download {url} ({getattr(e, 'reason', e)}). Without network access, "
            f"fetch cifar-10-python.tar.gz elsewhere and extract it so that {target}/ holds "
            "data_batch_1..5, test_batch and batches.meta (or place the tarball itself at "
            f"{dest})"
        ) from e
    part.replace(dest)


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _extract(tarball: Path, directory: Path) -> None:
    """Extracts only plain files/folders under BATCHES_DIR/; anything else is an error."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = Path(m.name).parts
                if (
                    not (m.isfile() or m.isdir())
                    or Path(m.name).is_absolute()
                    or ".." in parts
                    or not parts
                    or parts[0] != BATCHES_DIR
                ):
                    raise DataError(f"{tarball}: refusing to extract unexpected member {m.name!r}")
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(directory, members=members, **kwargs)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{tarball}: cannot extract ({e})") from e


# --------------------------------------------------------------------------- image folders


def _visible(path: Path) -> list[Path]:
    """Entries of a directory in name order, without hidden ones (".DS_Store", ...)."""
    return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def _class_folders(root: Path) -> list[str]:
    return [p.name for p in _visible(root) if p.is_dir()]


def _class_order(names: Sequence[str]) -> list[str]:
    """The official CIFAR-10 order when the names are exactly its classes, else sorted."""
    return list(CIFAR10_CLASSES) if set(names) == set(CIFAR10_CLASSES) else sorted(names)


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
    if not root.is_dir():
        raise DataError(f"{root}: no such directory (expected an image folder tree)")
    found = _class_folders(root)
    for p in _visible(root):
        if not p.is_dir():
            log.warning("%s: not a class folder; ignored", p)
    if not found:
        raise DataError(f"{root}: no class folders (expected {root}/<class>/*.jpg|png)")
    if classes is None:
        classes = _class_order(found)
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
    w, h = size
    X = np.empty((len(files), 3, h, w), dtype=np.uint8)
    y = np.array([label for _, label in files], dtype=np.int64)
    small = len(files) < _PROGRESS_MIN or not sys.stderr.isatty()
    for i, (p, _) in enumerate(tqdm(files, desc=root.name, unit="img", disable=small)):
        X[i] = _read_image(p, size)
    log.info("%s: %d images in %d classes", root, len(y), len(classes))
    return Dataset(X, y, classes)


_CONVERTIBLE = {"RGB", "L", "LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "1"}


def _read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One image as (3, H, W) uint8."""
    try:
        with Image.open(path) as img:
            if img.size != tuple(size):
                raise DataError(
                    f"{path}: image is {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}"
                )
            if img.mode not in _CONVERTIBLE:
                raise DataError(f"{path}: unsupported image mode {img.mode!r}, expected RGB")
            img.load()
            rgb = img if img.mode == "RGB" else img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable or corrupt image ({e})") from e


# --------------------------------------------------------------------------- auto-detection


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _is_batches_dir(path: Path) -> bool:
    return any((path / f).is_file() for f in ("batches.meta", "data_batch_1", "test_batch"))


def load(path: str | Path, split: str = "train") -> Dataset:
    """Loads `split` from whatever `path` holds (auto-detected, in this order).

    1. CIFAR-10 python batches in `path` or in `path/cifar-10-batches-py`;
    2. image-folder trees `path/train/<class>/...` and `path/test/<class>/...`
       (labels follow the class folders of train/; test/ must have the same);
    3. a plain image-folder tree `path/<class>/...`: all of it is "train";
       asking it for "test" is a DataError (use `train_val_split`).
    Returns X (N, 3, 32, 32) uint8, y (N,) int64.
    """
    path = Path(path)
    _check_split(split)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if not path.is_dir():
        raise DataError(f"{path}: is a file; expected a data directory")
    for candidate in (path, path / BATCHES_DIR):
        if candidate.is_dir() and _is_batches_dir(candidate):
            return load_cifar_batches(candidate, split)
    if (path / "train").is_dir() or (path / "test").is_dir():
        if not (path / split).is_dir():
            raise DataError(f"{path}: has no {split}/ folder")
        ref = path / "train" if (path / "train").is_dir() else path / split
        return load_image_folder(path / split, classes=_class_order(_class_folders(ref)))
    if _class_folders(path):
        if split == "test":
            raise DataError(
                f"{path}: a single image-folder tree has no test split "
                "(add train/ and test/ subfolders, or split off validation data)"
            )
        return load_image_folder(path)
    raise DataError(
        f"{path}: found neither CIFAR-10 python batches (data_batch_*, test_batch, "
        "batches.meta), nor train/ and test/ image folders, nor class folders of images"
    )


# --------------------------------------------------------------------------- split


def train_val_split(ds: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Splits off `n_val` validation images, stratified by class, deterministically.

    Each class gives (almost exactly) its share of `n_val`: the images of a
    class are shuffled with `seed` and spread evenly over [0, 1), and the
    n_val images with the smallest positions form the validation set. Both
    parts keep the original relative order. Same ds and seed, same split.
    """
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)):
        raise TypeError(f"train_val_split: n_val must be an int, got {type(n_val).__name__}")
    if not 0 <= n_val < len(ds):
        raise ValueError(f"train_val_split: n_val must be in 0..{len(ds) - 1}, got {n_val}")
    rng = np.random.default_rng(seed)
    position = np.empty(len(ds))
    for c in range(len(ds.classes)):
        members = rng.permutation(np.flatnonzero(ds.y == c))
        position[members] = (np.arange(len(members)) + 0.5) / max(len(members), 1)
    # ties (same position in equally large classes) broken by a seeded random key
    order = np.lexsort((rng.random(len(ds)), position))
    val = np.sort(order[:n_val])
    train = np.sort(order[n_val:])
    return ds.subset(train), ds.subset(val)


# --------------------------------------------------------------------------- preprocessing


@dataclass
class Normalizer:
    """Per-channel standardisation: (X / 255 - mean[c]) / std[c].

    mean, std: (C,) float64, statistics of X / 255 over the training images.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"Normalizer: mean and std must be (C,) vectors, got {self.mean.shape}, "
                f"{self.std.shape}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise ValueError(f"Normalizer: need finite mean and std > 0, got std {self.std}")

    @classmethod
    def fit(cls, X: np.ndarray) -> Normalizer:
        """Exact per-channel mean and (population) std of X / 255 for X (N, C, H, W) uint8.

        Fit on the training images only. Computed from per-channel histograms
        of the 256 pixel values, so it needs no float copy of X. A constant
        channel (std 0) gets std 1 so that applying stays finite.
        """
        _check_uint8_images("Normalizer.fit", X)
        if X.size == 0:
            raise ValueError("Normalizer.fit: no images")
        values = np.arange(256) / 255.0
        mean, std = [], []
        for c in range(X.shape[1]):
            counts = np.bincount(X[:, c].ravel(), minlength=256)
            m = counts @ values / counts.sum()
            var = counts @ (values - m) ** 2 / counts.sum()
            mean.append(m)
            std.append(np.sqrt(var) if var > 0 else 1.0)
        return cls(np.array(mean), np.array(std))

    def apply(self, X: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(X / 255 - mean) / std per channel: X (N, C, H, W) uint8 -> (N, C, H, W) `dtype`."""
        _check_uint8_images("Normalizer.apply", X)
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"Normalizer.apply: dtype must be float32 or float64, got {dtype}")
        if X.shape[1] != len(self.mean):
            raise ValueError(
                f"Normalizer.apply: X has {X.shape[1]} channels, the normalizer {len(self.mean)}"
            )
        # Per-channel affine map on float64 constants, rounded once to dtype: out = X * a + b.
        a = (1.0 / (255.0 * self.std)).astype(dtype)[None, :, None, None]
        b = (-self.mean / self.std).astype(dtype)[None, :, None, None]
        out = X.astype(dtype)
        out *= a
        out += b
        return out

    def to_meta(self) -> dict[str, Any]:
        """JSON-serialisable description (for a model's .npz metadata); exact round trip."""
        return {
            "kind": "per-channel",
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalizer:
        """Inverse of `to_meta`; ValueError if `meta` is not such a description."""
        if not isinstance(meta, dict) or meta.get("kind") != "per-channel":
            raise ValueError(f"Normalizer.from_meta: not a per-channel normalizer: {meta!r}")
        try:
            return cls(np.array(meta["mean"], dtype=float), np.array(meta["std"], dtype=float))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"Normalizer.from_meta: bad mean/std in {meta!r} ({e})") from e


def _check_uint8_images(fn: str, X: Any) -> None:
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 4:
        raise TypeError(f"{fn}: X must be an (N, C, H, W) uint8 array, got {_describe(X)}")
