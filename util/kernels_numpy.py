"""Plain-numpy twins of the Cython kernels in `_kernels.pyx`.

They define what each kernel computes; tests compare the Cython kernels
against them on random data. They are also the reference path selected with
`util.kernels.use("numpy")`.

Layout of the im2col matrix: `cols[(c, i, j), (n, y, x)]`, i.e. shape
`(C*HH*WW, N*Ho*Wo)`, so that a block of images is one GEMM
`W.reshape(F, -1) @ cols` whose result is `(F, N*Ho*Wo)`.
"""

from __future__ import annotations

import numpy as np

from util import kernel_shapes as ks


def im2col(
    X: np.ndarray, HH: int, WW: int, stride: int, pad: int, out: np.ndarray | None = None
) -> np.ndarray:
    """X: (N, C, H, W) -> cols: (C*HH*WW, N*Ho*Wo), same dtype (written into `out` if given)."""
    ks.check_float("im2col: X", X)
    N, C, H, W = X.shape
    shape, Ho, Wo = ks.im2col_shape(X.shape, HH, WW, stride, pad)
    out = ks.output("im2col", out, shape, X.dtype)
    Xp = np.pad(X, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols6 = out.reshape(C, HH, WW, N, Ho, Wo)
    for i in range(HH):
        for j in range(WW):
            win = Xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
            cols6[:, i, j] = win.transpose(1, 0, 2, 3)  # (C, N, Ho, Wo)
    return out


def col2im(
    cols: np.ndarray,
    shape: tuple[int, int, int, int],
    HH: int,
    WW: int,
    stride: int,
    pad: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Adjoint of im2col: cols (C*HH*WW, N*Ho*Wo) -> dX (N, C, H, W) = `shape`, overlaps summed."""
    Ho, Wo = ks.check_cols(cols, shape, HH, WW, stride, pad)
    N, C, H, W = shape = tuple(shape)
    out = ks.output("col2im", out, shape, cols.dtype)
    cols6 = cols.reshape(C, HH, WW, N, Ho, Wo)
    Xp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for i in range(HH):
        for j in range(WW):
            win = Xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]
            win += cols6[:, i, j].transpose(1, 0, 2, 3)  # (N, C, Ho, Wo)
    out[...] = Xp[:, :, pad : pad + H, pad : pad + W]
    return out


def maxpool_forward(X: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """X: (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int32.

    argmax is the flat index `i * size + j` of the maximum inside each window;
    ties go to the first maximum in row-major window order (a NaN beats any number).
    """
    ks.check_float("maxpool_forward: X", X)
    N, C, Ho, Wo = ks.pool_shape(X.shape, size, stride)
    windows = np.empty((size * size, N, C, Ho, Wo), dtype=X.dtype)
    for i in range(size):
        for j in range(size):
            windows[i * size + j] = X[
                :, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride
            ]
    argmax = windows.argmax(axis=0).astype(np.int32)
    out = np.take_along_axis(windows, argmax[None].astype(np.intp), axis=0)[0]
    return out, argmax


def maxpool_backward(
    dout: np.ndarray, argmax: np.ndarray, shape: tuple[int, int, int, int], size: int, stride: int
) -> np.ndarray:
    """Routes dout (N, C, Ho, Wo) to the argmax positions; returns dX of `shape`."""
    ks.check_pool_backward(dout, argmax, shape, size, stride)
    Ho, Wo = dout.shape[2], dout.shape[3]
    dX = np.zeros(shape, dtype=dout.dtype)
    for i in range(size):
        for j in range(size):
            hit = argmax == i * size + j
            dX[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += np.where(
                hit, dout, 0
            )
    return dX
