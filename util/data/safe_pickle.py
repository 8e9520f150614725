"""A safe unpickler for the CIFAR-10 python batch format.

The batches are pickles, and unpickling an untrusted file can run arbitrary
code. `unpickle` therefore admits only what the batch format needs (dicts,
lists, bytes, numbers and plain bool/int/float numpy arrays). It never hands
attacker-chosen state to numpy: the globals that numpy's array pickles name
(dtype, _reconstruct, _frombuffer, scalar) resolve to the small stand-ins
below, which accept only plain bool/int/float arrays whose byte count matches
their shape and build them with np.frombuffer. Every other global is refused.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

from util.data.dataset import DataError


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

    `array` holds the result; `resolve` swaps the stub for it after loading.
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


def resolve(v: Any, path: Path) -> Any:
    """A loaded value with an array stand-in replaced by its array."""
    if isinstance(v, _ArrayStub):
        if v.array is None:
            raise DataError(f"{path}: an array in the pickle has no data")
        return v.array
    return v


def unpickle(path: Path) -> Any:
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
