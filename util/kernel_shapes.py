"""The kernels' shape rules and argument checks, written once for both implementations
(the Cython kernels in `_kernels.pyx` and their numpy twins in `kernels_numpy.py`).

Each function checks what a kernel is given and returns the shapes it works with;
the kernels themselves then trust their arguments.
"""

from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a window of width k sliding over size + 2*pad."""
    return (size + 2 * pad - k) // stride + 1


def check_float(what: str, a: np.ndarray) -> None:
    """TypeError unless `a` is float32 or float64; `what` is "fn: argument"."""
    if a.dtype not in FLOATS:
        raise TypeError(f"{what} must be float32 or float64, got dtype {a.dtype}")


def check_out(fn: str, out: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """An `out` buffer must be a writeable C-contiguous array of the result's shape/dtype."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: out must be a numpy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(
            f"{fn}: out must be a C-contiguous {dtype} array of shape {shape}, "
            f"got {out.dtype} {out.shape} (contiguous: {out.flags.c_contiguous})"
        )
    if not out.flags.writeable:
        raise ValueError(f"{fn}: out must be writeable")


def output(fn: str, out: np.ndarray | None, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The checked `out` buffer, or a new uninitialised array of `shape` and `dtype`."""
    if out is None:
        return np.empty(shape, dtype=dtype)
    check_out(fn, out, shape, np.dtype(dtype))
    return out


def im2col_shape(
    x_shape: tuple[int, ...], HH: int, WW: int, stride: int, pad: int
) -> tuple[tuple[int, int], int, int]:
    """cols' shape (C*HH*WW, N*Ho*Wo) for images of x_shape (N, C, H, W), and Ho, Wo."""
    N, C, H, W = x_shape
    Ho, Wo = out_size(H, HH, stride, pad), out_size(W, WW, stride, pad)
    return (C * HH * WW, N * Ho * Wo), Ho, Wo


def check_cols(
    cols: np.ndarray, shape: tuple[int, ...], HH: int, WW: int, stride: int, pad: int
) -> tuple[int, int]:
    """col2im's input must be im2col's output shape for images of `shape`; returns Ho, Wo."""
    check_float("col2im: cols", cols)
    want, Ho, Wo = im2col_shape(shape, HH, WW, stride, pad)
    if cols.shape != want:
        raise ValueError(
            f"col2im: cols must have shape {want} for {tuple(shape)}, got {cols.shape}"
        )
    return Ho, Wo


def pool_shape(x_shape: tuple[int, ...], size: int, stride: int) -> tuple[int, int, int, int]:
    """The max-pool output shape (N, C, Ho, Wo) for input of x_shape (N, C, H, W)."""
    N, C, H, W = x_shape
    return N, C, out_size(H, size, stride, 0), out_size(W, size, stride, 0)


def check_pool_backward(
    dout: np.ndarray, argmax: np.ndarray, shape: tuple[int, ...], size: int, stride: int
) -> None:
    """dout and argmax must be the forward pass's output shape for input of `shape`, and
    argmax int32 window indices in 0..size*size (size*size: nowhere, after a fused ReLU; a
    bad index would write out of bounds)."""
    check_float("maxpool_backward: dout", dout)
    if argmax.dtype != np.int32 or argmax.shape != dout.shape:
        raise ValueError(
            f"maxpool_backward: argmax must be int32 of dout's shape {dout.shape}, "
            f"got {argmax.dtype} {argmax.shape}"
        )
    if pool_shape(shape, size, stride) != dout.shape:
        raise ValueError(
            f"maxpool_backward: dout shape {dout.shape} does not fit input {tuple(shape)}"
        )
    if argmax.size and (argmax.min() < 0 or argmax.max() > size * size):
        raise ValueError(f"maxpool_backward: argmax values must be in 0..{size * size}")


def direct_pads(fn: str, pad) -> tuple[int, int]:
    """A direct convolution's padding (pad_h, pad_w) from an int or a pair of ints."""
    pair = pad if isinstance(pad, (tuple, list)) else (pad, pad)
    ok = len(pair) == 2 and all(
        isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in pair
    )
    if not ok:
        raise ValueError(f"{fn}: pad must be an int or a pair of ints, got {pad!r}")
    return int(pair[0]), int(pair[1])


def conv_direct_shape(
    fn: str, X: np.ndarray, W: np.ndarray, b: np.ndarray, pad
) -> tuple[tuple[int, int, int, int], int, int]:
    """The stride-1 convolution's output shape (N, F, Ho, Wo) and its (pad_h, pad_w).

    X (N, C, H, W), W (F, C, HH, WW) and b (F,) must share one float dtype; a
    negative pad crops, but every output must see at least one input row/column.
    """
    for name, a, ndim in (("X", X, 4), ("W", W, 4), ("b", b, 1)):
        check_float(f"{fn}: {name}", a)
        if a.ndim != ndim:
            raise ValueError(f"{fn}: {name} must have {ndim} dimensions, got shape {a.shape}")
    if not X.dtype == W.dtype == b.dtype:
        raise TypeError(f"{fn}: X, W, b must share one dtype, got {X.dtype}, {W.dtype}, {b.dtype}")
    (N, C, H, Wd), (F, C2, HH, WW) = X.shape, W.shape
    if C2 != C or b.shape != (F,):
        raise ValueError(
            f"{fn}: W must be (F, {C}, HH, WW) and b (F,), got W {W.shape}, b {b.shape}"
        )
    ph, pw = direct_pads(fn, pad)
    return (N, F, *_direct_out(fn, H, Wd, HH, WW, ph, pw)), ph, pw


def _direct_out(fn: str, H: int, W: int, HH: int, WW: int, ph: int, pw: int) -> tuple[int, int]:
    Ho, Wo = out_size(H, HH, 1, ph), out_size(W, WW, 1, pw)
    if HH < 1 or WW < 1 or Ho < 1 or Wo < 1 or H + ph < 1 or W + pw < 1:
        raise ValueError(
            f"{fn}: filter {HH}x{WW} does not fit input {H}x{W} padded by ({ph}, {pw})"
        )
    return Ho, Wo


def conv_dW_shape(
    fn: str, X: np.ndarray, dout: np.ndarray, HH: int, WW: int, pad
) -> tuple[tuple[int, int, int, int], int, int]:
    """dW's shape (F, C, HH, WW) for conv_direct_dW, and (pad_h, pad_w); dout must be the
    stride-1 convolution's output shape (N, F, Ho, Wo) for X (N, C, H, W)."""
    for name, a in (("X", X), ("dout", dout)):
        check_float(f"{fn}: {name}", a)
        if a.ndim != 4:
            raise ValueError(f"{fn}: {name} must have 4 dimensions, got shape {a.shape}")
    if X.dtype != dout.dtype:
        raise TypeError(f"{fn}: X and dout must share one dtype, got {X.dtype}, {dout.dtype}")
    ph, pw = direct_pads(fn, pad)
    N, C, H, W = X.shape
    Ho, Wo = _direct_out(fn, H, W, HH, WW, ph, pw)
    if dout.shape[0] != N or dout.shape[2:] != (Ho, Wo):
        raise ValueError(
            f"{fn}: dout must have shape ({N}, F, {Ho}, {Wo}) for X {X.shape}, got {dout.shape}"
        )
    return (dout.shape[1], C, HH, WW), ph, pw
