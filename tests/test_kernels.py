"""Cython kernels (util/_kernels.pyx) against their numpy twins (util/kernels_numpy.py),
and the backend choice in util/kernels.py.

Equality tests use continuous random data (no ties), so both implementations
must agree exactly up to float summation order; ties get their own test.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from util import kernels, kernels_numpy, layer

cy = pytest.importorskip(
    "util._kernels",
    reason="the Cython extension is not built: run `python setup.py build_ext --inplace`",
)

DTYPES = [np.float32, np.float64]

# (N, C, H, W, HH, WW, stride, pad): odd sizes, batch 1, stride 2, pad 0/1/2,
# non-square images and filters, and the CNN's three conv layers in small.
CONV_CASES = [
    (2, 3, 7, 9, 3, 3, 1, 1),
    (1, 1, 5, 5, 5, 5, 1, 2),
    (3, 2, 8, 8, 3, 3, 2, 1),
    (2, 4, 9, 7, 3, 2, 2, 0),
    (1, 3, 6, 6, 1, 1, 1, 0),
    (2, 2, 5, 8, 4, 3, 3, 2),
    (4, 3, 32, 32, 5, 5, 1, 2),
    (3, 16, 16, 16, 5, 5, 1, 2),
    (5, 20, 8, 8, 5, 5, 1, 2),
]

# (N, C, H, W, size, stride): the CNN's 2x2/2 case, odd sizes, overlapping windows.
POOL_CASES = [
    (2, 3, 8, 8, 2, 2),
    (1, 2, 7, 9, 2, 2),
    (3, 2, 9, 7, 3, 2),
    (2, 1, 6, 6, 3, 3),
    (1, 4, 5, 5, 2, 1),
    (2, 16, 32, 32, 2, 2),
]


def _tol(dtype) -> dict:
    return {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}


def _rand(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    return rng.standard_normal(shape).astype(dtype)


# --------------------------------------------------------------------------- im2col / col2im


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_im2col_matches_numpy(case, dtype):
    N, C, H, W, HH, WW, s, p = case
    X = _rand(np.random.default_rng(1), (N, C, H, W), dtype)
    got = cy.im2col(X, HH, WW, s, p)
    want = kernels_numpy.im2col(X, HH, WW, s, p)
    assert got.dtype == dtype and got.shape == want.shape
    # im2col only copies values: exact equality.
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_col2im_matches_numpy(case, dtype):
    N, C, H, W, HH, WW, s, p = case
    Ho, Wo = kernels.out_size(H, HH, s, p), kernels.out_size(W, WW, s, p)
    cols = _rand(np.random.default_rng(2), (C * HH * WW, N * Ho * Wo), dtype)
    got = cy.col2im(cols, (N, C, H, W), HH, WW, s, p)
    want = kernels_numpy.col2im(cols, (N, C, H, W), HH, WW, s, p)
    assert got.dtype == dtype and got.shape == (N, C, H, W)
    np.testing.assert_allclose(got, want, **_tol(dtype))


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_col2im_is_adjoint_of_im2col(impl):
    # <im2col(X), Y> == <X, col2im(Y)> for all X, Y: pins down col2im independently of the twin.
    rng = np.random.default_rng(3)
    N, C, H, W, HH, WW, s, p = 2, 3, 7, 8, 3, 3, 2, 1
    X = _rand(rng, (N, C, H, W), np.float64)
    cols = impl.im2col(X, HH, WW, s, p)
    Y = _rand(rng, cols.shape, np.float64)
    lhs = float(np.vdot(cols, Y))
    rhs = float(np.vdot(X, impl.col2im(Y, X.shape, HH, WW, s, p)))
    assert lhs == pytest.approx(rhs, rel=1e-12)


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_im2col_layout(impl):
    # cols[(c, i, j), (n, y, x)] = Xpadded[n, c, y*s + i, x*s + j]
    X = np.arange(2 * 2 * 4 * 5, dtype=np.float64).reshape(2, 2, 4, 5)
    cols = impl.im2col(X, 3, 2, 1, 1)  # Ho = 4, Wo = 6
    Xp = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert cols.shape == (2 * 3 * 2, 2 * 4 * 6)
    for c, i, j, n, y, x in [(1, 2, 1, 1, 3, 5), (0, 0, 0, 0, 0, 0), (1, 1, 0, 0, 2, 3)]:
        assert cols[(c * 3 + i) * 2 + j, (n * 4 + y) * 6 + x] == Xp[n, c, y + i, x + j]


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_out_buffers_are_used(impl, dtype):
    rng = np.random.default_rng(4)
    X = _rand(rng, (3, 2, 6, 6), dtype)
    buf = np.full((2 * 9, 3 * 36), np.nan, dtype=dtype)
    cols = impl.im2col(X, 3, 3, 1, 1, out=buf)
    assert cols is buf
    np.testing.assert_array_equal(buf, kernels_numpy.im2col(X, 3, 3, 1, 1))
    dX = np.full(X.shape, np.nan, dtype=dtype)
    assert impl.col2im(buf, X.shape, 3, 3, 1, 1, out=dX) is dX
    np.testing.assert_allclose(dX, kernels_numpy.col2im(buf, X.shape, 3, 3, 1, 1), **_tol(dtype))


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_bad_out_buffer_is_rejected(impl):
    X = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match="im2col: out must be a C-contiguous float32"):
        impl.im2col(X, 3, 3, 1, 1, out=np.empty((9, 16), np.float64))
    with pytest.raises(ValueError, match="shape"):
        impl.im2col(X, 3, 3, 1, 1, out=np.empty((9, 15), np.float32))
    with pytest.raises(ValueError, match="col2im: cols must have shape"):
        impl.col2im(np.zeros((9, 15), np.float32), X.shape, 3, 3, 1, 1)


def test_kernels_reject_integer_input():
    with pytest.raises(TypeError, match="float32 or float64"):
        cy.im2col(np.zeros((1, 1, 4, 4), np.int64), 3, 3, 1, 1)
    with pytest.raises(TypeError, match="float32 or float64"):
        cy.maxpool_forward(np.zeros((1, 1, 4, 4), np.int32), 2, 2)


def test_kernels_accept_read_only_and_strided_input():
    # Spark broadcasts and frombuffer arrays are read-only; views may be non-contiguous.
    X = _rand(np.random.default_rng(5), (2, 3, 10, 8), np.float64)[:, :, ::2, :]
    X.flags.writeable = False
    np.testing.assert_array_equal(cy.im2col(X, 3, 3, 1, 1), kernels_numpy.im2col(X, 3, 3, 1, 1))
    out, arg = cy.maxpool_forward(X, 2, 2)
    want_out, want_arg = kernels_numpy.maxpool_forward(X, 2, 2)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(arg, want_arg)


# --------------------------------------------------------------------------- max-pool


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_matches_numpy(case, dtype):
    N, C, H, W, size, s = case
    rng = np.random.default_rng(6)
    X = _rand(rng, (N, C, H, W), dtype)
    out, arg = cy.maxpool_forward(X, size, s)
    want_out, want_arg = kernels_numpy.maxpool_forward(X, size, s)
    assert out.dtype == dtype and arg.dtype == np.int32
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(arg, want_arg)
    dout = _rand(rng, out.shape, dtype)
    dX = cy.maxpool_backward(dout, arg, X.shape, size, s)
    assert dX.dtype == dtype
    # Overlapping windows sum several gradients into one input: allclose, not equal.
    np.testing.assert_allclose(
        dX, kernels_numpy.maxpool_backward(dout, want_arg, X.shape, size, s), **_tol(dtype)
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size, stride", [(2, 2), (3, 2)])
def test_maxpool_ties_and_nan_go_to_the_first_maximum(dtype, size, stride):
    rng = np.random.default_rng(7)
    # Few distinct values: nearly every window has ties.
    X = rng.integers(0, 3, (2, 3, 8, 8)).astype(dtype)
    X[0, 0, 0, 1] = np.nan  # a NaN beats any number, like numpy's argmax
    X[1, 2, 4:6, 4:6] = 5  # a whole window of equal values -> index 0
    out, arg = cy.maxpool_forward(X, size, stride)
    want_out, want_arg = kernels_numpy.maxpool_forward(X, size, stride)
    np.testing.assert_array_equal(arg, want_arg)
    np.testing.assert_array_equal(out, want_out)  # NaN == NaN for assert_array_equal
    assert arg[0, 0, 0, 0] == 1 and np.isnan(out[0, 0, 0, 0])
    if size == 2:
        assert arg[1, 2, 2, 2] == 0


def test_maxpool_backward_rejects_bad_argmax():
    dout = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="argmax must be int32"):
        cy.maxpool_backward(dout, np.zeros((1, 1, 2, 2), np.int64), (1, 1, 4, 4), 2, 2)
    with pytest.raises(ValueError, match="argmax values must be in 0..3"):
        cy.maxpool_backward(dout, np.full((1, 1, 2, 2), 4, np.int32), (1, 1, 4, 4), 2, 2)


# --------------------------------------------------------------------------- backends


def test_unknown_backend_is_an_error():
    before = kernels.backend()
    with pytest.raises(ValueError, match=r"unknown backend 'fortran'.*'cython', 'numpy'"):
        kernels.use("fortran")
    with pytest.raises(ValueError, match="unknown backend"):
        with kernels.using("gpu"):
            pass
    assert kernels.backend() == before


def test_using_restores_the_previous_backend():
    before = kernels.backend()
    with kernels.using("numpy"):
        assert kernels.backend() == "numpy"
        assert kernels._impl() is kernels_numpy
    assert kernels.backend() == before


def test_missing_extension_is_a_clear_error(monkeypatch):
    import sys

    import util

    monkeypatch.delattr(util, "_kernels", raising=False)
    monkeypatch.setitem(sys.modules, "util._kernels", None)  # makes the import fail
    with pytest.raises(ImportError, match="build_ext --inplace"):
        kernels._load("cython")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[2], CONV_CASES[3], CONV_CASES[7]])
def test_conv_backends_agree(case, dtype):
    N, C, H, W, HH, WW, s, p = case
    rng = np.random.default_rng(8)
    X, Wt, b = (
        _rand(rng, (N, C, H, W), dtype),
        _rand(rng, (5, C, HH, WW), dtype),
        _rand(rng, 5, dtype),
    )
    results = {}
    for name in kernels.BACKENDS:
        with kernels.using(name):
            out, cache = layer.conv_forward(X, Wt, b, s, p)
            dout = _rand(np.random.default_rng(9), out.shape, dtype)
            results[name] = (out, *layer.conv_backward(dout, cache))
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **_tol(dtype))


def test_conv_blocks_match_one_block(monkeypatch):
    # Several blocks (one of them partial) give the same result as one block.
    rng = np.random.default_rng(10)
    X, Wt, b = (
        _rand(rng, (7, 3, 9, 9), np.float64),
        _rand(rng, (4, 3, 3, 3), np.float64),
        _rand(rng, 4, np.float64),
    )
    out1, cache1 = layer.conv_forward(X, Wt, b, 1, 1)
    dout = _rand(rng, out1.shape, np.float64)
    grads1 = layer.conv_backward(dout, cache1)
    monkeypatch.setattr(kernels, "BLOCK_BYTES", 2 * 27 * 81 * 8)  # 2 images per block
    assert kernels.block_images(7, 27 * 81 * 8) == 2
    out2, cache2 = layer.conv_forward(X, Wt, b, 1, 1)
    np.testing.assert_allclose(out2, out1, rtol=1e-13, atol=1e-13)
    for g2, g1 in zip(layer.conv_backward(dout, cache2), grads1, strict=True):
        np.testing.assert_allclose(g2, g1, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", kernels.BACKENDS)
def test_float32_stays_float32(name):
    rng = np.random.default_rng(11)
    X = _rand(rng, (2, 3, 8, 8), np.float32)
    Wt, b = _rand(rng, (4, 3, 5, 5), np.float32), _rand(rng, 4, np.float32)
    with kernels.using(name):
        out, ccache = layer.conv_forward(X, Wt, b, 1, 2)
        pooled, pcache = layer.maxpool_forward(out, 2, 2)
        dpooled = np.ones_like(pooled)
        dout = layer.maxpool_backward(dpooled, pcache)
        dX, dW, db = layer.conv_backward(dout, ccache)
    for a in (out, pooled, dout, dX, dW, db):
        assert a.dtype == np.float32
    assert dX.shape == X.shape and dW.shape == Wt.shape and db.shape == b.shape


def test_layers_do_not_modify_inputs():
    rng = np.random.default_rng(12)
    X = _rand(rng, (3, 2, 6, 6), np.float64)
    Wt, b = _rand(rng, (3, 2, 3, 3), np.float64), _rand(rng, 3, np.float64)
    copies = [a.copy() for a in (X, Wt, b)]
    out, cache = layer.conv_forward(X, Wt, b, 1, 1)
    dout = _rand(rng, out.shape, np.float64)
    dcopy = dout.copy()
    layer.conv_backward(dout, cache)
    pooled, pcache = layer.maxpool_forward(X, 2, 2)
    layer.maxpool_backward(np.ones_like(pooled), pcache)
    for a, c in zip((X, Wt, b, dout), (*copies, dcopy), strict=True):
        np.testing.assert_array_equal(a, c)


class AlwaysTwoThreads:
    """A thread-pool controller that reports 2 BLAS threads in every thread and whose
    limits change nothing, as OpenMP's per-thread count looked before blas_threads()
    ignored it (once PyTorch was loaded)."""

    def info(self):
        return [{"user_api": "blas", "num_threads": 2}]

    def limit(self, **kwargs):
        return contextlib.nullcontext()


@pytest.mark.timeout(60)
def test_parallel_map_inside_its_own_threads_runs_inline(monkeypatch):
    """A parallel_map called from one of its own threads must run inline: submitting to
    the pool it runs in would leave both pool threads waiting on queued work (a deadlock;
    seen once PyTorch's OpenMP was loaded)."""
    monkeypatch.setattr(kernels, "_blas", AlwaysTwoThreads)

    def outer(items):
        return [sum(kernels.parallel_map(list(range(10)), lambda xs: sum(xs))) for _ in items]

    assert kernels.parallel_map([0, 1, 2, 3], outer) == [[45, 45], [45, 45]]
