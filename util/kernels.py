"""Chooses the kernel implementation used by `util.layer`: Cython or numpy.

The Cython kernels (`util._kernels`) are the default. The numpy twins
(`util.kernels_numpy`) are selected explicitly, for the whole process with the
environment variable `SPARKNET_KERNELS=numpy` (read once, at import) or
`use("numpy")`, or for a block of code with `with using("numpy"): ...`.
A missing extension is an error with a build hint, never a silent fallback.

The choice is the only mutable state here: one name and the module it
resolved to, kept in `_Selected`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import TypeVar

import numpy as np
from threadpoolctl import ThreadpoolController

from util import kernels_numpy
from util.kernel_shapes import out_size, pool_shape

__all__ = [
    "BACKENDS",
    "out_size",
    "pool_shape",
    "use",
    "using",
    "backend",
    "block_images",
    "im2col",
    "col2im",
    "conv_direct",
    "conv_direct_dW",
    "maxpool_forward",
    "maxpool_backward",
]

BACKENDS = ("cython", "numpy")

# Bytes of one block's im2col matrix: small enough to stay in L2/L3 between
# the im2col and the GEMMs that read it (measured best at 2-8 MB here).
BLOCK_BYTES = 4 << 20
T = TypeVar("T")
S = TypeVar("S")


def _load(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise ValueError(f"kernels: unknown backend {name!r}, expected one of {BACKENDS}")
    if name == "numpy":
        return kernels_numpy
    try:
        from util import _kernels
    except ImportError as e:
        raise ImportError(
            "kernels: the Cython extension util._kernels is not built. "
            "Run `pip install -e .` or `python setup.py build_ext --inplace` in the project "
            "directory, or select the numpy kernels with SPARKNET_KERNELS=numpy."
        ) from e
    return _kernels


class _Selected:
    """The backend in use; resolved lazily so that importing never fails."""

    name: str = os.environ.get("SPARKNET_KERNELS", "cython")
    module: ModuleType | None = None


def use(name: str) -> None:
    """Selects the kernel backend for this process: "cython" or "numpy".

    Raises ValueError for an unknown name, ImportError if the extension is missing.
    """
    _Selected.module = _load(name)
    _Selected.name = name


@contextmanager
def using(name: str) -> Iterator[None]:
    """Runs a block with the given backend, then restores the previous one."""
    previous = (_Selected.name, _Selected.module)
    use(name)
    try:
        yield
    finally:
        _Selected.name, _Selected.module = previous


def backend() -> str:
    """The name of the backend in use."""
    return _Selected.name


def _impl() -> ModuleType:
    if _Selected.module is None:
        _Selected.module = _load(_Selected.name)
    return _Selected.module


@functools.cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


_POOL_PREFIX = "sparknet-blocks"

# glibc malloc: keep freed blocks up to 32 MB for reuse instead of unmapping them, so that
# each sub-batch's arrays are not page-faulted in anew (a process starts with a 128 KB
# threshold that only grows as blocks are freed). Spark's Python workers get these as
# environment variables (spark.session); in-process steps as keep_freed_memory() sets them.
# Measured here: a Spark worker's CNN step of 1000 images took 0.59 s against 0.52 s with
# them; an in-process float32 step of 2000 images, 2.5-10 % less in two alternations.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # <malloc.h> M_*


@functools.cache
def keep_freed_memory() -> bool:
    """Sets MALLOC_ENV in this process through glibc's mallopt (once; entry points call it);
    False where the C library has no mallopt (not glibc), which changes nothing else."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(_MALLOPT[var], int(value)) == 1 for var, value in MALLOC_ENV.items())


def blas_threads() -> int:
    """How many threads BLAS may use now (threadpoolctl's view; 1 inside parallel_map).

    Only BLAS libraries count: OpenMP's thread count (e.g. of a loaded PyTorch) is
    per calling thread and would not show parallel_map's limit."""
    if threading.current_thread().name.startswith(_POOL_PREFIX):
        return 1  # already one of parallel_map's threads: never submit to the pool again
    blas = [i["num_threads"] for i in _blas().info() if i.get("user_api") == "blas"]
    return max(blas, default=1)


def parallel_map(items: Sequence[S], work: Callable[[list[S]], T]) -> list[T]:
    """Runs work(share) for shares of `items` dealt round-robin to blas_threads() threads.

    With BLAS allowed t > 1 threads, each of t Python threads gets every t-th item and
    calls BLAS single-threaded (numpy and the Cython kernels release the GIL): many small
    GEMMs scale far better this way than with BLAS threads. The assignment of items to
    threads is fixed, so results are reproducible. Returns one result per thread, in
    thread order (a single result when t is 1).
    """
    threads = min(len(items), blas_threads())
    if threads <= 1:
        return [work(list(items))]
    with _blas().limit(limits=1, user_api="blas"):
        return list(_pool(threads).map(work, [list(items[i::threads]) for i in range(threads)]))


def parallel_blocks(n: int, block: int, work: Callable[[list[int]], T]) -> list[T]:
    """parallel_map over the block starts [0, block, 2*block, ...) of n images."""
    return parallel_map(range(0, n, block), work)


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """A lasting pool per thread count: starting threads anew costs ~1 ms per call, as much
    as a whole training step of the linear model."""
    return ThreadPoolExecutor(threads, thread_name_prefix=_POOL_PREFIX)


def block_images(n: int, bytes_per_image: int, budget: int | None = None) -> int:
    """How many images (>= 1, <= n) to process per block of `budget` bytes (default
    BLOCK_BYTES) when each needs `bytes_per_image`."""
    return max(1, min(n, (budget or BLOCK_BYTES) // max(1, bytes_per_image)))


def im2col(
    X: np.ndarray, HH: int, WW: int, stride: int, pad: int, out: np.ndarray | None = None
) -> np.ndarray:
    """X: (N, C, H, W) -> cols (C*HH*WW, N*Ho*Wo), X's dtype; written into `out` if given."""
    return _impl().im2col(X, HH, WW, stride, pad, out)


def col2im(
    cols: np.ndarray,
    shape: tuple[int, int, int, int],
    HH: int,
    WW: int,
    stride: int,
    pad: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Adjoint of im2col: cols (C*HH*WW, N*Ho*Wo) -> dX of `shape`; written into `out` if given."""
    return _impl().col2im(cols, shape, HH, WW, stride, pad, out)


def conv_direct(
    X: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    pad: int | tuple[int, int],
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Stride-1 convolution X (N, C, H, W), W (F, C, HH, WW), b (F,) -> (N, F, Ho, Wo), X's dtype.

    pad: int >= 0 or (pad_h, pad_w), negative to crop; written into `out` if given."""
    return _impl().conv_direct(X, W, b, pad, out)


def conv_direct_dW(
    X: np.ndarray, dout: np.ndarray, HH: int, WW: int, pad: int | tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """conv_direct's weight and bias gradients: X (N, C, H, W), dout (N, F, Ho, Wo) ->
    dW (F, C, HH, WW), db (F,) (the Cython kernel sums db as it packs dout for dW)."""
    return _impl().conv_direct_dW(X, dout, HH, WW, pad)


def maxpool_forward(
    X: np.ndarray,
    size: int,
    stride: int,
    relu: bool = False,
    out: np.ndarray | None = None,
    argmax: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """X: (N, C, H, W) -> out (N, C, Ho, Wo) of X's dtype, argmax (N, C, Ho, Wo) int32;
    relu: out = max(0, out), and argmax size*size (gradient nowhere) where out <= 0."""
    return _impl().maxpool_forward(X, size, stride, relu, out, argmax)


def maxpool_backward(
    dout: np.ndarray,
    argmax: np.ndarray,
    shape: tuple[int, int, int, int],
    size: int,
    stride: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Routes dout (N, C, Ho, Wo) to the argmax positions; dX of `shape`, dout's dtype."""
    return _impl().maxpool_backward(dout, argmax, shape, size, stride, out)
