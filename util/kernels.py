"""Chooses the kernel implementation used by `util.layer`: Cython or numpy.

The Cython kernels (`util._kernels`) are the default. The numpy twins
(`util.kernels_numpy`) are selected explicitly with `use("numpy")` or the
environment variable `SPARKNET_KERNELS=numpy`; a missing extension is an
error with a build hint, never a silent fallback.
"""

from __future__ import annotations

import os
from types import ModuleType

from util import kernels_numpy
from util.kernels_numpy import out_size

__all__ = ["out_size", "use", "backend", "im2col", "col2im", "maxpool_forward", "maxpool_backward"]

_BACKENDS = ("cython", "numpy")


def _load(name: str) -> ModuleType:
    if name not in _BACKENDS:
        raise ValueError(f"kernels: unknown backend {name!r}, expected one of {_BACKENDS}")
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


class _State:
    module: ModuleType | None = None
    name: str = os.environ.get("SPARKNET_KERNELS", "cython")


def use(name: str) -> None:
    """Selects the kernel backend for this process: "cython" or "numpy"."""
    _State.module = _load(name)
    _State.name = name


def backend() -> str:
    """The name of the backend in use."""
    return _State.name


def _impl() -> ModuleType:
    if _State.module is None:
        _State.module = _load(_State.name)
    return _State.module


def im2col(X, HH, WW, stride, pad):
    return _impl().im2col(X, HH, WW, stride, pad)


def col2im(cols, shape, HH, WW, stride, pad):
    return _impl().col2im(cols, shape, HH, WW, stride, pad)


def maxpool_forward(X, size, stride):
    return _impl().maxpool_forward(X, size, stride)


def maxpool_backward(dout, argmax, shape, size, stride):
    return _impl().maxpool_backward(dout, argmax, shape, size, stride)
