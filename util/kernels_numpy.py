"""Plain-numpy twins of the Cython kernels in `_kernels.pyx`.

They define what each kernel computes; tests compare the Cython kernels
against them on random data. They are also the fallback path selected with
`util.kernels.use("numpy")`.

Layout of the im2col matrix: `cols[n, (c, i, j), (y, x)]`, i.e. shape
`(N, C*HH*WW, Ho*Wo)`, so that `W.reshape(F, -1) @ cols[n]` is image n's
output in NCHW order without a transpose.
"""

from __future__ import annotations

import numpy as np


def out_size(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a window of width k sliding over size + 2*pad."""
    return (size + 2 * pad - k) // stride + 1


def im2col(X: np.ndarray, HH: int, WW: int, stride: int, pad: int) -> np.ndarray:
    """X: (N, C, H, W) -> cols: (N, C*HH*WW, Ho*Wo), same dtype."""
    N, C, H, W = X.shape
    Ho, Wo = out_size(H, HH, stride, pad), out_size(W, WW, stride, pad)
    Xp = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((N, C, HH, WW, Ho, Wo), dtype=X.dtype)
    for i in range(HH):
        for j in range(WW):
            cols[:, :, i, j] = Xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
    return cols.reshape(N, C * HH * WW, Ho * Wo)


def col2im(
    cols: np.ndarray, shape: tuple[int, int, int, int], HH: int, WW: int, stride: int, pad: int
) -> np.ndarray:
    """Adjoint of im2col: cols (N, C*HH*WW, Ho*Wo) -> dX (N, C, H, W), summing overlaps."""
    N, C, H, W = shape
    Ho, Wo = out_size(H, HH, stride, pad), out_size(W, WW, stride, pad)
    cols6 = cols.reshape(N, C, HH, WW, Ho, Wo)
    Xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(HH):
        for j in range(WW):
            Xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += cols6[:, :, i, j]
    return Xp[:, :, pad : pad + H, pad : pad + W].copy()


def maxpool_forward(X: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """X: (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int32.

    argmax is the flat index `i * size + j` of the maximum inside each window;
    ties go to the first maximum in row-major window order.
    """
    N, C, H, W = X.shape
    Ho, Wo = out_size(H, size, stride, 0), out_size(W, size, stride, 0)
    windows = np.empty((size * size, N, C, Ho, Wo), dtype=X.dtype)
    for i in range(size):
        for j in range(size):
            windows[i * size + j] = X[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
    argmax = windows.argmax(axis=0).astype(np.int32)
    out = np.take_along_axis(windows, argmax[None].astype(np.intp), axis=0)[0]
    return out, argmax


def maxpool_backward(
    dout: np.ndarray, argmax: np.ndarray, shape: tuple[int, int, int, int], size: int, stride: int
) -> np.ndarray:
    """Routes dout (N, C, Ho, Wo) to the argmax positions; returns dX of `shape`."""
    N, C, H, W = shape
    Ho, Wo = dout.shape[2], dout.shape[3]
    dX = np.zeros(shape, dtype=dout.dtype)
    for i in range(size):
        for j in range(size):
            hit = argmax == i * size + j
            dX[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += np.where(
                hit, dout, 0
            )
    return dX
