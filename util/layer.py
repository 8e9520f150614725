"""The layer library: one forward and one backward function per layer.

Contract (see docs/design.md):
- images are (N, C, H, W), scores (N, K), labels int arrays of length N;
- float32 and float64 are supported and every output has the input's dtype;
- bad arguments raise TypeError/ValueError naming the function, the argument,
  and what was expected vs given;
- functions are pure: arguments are never modified.

`out, cache = f_forward(...)`, `grads = f_backward(dout, cache)`; the cache is
opaque to callers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from util import kernels

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


# --------------------------------------------------------------------------- checks


def _check_array(fn: str, name: str, a: Any, ndim: int | tuple[int, ...] | None = None) -> None:
    """Raises unless `a` is a float32/float64 ndarray of the given rank."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOATS:
        raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {a.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{fn}: {name} must have {want} dimensions, got shape {a.shape}")


def _check_same_dtype(fn: str, **arrays: np.ndarray) -> None:
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        given = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise TypeError(f"{fn}: all arrays must share one dtype, got {given}")


def _check_shape(fn: str, name: str, a: np.ndarray, expected: tuple[int, ...]) -> None:
    if a.shape != tuple(expected):
        raise ValueError(f"{fn}: {name} must have shape {tuple(expected)}, got {a.shape}")


def _check_int(fn: str, name: str, v: Any, minimum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{fn}: {name} must be an integer >= {minimum}, got {v!r}")


# --------------------------------------------------------------------------- linear


def linear_forward(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, tuple]:
    """Fully connected layer.

    X: (N, d1, ..., dk) float, flattened to (N, D) with D = d1*...*dk
    W: (D, K), b: (K,) of X's dtype
    Returns out: (N, K) and a cache for linear_backward.
    """
    fn = "linear_forward"
    _check_array(fn, "X", X)
    _check_array(fn, "W", W, 2)
    _check_array(fn, "b", b, 1)
    _check_same_dtype(fn, X=X, W=W, b=b)
    if X.ndim < 2:
        raise ValueError(f"{fn}: X must be (N, ...) with at least 2 dimensions, got {X.shape}")
    D = int(np.prod(X.shape[1:]))
    _check_shape(fn, "W", W, (D, W.shape[1]))
    _check_shape(fn, "b", b, (W.shape[1],))
    X2 = X.reshape(X.shape[0], D)
    return X2 @ W + b, (X, W)


def linear_backward(
    dout: np.ndarray, cache: tuple, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dout: (N, K) -> dX (X's shape), dW (D, K), db (K,).

    input_grad=False skips dX (returned as None): a network's first layer needs none."""
    X, W = cache
    fn = "linear_backward"
    _check_array(fn, "dout", dout, 2)
    _check_same_dtype(fn, dout=dout, X=X)
    _check_shape(fn, "dout", dout, (X.shape[0], W.shape[1]))
    X2 = X.reshape(X.shape[0], -1)
    dX = (dout @ W.T).reshape(X.shape) if input_grad else None
    return dX, X2.T @ dout, dout.sum(axis=0)


# --------------------------------------------------------------------------- ReLU


# Elements per block of the elementwise layers: a block's operands (and numpy's temporary
# mask) stay in L2 while both cores work on a big batch (kernels.parallel_blocks).
ELEMENTWISE_BLOCK = 1 << 17


def _elementwise(fn, out: np.ndarray, *arrays: np.ndarray) -> np.ndarray:
    """fn(*blocks, out=block) over flat blocks of the arrays, on as many threads as BLAS may
    use; returns out."""
    flat = [a.reshape(-1) for a in (*arrays, out)]

    def work(starts: list[int]) -> None:
        for i in starts:
            *ins, o = (a[i : i + ELEMENTWISE_BLOCK] for a in flat)
            fn(*ins, out=o)

    kernels.parallel_blocks(out.size, ELEMENTWISE_BLOCK, work)
    return out


def _relu(x: np.ndarray, out: np.ndarray) -> None:
    np.maximum(x, x.dtype.type(0), out=out)  # numpy 1.x makes max(0-d float32, 0) float64


def _relu_grad(dout: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    np.multiply(dout, y > 0, out=out)  # a multiply by the mask is ~5x faster than np.where


def relu_forward(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise max(X, 0). X: any shape, float. Returns out (X's shape) and a cache."""
    _check_array("relu_forward", "X", X)
    out = _elementwise(_relu, np.empty(X.shape, X.dtype), np.ascontiguousarray(X))
    return out, out


def relu_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """dout: the forward output's shape -> dX; gradient flows where the output was positive."""
    fn = "relu_backward"
    _check_array(fn, "dout", dout)
    _check_same_dtype(fn, dout=dout, cache=cache)
    _check_shape(fn, "dout", dout, cache.shape)
    return _elementwise(
        _relu_grad, np.empty(dout.shape, dout.dtype), np.ascontiguousarray(dout), cache
    )


# --------------------------------------------------------------------------- convolution

# Images per call of the direct kernels: their scratch holds a few images at a time, so a
# block only needs to amortise a call (and dW's final sum over SIMD lanes). 256 rather than
# 64: a loss_and_grads sub-batch (about 80 CNN images) is then one call per kernel, not
# two; 1.4-3.5 % faster float32 steps in four alternations, the bare layers unchanged.
DIRECT_BLOCK = 256


def _direct_block(N: int) -> int:
    """Images per block of the direct kernels, so that every BLAS thread gets blocks."""
    return max(1, min(DIRECT_BLOCK, -(-N // kernels.blas_threads())))


def conv_forward(
    X: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, tuple]:
    """2-D convolution (cross-correlation): direct kernels for stride 1, else im2col + GEMM.

    X: (N, C, H, W), W: (F, C, HH, WW), b: (F,), all one float dtype
    Returns out: (N, F, Ho, Wo) with Ho = (H + 2*pad - HH) // stride + 1 (same for Wo).
    """
    fn = "conv_forward"
    _check_array(fn, "X", X, 4)
    _check_array(fn, "W", W, 4)
    _check_array(fn, "b", b, 1)
    _check_same_dtype(fn, X=X, W=W, b=b)
    _check_int(fn, "stride", stride, 1)
    _check_int(fn, "pad", pad, 0)
    N, C, H, Wd = X.shape
    F, _, HH, WW = W.shape
    _check_shape(fn, "W", W, (F, C, HH, WW))
    _check_shape(fn, "b", b, (F,))
    if H + 2 * pad < HH or Wd + 2 * pad < WW:
        raise ValueError(
            f"{fn}: filter {HH}x{WW} is larger than the padded input {H + 2 * pad}x{Wd + 2 * pad}"
        )
    Ho, Wo = kernels.out_size(H, HH, stride, pad), kernels.out_size(Wd, WW, stride, pad)
    K, P = C * HH * WW, Ho * Wo
    X = np.ascontiguousarray(X)
    out = np.empty((N, F, Ho, Wo), dtype=X.dtype)
    if stride == 1:
        # Direct convolution (no im2col, no BLAS), a block of images per call on each thread.
        B = _direct_block(N)

        def direct(starts: list[int]) -> None:
            for n0 in starts:
                kernels.conv_direct(X[n0 : n0 + B], W, b, pad, out=out[n0 : n0 + B])

        kernels.parallel_blocks(N, B, direct)
        return out, (X, W, stride, pad)
    W2 = W.reshape(F, K)
    out3 = out.reshape(N, F, P)
    # Block by block: a block's im2col matrix stays in cache for the GEMM, which then
    # runs ~2x faster than on a whole-batch matrix; the buffers are reused.
    B = kernels.block_images(N, K * P * X.itemsize)

    def work(starts: list[int]) -> None:
        cols_buf = np.empty(K * B * P, dtype=X.dtype)
        prod_buf = np.empty(F * B * P, dtype=X.dtype)
        for n0 in starts:
            nb = min(B, N - n0)
            cols = kernels.im2col(
                X[n0 : n0 + nb], HH, WW, stride, pad, out=cols_buf[: K * nb * P].reshape(K, nb * P)
            )
            prod = np.matmul(W2, cols, out=prod_buf[: F * nb * P].reshape(F, nb * P))
            # (F, nb, P) -> (nb, F, P), adding the bias on the way.
            np.add(prod.reshape(F, nb, P).transpose(1, 0, 2), b[:, None], out=out3[n0 : n0 + nb])

    kernels.parallel_blocks(N, B, work)
    # Backward recomputes each block's im2col from X (cheaper than storing the
    # C*HH*WW times larger cols matrix); X is kept by reference, never modified.
    return out, (X, W, stride, pad)


def conv_backward(
    dout: np.ndarray, cache: tuple, input_grad: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """dout: (N, F, Ho, Wo) -> dX (N, C, H, W), dW (F, C, HH, WW), db (F,).

    input_grad=False skips dX (returned as None) and its GEMM and col2im: a
    network's first layer needs no gradient for the images."""
    X, W, stride, pad = cache
    fn = "conv_backward"
    _check_array(fn, "dout", dout, 4)
    _check_same_dtype(fn, dout=dout, W=W)
    N, C, H, Wd = X.shape
    F, _, HH, WW = W.shape
    Ho, Wo = kernels.out_size(H, HH, stride, pad), kernels.out_size(Wd, WW, stride, pad)
    _check_shape(fn, "dout", dout, (N, F, Ho, Wo))
    if stride == 1:
        return _conv_backward_direct(np.ascontiguousarray(dout), X, W, pad, input_grad)
    K, P = C * HH * WW, Ho * Wo
    d3 = np.ascontiguousarray(dout).reshape(N, F, P)
    W2T = W.reshape(F, K).T
    dX = np.empty(X.shape, dtype=dout.dtype) if input_grad else None
    # Block by block as in conv_forward; one buffer holds first the block's
    # recomputed im2col matrix, then its gradient dcols.
    B = kernels.block_images(N, K * P * dout.itemsize)

    def work(starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        dW = np.zeros((F, K), dtype=dout.dtype)
        db = np.zeros(F, dtype=dout.dtype)
        cols_buf = np.empty(K * B * P, dtype=dout.dtype)
        dT_buf = np.empty(F * B * P, dtype=dout.dtype)
        dW_blk = np.empty((F, K), dtype=dout.dtype)
        for n0 in starts:
            nb = min(B, N - n0)
            dT = dT_buf[: F * nb * P].reshape(F, nb * P)
            np.copyto(dT.reshape(F, nb, P), d3[n0 : n0 + nb].transpose(1, 0, 2))
            db += dT.sum(axis=1)
            cols = kernels.im2col(
                X[n0 : n0 + nb], HH, WW, stride, pad, out=cols_buf[: K * nb * P].reshape(K, nb * P)
            )
            dW += np.matmul(dT, cols.T, out=dW_blk)
            if dX is not None:
                dcols = np.matmul(W2T, dT, out=cols)  # (K, nb*P), overwrites the block's cols
                kernels.col2im(dcols, (nb, C, H, Wd), HH, WW, stride, pad, out=dX[n0 : n0 + nb])
        return dW, db

    dW, db = _sum_in_order(kernels.parallel_blocks(N, B, work))
    return dX, dW.reshape(W.shape), db


def _sum_in_order(partial: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The per-thread (dW, db) of parallel_blocks added in thread order: reproducible sums."""
    dW, db = partial[0]
    for dW_t, db_t in partial[1:]:
        dW = dW + dW_t
        db = db + db_t
    return dW, db


def _conv_backward_direct(
    dout: np.ndarray, X: np.ndarray, W: np.ndarray, pad: int, input_grad: bool
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """conv_backward for stride 1 by the direct kernels; dout (N, F, Ho, Wo) C-contiguous.

    dX is a stride-1 convolution of dout, padded by HH-1-pad (a negative pad crops),
    with the filters flipped in both spatial axes and F and C swapped."""
    N, C, H, Wd = X.shape
    F, _, HH, WW = W.shape
    dX = np.empty(X.shape, dtype=dout.dtype) if input_grad else None
    W_flip = np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C, F, HH, WW)
    zero = np.zeros(C, dtype=dout.dtype)
    B = _direct_block(N)

    def work(starts: list[int]) -> tuple[np.ndarray, np.ndarray]:
        dW = np.zeros(W.shape, dtype=dout.dtype)
        db = np.zeros(F, dtype=dout.dtype)
        for n0 in starts:
            d_blk = dout[n0 : n0 + B]
            dW_blk, db_blk = kernels.conv_direct_dW(X[n0 : n0 + B], d_blk, HH, WW, pad)
            dW += dW_blk
            db += db_blk
            if dX is not None:
                pads = (HH - 1 - pad, WW - 1 - pad)
                kernels.conv_direct(d_blk, W_flip, zero, pads, out=dX[n0 : n0 + B])
        return dW, db

    dW, db = _sum_in_order(kernels.parallel_blocks(N, B, work))
    return dX, dW, db


# --------------------------------------------------------------------------- max-pool


# Images per block of the max-pool layers on a big batch (kernels.parallel_blocks): a
# block's input (128 KB per CNN image in float64) stays in L2 while both cores work.
POOL_BLOCK_BYTES = 1 << 20


def _pool_forward(fn: str, X: np.ndarray, size: int, stride: int, relu: bool):
    _check_array(fn, "X", X, 4)
    _check_int(fn, "size", size, 1)
    _check_int(fn, "stride", stride, 1)
    if X.shape[2] < size or X.shape[3] < size:
        raise ValueError(f"{fn}: window {size}x{size} is larger than the input {X.shape[2:]}")
    X = np.ascontiguousarray(X)
    shape = kernels.pool_shape(X.shape, size, stride)
    out, argmax = np.empty(shape, X.dtype), np.empty(shape, np.int32)
    B = kernels.block_images(len(X), X[0].nbytes if len(X) else 1, POOL_BLOCK_BYTES)

    def work(starts: list[int]) -> None:
        for n0 in starts:
            b = slice(n0, n0 + B)
            kernels.maxpool_forward(X[b], size, stride, relu, out=out[b], argmax=argmax[b])

    kernels.parallel_blocks(len(X), B, work)
    return out, (X.shape, X.dtype, argmax, size, stride)


def maxpool_forward(X: np.ndarray, size: int = 2, stride: int = 2) -> tuple[np.ndarray, tuple]:
    """Max over size x size windows. X: (N, C, H, W) -> out (N, C, Ho, Wo)."""
    return _pool_forward("maxpool_forward", X, size, stride, relu=False)


def maxpool_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dout: (N, C, Ho, Wo) -> dX (N, C, H, W); each gradient goes to its window's maximum."""
    x_shape, x_dtype, argmax, size, stride = cache
    fn = "maxpool_backward"
    _check_array(fn, "dout", dout, 4)
    if dout.dtype != x_dtype:
        raise TypeError(
            f"{fn}: dout must have the forward input's dtype {x_dtype}, got {dout.dtype}"
        )
    _check_shape(fn, "dout", dout, argmax.shape)
    dout = np.ascontiguousarray(dout)
    dX = np.empty(x_shape, dout.dtype)
    N = x_shape[0]
    B = kernels.block_images(N, dX[0].nbytes if N else 1, POOL_BLOCK_BYTES)

    def work(starts: list[int]) -> None:
        for n0 in starts:
            b = slice(n0, n0 + B)
            shape = (min(B, N - n0), *x_shape[1:])
            kernels.maxpool_backward(dout[b], argmax[b], shape, size, stride, out=dX[b])

    kernels.parallel_blocks(N, B, work)
    return dX


def maxpool_relu_forward(X: np.ndarray, size: int = 2, stride: int = 2) -> tuple[np.ndarray, tuple]:
    """ReLU of the max over size x size windows in one pass: X (N, C, H, W) -> out (N, C,
    Ho, Wo), equal to relu_forward(maxpool_forward(X)) and so to maxpool_forward(
    relu_forward(X)) (pooling and ReLU commute), with ReLU's work on the pooled array."""
    return _pool_forward("maxpool_relu_forward", X, size, stride, relu=True)


def maxpool_relu_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """dout: (N, C, Ho, Wo) -> dX (N, C, H, W): each gradient goes to its window's maximum
    if that was positive (else nowhere), in one pass."""
    return maxpool_backward(dout, cache)


# --------------------------------------------------------------------------- batch norm

BATCHNORM_EPS = 1e-5


def channel_moments(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel sum and sum of squares of X (N, C, H, W), each (C,) float64, accumulated in
    float64 so that sums over many images keep their digits."""
    X3 = X.reshape(X.shape[0], X.shape[1], -1)
    s = X3.sum(axis=(0, 2), dtype=np.float64)
    ss = np.einsum("nci,nci->c", X3, X3, dtype=np.float64)
    return s, ss


def batchnorm_forward(
    X: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = BATCHNORM_EPS
) -> tuple[np.ndarray, tuple]:
    """Batch normalisation in training mode: each channel of X standardised with the mean and
    (biased) variance of that channel over the whole batch (N, H and W), then scaled by gamma
    and shifted by beta.

    X: (N, C, H, W), gamma, beta: (C,), all one float dtype, N*H*W >= 2.
    Returns out: X's shape and a cache for batchnorm_backward. With the statistics of the
    images it is used on, the layer is the affine map out = a*X + c per channel, so a
    trained network folds it into the layer before it (`util.network.fold_batchnorm`).
    """
    fn = "batchnorm_forward"
    _check_array(fn, "X", X, 4)
    _check_array(fn, "gamma", gamma, 1)
    _check_array(fn, "beta", beta, 1)
    _check_same_dtype(fn, X=X, gamma=gamma, beta=beta)
    N, C, H, Wd = X.shape
    _check_shape(fn, "gamma", gamma, (C,))
    _check_shape(fn, "beta", beta, (C,))
    M = N * H * Wd
    if M < 2:
        raise ValueError(f"{fn}: X must hold at least 2 values per channel, got shape {X.shape}")
    mean = channel_moments(X)[0] / M
    xc = X - mean.astype(X.dtype)[:, None, None]
    var = channel_moments(xc)[1] / M  # two passes: no cancellation when |mean| >> std
    inv_std = (1.0 / np.sqrt(var + eps)).astype(X.dtype)
    xhat = xc * inv_std[:, None, None]  # (N, C, H, W)
    out = xhat * gamma[:, None, None] + beta[:, None, None]
    return out, (xhat, inv_std, gamma)


def batchnorm_backward(dout: np.ndarray, cache: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dout: (N, C, H, W) -> dX (N, C, H, W), dgamma (C,), dbeta (C,).

    With M = N*H*W values per channel: dX = gamma/std * (dout - mean(dout) - xhat *
    mean(dout * xhat)), the means per channel (the batch statistics depend on every X)."""
    xhat, inv_std, gamma = cache
    fn = "batchnorm_backward"
    _check_array(fn, "dout", dout, 4)
    _check_same_dtype(fn, dout=dout, xhat=xhat)
    _check_shape(fn, "dout", dout, xhat.shape)
    N, C, H, Wd = dout.shape
    M = N * H * Wd
    d3, x3 = dout.reshape(N, C, -1), xhat.reshape(N, C, -1)
    dbeta = d3.sum(axis=(0, 2), dtype=np.float64)
    dgamma = np.einsum("nci,nci->c", d3, x3, dtype=np.float64)
    dt = dout.dtype
    mean_d = (dbeta / M).astype(dt)[:, None, None]
    mean_dx = (dgamma / M).astype(dt)[:, None, None]
    dX = (dout - mean_d - xhat * mean_dx) * (gamma * inv_std)[:, None, None]
    return dX, dgamma.astype(dt), dbeta.astype(dt)


# --------------------------------------------------------------------------- loss


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise log of the softmax probabilities of scores (N, K), computed stably."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_loss(
    scores: np.ndarray, y: np.ndarray, reduction: str = "mean"
) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy.

    scores: (N, K) float; y: (N,) integer labels in 0..K-1, or (N, K) float target
    probabilities per image ("soft labels": label smoothing, distillation; the loss is
    then -sum(y * log softmax(scores)) and the gradient softmax(scores) - y).
    reduction="mean" averages loss and gradient over N; "sum" sums them (the
    Spark versions sum per chunk and divide once on the driver).
    Returns (loss: float, dscores: (N, K) of scores' dtype).
    """
    fn = "softmax_loss"
    _check_array(fn, "scores", scores, 2)
    N, K = scores.shape
    soft = isinstance(y, np.ndarray) and y.ndim == 2 and y.dtype.kind == "f"
    if not soft and (not isinstance(y, np.ndarray) or y.dtype.kind not in "iu"):
        got = y.dtype if isinstance(y, np.ndarray) else type(y).__name__
        raise TypeError(
            f"{fn}: y must be an integer numpy array (or (N, K) float target probabilities), "
            f"got {got}"
        )
    _check_shape(fn, "y", y, (N, K) if soft else (N,))
    if not K:
        raise ValueError(f"{fn}: scores must have at least one class, got shape {scores.shape}")
    if not soft and N and (y.min() < 0 or y.max() >= K):
        raise ValueError(f"{fn}: labels must be in 0..{K - 1}, got values {y.min()}..{y.max()}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    log_probs = log_softmax(scores)
    dscores = np.exp(log_probs)
    if soft:
        loss = -float((y * log_probs).sum())
        dscores -= y
    else:
        rows = np.arange(N)
        loss = -float(log_probs[rows, y].sum())
        dscores[rows, y] -= 1
    if reduction == "mean":
        loss /= max(N, 1)
        dscores /= max(N, 1)
    return loss, dscores
