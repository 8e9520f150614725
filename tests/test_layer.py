"""The layer functions: gradient checks, dtypes, purity and argument errors."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from util import kernels, layer
from util.numerics import rel_error

RNG = np.random.default_rng(1234)


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f() / d x by central differences; x is perturbed in place and restored."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def check_gradient(
    f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, tol: float = 1e-7
) -> float:
    """Asserts that `analytic` matches the numerical gradient of f at x; returns the error."""
    assert analytic.shape == x.shape, f"gradient shape {analytic.shape} != {x.shape}"
    err = rel_error(numerical_gradient(f, x), analytic)
    assert err < tol, f"relative error {err:.3e} >= {tol:.0e}"
    return err


def projected(forward, *args, R=None):
    """f() = sum(forward(*args)[0] * R): its gradient w.r.t. the output is R."""
    out = forward(*args)[0]
    return float(np.sum(out * R))


# (N, D, K) including batch 1 and odd sizes
LINEAR_SHAPES = [(1, 7, 3), (4, 5, 6), (3, (2, 3, 5), 4)]


@pytest.mark.parametrize("N,D,K", LINEAR_SHAPES)
def test_linear_gradients(N, D, K):
    xshape = (N, *D) if isinstance(D, tuple) else (N, D)
    X = RNG.standard_normal(xshape)
    W = RNG.standard_normal((int(np.prod(xshape[1:])), K))
    b = RNG.standard_normal(K)
    R = RNG.standard_normal((N, K))
    out, cache = layer.linear_forward(X, W, b)
    dX, dW, db = layer.linear_backward(R, cache)
    assert dX.shape == X.shape
    for x, g in ((X, dX), (W, dW), (b, db)):
        check_gradient(lambda: projected(layer.linear_forward, X, W, b, R=R), x, g)


def test_backward_without_input_gradient_gives_the_same_weight_gradients():
    """input_grad=False (a network's first layer) skips dX only."""
    X = RNG.standard_normal((3, 2, 8, 8))
    W, b = RNG.standard_normal((4, 2, 3, 3)), RNG.standard_normal(4)
    out, cache = layer.conv_forward(X, W, b, 1, 1)
    R = RNG.standard_normal(out.shape)
    full, skipped = layer.conv_backward(R, cache), layer.conv_backward(R, cache, input_grad=False)
    assert skipped[0] is None
    assert np.array_equal(full[1], skipped[1]) and np.array_equal(full[2], skipped[2])
    out, cache = layer.linear_forward(X, RNG.standard_normal((128, 5)), RNG.standard_normal(5))
    R = RNG.standard_normal(out.shape)
    full, skipped = layer.linear_backward(R, cache), layer.linear_backward(R, cache, False)
    assert skipped[0] is None
    assert np.array_equal(full[1], skipped[1]) and np.array_equal(full[2], skipped[2])


@pytest.mark.parametrize("shape", [(1, 1), (2, 3, 5, 7), (4, 9)])
def test_relu_gradients(shape):
    X = RNG.standard_normal(shape)
    X[np.abs(X) < 1e-3] = 0.5  # keep away from the kink
    R = RNG.standard_normal(shape)
    out, cache = layer.relu_forward(X)
    check_gradient(lambda: projected(layer.relu_forward, X, R=R), X, layer.relu_backward(R, cache))


CONV_CASES = [
    # (N, C, H, W), (F, HH, WW), stride, pad
    ((1, 1, 5, 5), (1, 3, 3), 1, 0),
    ((2, 3, 7, 6), (4, 3, 3), 1, 1),
    ((3, 2, 8, 8), (3, 5, 5), 1, 2),
    ((2, 3, 9, 7), (2, 3, 2), 2, 1),
    ((1, 3, 6, 6), (5, 1, 1), 1, 0),
    ((2, 2, 4, 5), (3, 3, 3), 1, 3),  # pad > HH - 1: dX's convolution crops
    ((1, 2, 2, 3), (2, 5, 5), 1, 2),  # image smaller than the filter
    ((2, 2, 5, 6), (5, 3, 1), 1, 1),  # F not a multiple of the 4-filter tile
]


@pytest.mark.parametrize("xshape,wshape,stride,pad", CONV_CASES)
def test_conv_gradients(xshape, wshape, stride, pad):
    N, C = xshape[:2]
    F, HH, WW = wshape
    X = RNG.standard_normal(xshape)
    W = RNG.standard_normal((F, C, HH, WW))
    b = RNG.standard_normal(F)
    out, cache = layer.conv_forward(X, W, b, stride, pad)
    R = RNG.standard_normal(out.shape)
    dX, dW, db = layer.conv_backward(R, cache)
    for x, g in ((X, dX), (W, dW), (b, db)):
        check_gradient(lambda: projected(layer.conv_forward, X, W, b, stride, pad, R=R), x, g)


def _im2col_conv_backward(dout, X, W, pad):
    """dX, dW, db of a stride-1 convolution by im2col + GEMM + col2im (the stride > 1 path)."""
    N, C, H, Wd = X.shape
    F, _, HH, WW = W.shape
    cols = kernels.im2col(X, HH, WW, 1, pad)  # (C*HH*WW, N*Ho*Wo)
    dT = dout.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*Ho*Wo)
    dX = kernels.col2im(W.reshape(F, -1).T @ dT, X.shape, HH, WW, 1, pad)
    return dX, (dT @ cols.T).reshape(W.shape), dT.sum(axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "xshape,wshape,pad",
    [
        ((3, 16, 16, 16), (20, 5, 5), 2),
        ((4, 20, 8, 8), (20, 5, 5), 2),
        ((2, 3, 7, 9), (6, 3, 2), 4),
    ],
)
def test_direct_conv_backward_matches_im2col(xshape, wshape, pad, dtype):
    """Stride 1 (direct kernels) against im2col + GEMM + col2im, in both dtypes."""
    X = RNG.standard_normal(xshape).astype(dtype)
    W = RNG.standard_normal((wshape[0], xshape[1], *wshape[1:])).astype(dtype)
    out, cache = layer.conv_forward(X, W, np.zeros(wshape[0], dtype), 1, pad)
    R = RNG.standard_normal(out.shape).astype(dtype)
    want_all = _im2col_conv_backward(R, X, W, pad)
    for got, want in zip(layer.conv_backward(R, cache), want_all, strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        assert rel_error(got, want) < (1e-5 if dtype == np.float32 else 1e-12)


def test_conv_matches_direct_sum():
    """The im2col convolution equals the definition, written as explicit loops."""
    X = RNG.standard_normal((2, 3, 6, 5))
    W = RNG.standard_normal((4, 3, 3, 3))
    b = RNG.standard_normal(4)
    out, _ = layer.conv_forward(X, W, b, stride=2, pad=1)
    Xp = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros_like(out)
    for n in range(2):
        for f in range(4):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    patch = Xp[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                    ref[n, f, i, j] = np.sum(patch * W[f]) + b[f]
    assert rel_error(out, ref) < 1e-14


@pytest.mark.parametrize(
    "xshape,size,stride", [((1, 1, 2, 2), 2, 2), ((2, 3, 8, 6), 2, 2), ((2, 2, 7, 7), 3, 2)]
)
def test_maxpool_gradients(xshape, size, stride):
    # distinct values so the maximum of each window is unique and stable under +-h
    X = RNG.permutation(np.prod(xshape)).reshape(xshape).astype(np.float64) * 1e-2
    out, cache = layer.maxpool_forward(X, size, stride)
    R = RNG.standard_normal(out.shape)
    dX = layer.maxpool_backward(R, cache)
    check_gradient(lambda: projected(layer.maxpool_forward, X, size, stride, R=R), X, dX)


@pytest.mark.parametrize("xshape", [(1, 2, 1, 3), (4, 3, 2, 2), (3, 5, 3, 4)])
def test_batchnorm_gradients(xshape):
    """dX, dgamma and dbeta by central differences, batch of one image included (the
    statistics are over N, H and W)."""
    X = RNG.standard_normal(xshape) * 3 + 2
    gamma, beta = RNG.standard_normal(xshape[1]), RNG.standard_normal(xshape[1])
    R = RNG.standard_normal(xshape)
    _, cache = layer.batchnorm_forward(X, gamma, beta)
    dX, dgamma, dbeta = layer.batchnorm_backward(R, cache)
    f = lambda: projected(layer.batchnorm_forward, X, gamma, beta, R=R)  # noqa: E731
    check_gradient(f, X, dX, tol=1e-6)
    check_gradient(f, gamma, dgamma)
    check_gradient(f, beta, dbeta)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_standardises_each_channel_over_the_batch(dtype):
    """gamma 1, beta 0: every channel has mean 0 and variance 1 over (N, H, W) (up to eps),
    even with a mean far larger than the spread (the variance is taken about the mean)."""
    X = (RNG.standard_normal((6, 3, 5, 5)) * [[[0.5]], [[2.0]], [[0.1]]] + 1e3).astype(dtype)
    out, _ = layer.batchnorm_forward(X, np.ones(3, dtype), np.zeros(3, dtype))
    tol = 1e-3 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=tol)
    expected = [v / (v + layer.BATCHNORM_EPS) for v in X.astype(np.float64).var(axis=(0, 2, 3))]
    np.testing.assert_allclose(out.astype(np.float64).var(axis=(0, 2, 3)), expected, rtol=tol)
    shifted, _ = layer.batchnorm_forward(X, 2 * np.ones(3, dtype), np.full(3, 5, dtype))
    np.testing.assert_allclose(shifted, 2 * out + 5, rtol=tol, atol=tol)


@pytest.mark.parametrize("N,K", [(1, 2), (5, 10), (7, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_loss_gradients(N, K, reduction):
    scores = RNG.standard_normal((N, K))
    y = RNG.integers(0, K, N)
    loss, dscores = layer.softmax_loss(scores, y, reduction)
    check_gradient(lambda: layer.softmax_loss(scores, y, reduction)[0], scores, dscores)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_softmax_loss_with_soft_labels(reduction):
    """(N, K) target probabilities: the gradient checks numerically, one-hot rows give the
    integer labels' loss and gradient, and a mixed target is the mix of both losses."""
    scores = RNG.standard_normal((6, 4))
    q = RNG.dirichlet(np.ones(4), 6)
    loss, dscores = layer.softmax_loss(scores, q, reduction)
    check_gradient(lambda: layer.softmax_loss(scores, q, reduction)[0], scores, dscores)
    y = RNG.integers(0, 4, 6)
    hard = layer.softmax_loss(scores, y, reduction)
    onehot = layer.softmax_loss(scores, np.eye(4)[y], reduction)
    assert onehot[0] == pytest.approx(hard[0]) and np.allclose(onehot[1], hard[1])
    mixed = layer.softmax_loss(scores, 0.3 * np.eye(4)[y] + 0.7 * q, reduction)[0]
    assert mixed == pytest.approx(0.3 * hard[0] + 0.7 * loss)
    assert layer.softmax_loss(scores.astype(np.float32), q, reduction)[1].dtype == np.float32


def test_softmax_loss_value():
    """Uniform scores give log K per image; sum is N times mean."""
    scores = np.zeros((4, 10))
    y = np.array([0, 3, 9, 2])
    assert layer.softmax_loss(scores, y)[0] == pytest.approx(np.log(10))
    assert layer.softmax_loss(scores, y, "sum")[0] == pytest.approx(4 * np.log(10))
    big = np.array([[1000.0, 0.0]])  # no overflow
    assert layer.softmax_loss(big, np.array([0]))[0] == pytest.approx(0.0)


def test_gradient_check_catches_a_wrong_gradient():
    """The checker itself can fail: a transposed-and-rescaled dW is rejected."""
    X = RNG.standard_normal((3, 4))
    W = RNG.standard_normal((4, 4))
    b = RNG.standard_normal(4)
    R = RNG.standard_normal((3, 4))
    _, dW, _ = layer.linear_backward(R, layer.linear_forward(X, W, b)[1])
    with pytest.raises(AssertionError, match="relative error"):
        check_gradient(lambda: projected(layer.linear_forward, X, W, b, R=R), W, dW.T)
    with pytest.raises(AssertionError, match="relative error"):
        check_gradient(lambda: projected(layer.linear_forward, X, W, b, R=R), W, dW * 1.001)


# --------------------------------------------------------------------------- dtype and purity


def _all_layers(dtype):
    """(name, forward output, gradients) for every layer on dtype input."""
    X = RNG.standard_normal((2, 3, 8, 8)).astype(dtype)
    W = RNG.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = RNG.standard_normal(4).astype(dtype)
    results = {}
    out, c = layer.conv_forward(X, W, b, 1, 1)
    results["conv"] = (out, layer.conv_backward(np.ones_like(out), c))
    out, c = layer.relu_forward(X)
    results["relu"] = (out, (layer.relu_backward(np.ones_like(out), c),))
    out, c = layer.maxpool_forward(X, 2, 2)
    results["maxpool"] = (out, (layer.maxpool_backward(np.ones_like(out), c),))
    Wl = RNG.standard_normal((192, 5)).astype(dtype)
    out, c = layer.linear_forward(X, Wl, b[:5] if len(b) >= 5 else np.zeros(5, dtype))
    results["linear"] = (out, layer.linear_backward(np.ones_like(out), c))
    loss, d = layer.softmax_loss(out, np.array([0, 4]))
    results["softmax"] = (d, ())
    out, c = layer.batchnorm_forward(X, b[:3], b[1:])
    results["batchnorm"] = (out, layer.batchnorm_backward(np.ones_like(out), c))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_outputs_keep_the_input_dtype(dtype):
    for name, (out, grads) in _all_layers(dtype).items():
        assert out.dtype == dtype, name
        for g in grads:
            assert g.dtype == dtype, name


def arrays_in(value) -> list[np.ndarray]:
    """Every numpy array inside an argument: itself, or inside (nested) tuples, lists, dicts."""
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in arrays_in(v)]
    return []


def assert_pure(fn: Callable, *args) -> None:
    """fn(*args) must leave every array in its arguments (caches included) unchanged."""
    arrays = arrays_in(args)
    before = [a.copy() for a in arrays]
    fn(*args)
    pairs = enumerate(zip(arrays, before, strict=True))
    changed = [i for i, (a, b) in pairs if not np.array_equal(a, b, equal_nan=True)]
    assert not changed, f"{fn.__name__} modified argument arrays {changed} of {len(arrays)}"


def layer_calls() -> dict[str, tuple[Callable, tuple]]:
    """Each layer function with valid arguments (backward ones with their forward's cache)."""
    X = RNG.standard_normal((2, 3, 6, 6))
    W, b = RNG.standard_normal((2, 3, 3, 3)), RNG.standard_normal(2)
    Wl, bl = RNG.standard_normal((108, 4)), RNG.standard_normal(4)
    conv_out, conv_cache = layer.conv_forward(X, W, b, 1, 1)
    relu_out, relu_cache = layer.relu_forward(X)
    pool_out, pool_cache = layer.maxpool_forward(X, 2, 2)
    lin_out, lin_cache = layer.linear_forward(X, Wl, bl)
    g, beta = RNG.standard_normal(3), RNG.standard_normal(3)
    bn_out, bn_cache = layer.batchnorm_forward(X, g, beta)
    return {
        "batchnorm_forward": (layer.batchnorm_forward, (X, g, beta)),
        "batchnorm_backward": (
            layer.batchnorm_backward,
            (RNG.standard_normal(bn_out.shape), bn_cache),
        ),
        "linear_forward": (layer.linear_forward, (X, Wl, bl)),
        "linear_backward": (layer.linear_backward, (RNG.standard_normal(lin_out.shape), lin_cache)),
        "relu_forward": (layer.relu_forward, (X,)),
        "relu_backward": (layer.relu_backward, (RNG.standard_normal(relu_out.shape), relu_cache)),
        "conv_forward": (layer.conv_forward, (X, W, b, 1, 1)),
        "conv_backward": (layer.conv_backward, (RNG.standard_normal(conv_out.shape), conv_cache)),
        "maxpool_forward": (layer.maxpool_forward, (X, 2, 2)),
        "maxpool_backward": (
            layer.maxpool_backward,
            (RNG.standard_normal(pool_out.shape), pool_cache),
        ),
        "softmax_loss": (layer.softmax_loss, (RNG.standard_normal((3, 4)), np.array([0, 1, 3]))),
    }


@pytest.mark.parametrize("name", sorted(layer_calls()))
def test_functions_do_not_modify_their_arguments(name):
    fn, args = layer_calls()[name]
    assert_pure(fn, *args)


def test_purity_check_catches_a_function_that_writes_its_input():
    def relu_backward_in_place(dout, cache):
        dout *= cache > 0
        return dout

    _, (dout, cache) = layer_calls()["relu_backward"]
    with pytest.raises(AssertionError, match="relu_backward_in_place modified argument arrays"):
        assert_pure(relu_backward_in_place, dout, cache)


# --------------------------------------------------------------------------- argument errors


def test_errors_name_function_argument_and_shapes():
    X = np.zeros((2, 3, 8, 8))
    W = np.zeros((4, 3, 3, 3))
    b = np.zeros(4)
    cases = [
        (
            lambda: layer.conv_forward(X.astype(np.int64), W, b),
            TypeError,
            "conv_forward: X .*int64",
        ),
        (lambda: layer.conv_forward(X, W.astype(np.float32), b), TypeError, "one dtype"),
        (lambda: layer.conv_forward(X[0], W, b), ValueError, r"X must have 4 dim.*\(3, 8, 8\)"),
        (
            lambda: layer.conv_forward(X, W[:, :2], b),
            ValueError,
            r"W must have shape \(4, 3, 3, 3\)",
        ),
        (lambda: layer.conv_forward(X, W, b[:3]), ValueError, r"b must have shape \(4,\)"),
        (lambda: layer.conv_forward(X, W, b, stride=0), ValueError, "stride must be"),
        (lambda: layer.conv_forward(X, np.zeros((4, 3, 11, 11)), b), ValueError, "larger than"),
        (
            lambda: layer.linear_forward(X, np.zeros((10, 5)), np.zeros(5)),
            ValueError,
            r"\(192, 5\)",
        ),
        (lambda: layer.linear_forward([[1.0]], W, b), TypeError, "numpy array"),
        (lambda: layer.relu_forward(np.zeros(3, dtype=np.int32)), TypeError, "relu_forward"),
        (lambda: layer.maxpool_forward(X, 9, 2), ValueError, "maxpool_forward: window"),
        (lambda: layer.softmax_loss(np.zeros((2, 3)), np.array([0, 3])), ValueError, r"0\.\.2"),
        (lambda: layer.softmax_loss(np.zeros((2, 3)), np.ones((2, 2))), ValueError, r"\(2, 3\)"),
        (lambda: layer.softmax_loss(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError, "integer"),
        (lambda: layer.softmax_loss(np.zeros((2, 3)), np.array([0])), ValueError, r"y must have"),
        (
            lambda: layer.batchnorm_forward(X, np.ones(4), np.zeros(3)),
            ValueError,
            r"batchnorm_forward: gamma must have shape \(3,\), got \(4,\)",
        ),
        (
            lambda: layer.batchnorm_forward(X[:1, :, :1, :1], np.ones(3), np.zeros(3)),
            ValueError,
            "batchnorm_forward: X must hold at least 2 values per channel",
        ),
        (
            lambda: layer.batchnorm_forward(X, np.ones(3, np.float32), np.zeros(3)),
            TypeError,
            "batchnorm_forward: all arrays must share one dtype",
        ),
        (
            lambda: layer.softmax_loss(np.zeros((2, 3)), np.array([0, 1]), "avg"),
            ValueError,
            "reduction",
        ),
    ]
    for call, exc, pattern in cases:
        with pytest.raises(exc, match=pattern):
            call()


def test_backward_rejects_wrong_upstream_shape():
    X = np.zeros((2, 3, 8, 8))
    out, cache = layer.conv_forward(X, np.zeros((4, 3, 3, 3)), np.zeros(4), 1, 1)
    with pytest.raises(ValueError, match="conv_backward: dout"):
        layer.conv_backward(np.zeros((2, 5, 8, 8)), cache)
    _, pcache = layer.maxpool_forward(X, 2, 2)
    with pytest.raises(ValueError, match="maxpool_backward: dout"):
        layer.maxpool_backward(np.zeros((2, 3, 3, 3)), pcache)
    _, lcache = layer.linear_forward(X, np.zeros((192, 5)), np.zeros(5))
    with pytest.raises(ValueError, match="linear_backward: dout"):
        layer.linear_backward(np.zeros((2, 4)), lcache)
