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


def maxpool_forward(
    X: np.ndarray,
    size: int,
    stride: int,
    relu: bool = False,
    out: np.ndarray | None = None,
    argmax: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """X: (N, C, H, W) -> out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int32.

    argmax is the flat index `i * size + j` of the maximum inside each window;
    ties go to the first maximum in row-major window order (a NaN beats any number).
    relu: out is max(0, the maximum) and a window whose maximum is not positive has
    argmax size*size: its gradient goes nowhere. Written into `out`/`argmax` if given.
    """
    ks.check_float("maxpool_forward: X", X)
    N, C, Ho, Wo = pooled = ks.pool_shape(X.shape, size, stride)
    out = ks.output("maxpool_forward", out, pooled, X.dtype)
    argmax = ks.output("maxpool_forward", argmax, pooled, np.int32)
    windows = np.empty((size * size, N, C, Ho, Wo), dtype=X.dtype)
    for i in range(size):
        for j in range(size):
            windows[i * size + j] = X[
                :, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride
            ]
    argmax[...] = windows.argmax(axis=0)
    out[...] = np.take_along_axis(windows, argmax[None].astype(np.intp), axis=0)[0]
    if relu:
        argmax[~(out > 0)] = size * size
        np.maximum(out, out.dtype.type(0), out=out)  # (a NaN stays NaN)
    return out, argmax


def maxpool_backward(
    dout: np.ndarray,
    argmax: np.ndarray,
    shape: tuple[int, int, int, int],
    size: int,
    stride: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Routes dout (N, C, Ho, Wo) to the argmax positions (none for argmax size*size);
    returns dX of `shape` (written into `out` if given)."""
    ks.check_pool_backward(dout, argmax, shape, size, stride)
    Ho, Wo = dout.shape[2], dout.shape[3]
    dX = ks.output("maxpool_backward", out, tuple(shape), dout.dtype)
    dX[...] = 0
    for i in range(size):
        for j in range(size):
            hit = argmax == i * size + j
            dX[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride] += np.where(
                hit, dout, 0
            )
    return dX


def _pad_or_crop(X: np.ndarray, ph: int, pw: int) -> np.ndarray:
    """X (N, C, H, W) zero-padded by ph rows and pw columns on each side (cropped if < 0)."""
    Xp = np.pad(X, ((0, 0), (0, 0), (max(ph, 0),) * 2, (max(pw, 0),) * 2))
    H, W = Xp.shape[2:]
    return Xp[:, :, max(-ph, 0) : H - max(-ph, 0), max(-pw, 0) : W - max(-pw, 0)]


def conv_direct(
    X: np.ndarray, W: np.ndarray, b: np.ndarray, pad, out: np.ndarray | None = None
) -> np.ndarray:
    """Stride-1 cross-correlation: X (N, C, H, W), W (F, C, HH, WW), b (F,) -> (N, F, Ho, Wo).

    pad: an int >= 0 or a pair (pad_h, pad_w); a negative pad crops the input.
    Written into `out` if given.
    """
    shape, ph, pw = ks.conv_direct_shape("conv_direct", X, W, b, pad)
    out = ks.output("conv_direct", out, shape, X.dtype)
    N, F, Ho, Wo = shape
    HH, WW = W.shape[2:]
    cols = im2col(_pad_or_crop(X, ph, pw), HH, WW, 1, 0)  # (C*HH*WW, N*Ho*Wo)
    prod = (W.reshape(F, -1) @ cols).reshape(F, N, Ho, Wo)
    np.add(prod.transpose(1, 0, 2, 3), b[:, None, None], out=out)
    return out


def conv_direct_dW(
    X: np.ndarray, dout: np.ndarray, HH: int, WW: int, pad
) -> tuple[np.ndarray, np.ndarray]:
    """conv_direct's weight and bias gradients: X (N, C, H, W), dout (N, F, Ho, Wo) ->
    dW (F, C, HH, WW), db (F,).

    dW[f, c, i, j] = sum over n, y, x of dout[n, f, y, x] * Xpad[n, c, y + i, x + j];
    db[f] = sum over n, y, x of dout[n, f, y, x].
    """
    shape, ph, pw = ks.conv_dW_shape("conv_direct_dW", X, dout, HH, WW, pad)
    cols = im2col(_pad_or_crop(X, ph, pw), HH, WW, 1, 0)
    dT = dout.transpose(1, 0, 2, 3).reshape(shape[0], -1)  # (F, N*Ho*Wo)
    return (dT @ cols.T).reshape(shape), dT.sum(axis=1)
