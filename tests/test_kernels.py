"""Cython kernels (util/_kernels.pyx) against their numpy twins (util/kernels_numpy.py),
and the backend choice in util/kernels.py.

Equality tests use continuous random data (no ties), so both implementations
must agree exactly up to float summation order; ties get their own test.
"""

from __future__ import annotations

import contextlib
import sys

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


def _sum_tol(dtype, want: np.ndarray) -> dict:
    """Tolerances for sums of many products in different orders (direct kernels vs GEMM):
    the rounding error scales with the sum's terms, so atol scales with the result."""
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    tol = 2e-5 if dtype == np.float32 else 1e-12
    return {"rtol": tol, "atol": tol * scale}


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


# --------------------------------------------------------------------------- direct convolution

# (N, C, H, W, F, HH, WW, pad): pads 0..3, filters 1..5, non-square images and filters,
# images smaller than the filter (padding makes up), N = 1, C = 1, F not a multiple of the
# vector width or of the 4-filter tile, rows narrower and wider than a vector, the CNN's
# three conv layers, and pairs (pad_h, pad_w) with a negative pad (a crop, as dX uses).
DIRECT_CASES = [
    (2, 3, 7, 9, 5, 3, 3, 1),
    (1, 1, 5, 5, 1, 5, 5, 2),
    (3, 2, 8, 8, 3, 1, 1, 0),
    (2, 4, 9, 7, 6, 3, 2, 0),
    (1, 3, 6, 6, 7, 1, 1, 3),
    (2, 2, 5, 8, 2, 4, 3, 2),
    (1, 2, 2, 3, 3, 5, 5, 2),  # image smaller than the filter
    (3, 1, 1, 1, 9, 3, 3, 1),
    (2, 5, 4, 33, 5, 2, 4, 3),  # a row wider than two vectors plus a tail
    (5, 3, 11, 5, 4, 5, 2, 1),  # several images side by side in one vector row
    (4, 3, 32, 32, 16, 5, 5, 2),
    (3, 16, 16, 16, 20, 5, 5, 2),
    (5, 20, 8, 8, 20, 5, 5, 2),
    (2, 3, 7, 6, 5, 3, 3, (-1, 2)),
    (3, 2, 9, 10, 4, 3, 5, (0, -2)),
]


def _direct_inputs(case, dtype, seed=13):
    N, C, H, W, F, HH, WW, pad = case
    rng = np.random.default_rng(seed)
    X, Wt, b = (
        _rand(rng, (N, C, H, W), dtype),
        _rand(rng, (F, C, HH, WW), dtype),
        _rand(rng, F, dtype),
    )
    return X, Wt, b, pad, rng


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", DIRECT_CASES)
def test_conv_direct_matches_numpy(case, dtype):
    X, Wt, b, pad, rng = _direct_inputs(case, dtype)
    want = kernels_numpy.conv_direct(X, Wt, b, pad)
    dout = _rand(rng, want.shape, dtype)
    want_dW, want_db = kernels_numpy.conv_direct_dW(X, dout, *Wt.shape[2:], pad)
    # every instruction set this CPU has: the AVX-512, AVX2 and generic code and layouts
    for isa in cy.ISAS[: cy.ISAS.index(cy.BEST_ISA) + 1]:
        got = cy.conv_direct(X, Wt, b, pad, isa=isa)
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **_sum_tol(dtype, want), err_msg=isa)
        got_dW, got_db = cy.conv_direct_dW(X, dout, *Wt.shape[2:], pad, isa=isa)
        assert got_dW.dtype == dtype and got_dW.shape == Wt.shape
        np.testing.assert_allclose(got_dW, want_dW, **_sum_tol(dtype, want_dW), err_msg=isa)
        assert got_db.dtype == dtype and got_db.shape == b.shape
        np.testing.assert_allclose(got_db, want_db, **_sum_tol(dtype, want_db), err_msg=isa)


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_conv_direct_is_the_definition(impl):
    # out[n, f, y, x] = b[f] + sum_{c, i, j} W[f, c, i, j] Xpad[n, c, y + i, x + j], and
    # dW its adjoint: <conv(X, W), R> = <W, dW(X, R)> (bias zero), independently of the twin.
    X, Wt, b, _, rng = _direct_inputs((2, 3, 5, 7, 4, 3, 2, 1), np.float64)
    out = impl.conv_direct(X, Wt, b, 1)
    Xp = np.pad(X, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for n, f, y, x in [(0, 0, 0, 0), (1, 3, 4, 7), (1, 2, 2, 3), (0, 1, 4, 0)]:
        assert out[n, f, y, x] == pytest.approx(
            np.sum(Xp[n, :, y : y + 3, x : x + 2] * Wt[f]) + b[f]
        )
    R = _rand(rng, out.shape, np.float64)
    lhs = float(np.vdot(impl.conv_direct(X, Wt, np.zeros(4), 1), R))
    dW, db = impl.conv_direct_dW(X, R, 3, 2, 1)
    assert lhs == pytest.approx(float(np.vdot(Wt, dW)), rel=1e-12)
    np.testing.assert_allclose(db, [R[:, f].sum() for f in range(4)], rtol=1e-12)


def test_conv_direct_check_catches_a_missing_tap():
    # The comparison above is sharp enough to see a kernel that drops one (c, i, j) term
    # of the 400-term sums of the CNN's second layer, in float32.
    X, Wt, b, pad, _ = _direct_inputs((3, 16, 16, 16, 20, 5, 5, 2), np.float32)
    got = cy.conv_direct(X, Wt, b, pad)
    defect = Wt.copy()
    defect[:, 7, 4, 4] = 0
    want = kernels_numpy.conv_direct(X, defect, b, pad)
    with pytest.raises(AssertionError, match="Mismatched elements"):
        np.testing.assert_allclose(got, want, **_sum_tol(np.float32, want))


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_conv_direct_out_buffer_and_strided_read_only_input(impl):
    X, Wt, b, pad, _ = _direct_inputs((2, 3, 12, 8, 5, 3, 3, 1), np.float32)
    X = X[:, :, ::2, :]  # a non-contiguous view
    X.flags.writeable = False
    want = kernels_numpy.conv_direct(np.ascontiguousarray(X), Wt, b, pad)
    buf = np.full(want.shape, np.nan, np.float32)
    assert impl.conv_direct(X, Wt, b, pad, out=buf) is buf
    np.testing.assert_allclose(buf, want, **_sum_tol(np.float32, want))
    with pytest.raises(ValueError, match="conv_direct: out must be a C-contiguous float32"):
        impl.conv_direct(X, Wt, b, pad, out=np.empty(want.shape, np.float64))


@pytest.mark.parametrize("impl", [cy, kernels_numpy], ids=["cython", "numpy"])
def test_conv_direct_rejects_bad_arguments(impl):
    X, Wt, b = np.zeros((2, 3, 4, 4)), np.zeros((5, 3, 3, 3)), np.zeros(5)
    with pytest.raises(ValueError, match=r"conv_direct: W must be \(F, 3, HH, WW\)"):
        impl.conv_direct(X, Wt[:, :2], b, 1)
    with pytest.raises(TypeError, match="conv_direct: X, W, b must share one dtype"):
        impl.conv_direct(X.astype(np.float32), Wt, b, 1)
    with pytest.raises(ValueError, match=r"does not fit input 4x4 padded by \(-1, -1\)"):
        impl.conv_direct(X, Wt, b, -1)
    with pytest.raises(ValueError, match="pad must be an int or a pair of ints"):
        impl.conv_direct(X, Wt, b, 1.5)
    with pytest.raises(ValueError, match=r"conv_direct_dW: dout must have shape \(2, F, 4, 4\)"):
        impl.conv_direct_dW(X, np.zeros((2, 5, 3, 4)), 3, 3, 1)


def test_conv_direct_unknown_isa_is_an_error():
    X, Wt, b = np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3)), np.zeros(1)
    with pytest.raises(ValueError, match="isa must be one of"):
        cy.conv_direct(X, Wt, b, 1, isa="neon")


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
    with pytest.raises(ValueError, match="argmax values must be in 0..4"):
        cy.maxpool_backward(dout, np.full((1, 1, 2, 2), 5, np.int32), (1, 1, 4, 4), 2, 2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_CASES)
def test_maxpool_with_relu_matches_numpy_and_relu_after_pooling(case, dtype):
    """relu=True: the output is ReLU of the pooled output (a NaN stays), windows whose
    maximum is not positive get argmax size*size and no gradient; the results are written
    into given buffers; the backward of 2x2 windows writes every element (odd sizes too)."""
    N, C, H, W, size, s = case
    rng = np.random.default_rng(8)
    X = _rand(rng, (N, C, H, W), dtype) - dtype(0.3)  # many all-negative windows
    X.reshape(-1)[:: max(1, X.size // 3)] = np.nan
    plain, plain_arg = cy.maxpool_forward(X, size, s)
    out, arg = np.full_like(plain, 7.0), np.full_like(plain_arg, 7)
    assert cy.maxpool_forward(X, size, s, relu=True, out=out, argmax=arg)[0] is out
    want_out, want_arg = kernels_numpy.maxpool_forward(X, size, s, relu=True)
    np.testing.assert_array_equal(out, want_out)
    np.testing.assert_array_equal(arg, want_arg)
    np.testing.assert_array_equal(out, np.maximum(plain, dtype(0)))
    nowhere = ~(plain > 0)
    assert nowhere.any() and (arg[nowhere] == size * size).all()
    assert (arg[~nowhere] == plain_arg[~nowhere]).all()
    dout = _rand(rng, out.shape, dtype)
    dX = np.full(X.shape, 7.0, dtype)  # no element may keep its old value
    cy.maxpool_backward(dout, arg, X.shape, size, s, out=dX)
    want = kernels_numpy.maxpool_backward(dout, want_arg, X.shape, size, s)
    np.testing.assert_allclose(dX, want, **_tol(dtype))
    unfused = cy.maxpool_backward(np.where(plain > 0, dout, 0), plain_arg, X.shape, size, s)
    np.testing.assert_allclose(dX, unfused, **_tol(dtype))


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
        np.testing.assert_allclose(got, want, **_sum_tol(dtype, want))


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


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's mallopt")
def test_keep_freed_memory_sets_glibcs_thresholds():
    """glibc's mallopt is found and accepts both settings (it answers 1 to each)."""
    assert kernels.keep_freed_memory() is True
