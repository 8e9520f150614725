"""Fuzzing the layer API's argument checking: any input either works (and keeps the
dtype) or raises TypeError/ValueError naming the function, never a deep error."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from util import layer

DTYPES = [np.float32, np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64]


@st.composite
def arrays(draw, max_rank=5):
    rank = draw(st.integers(0, max_rank))
    shape = tuple(draw(st.lists(st.integers(0, 6), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(DTYPES))
    return np.ones(shape, dtype=dtype)


def call_checked(fn_name, call):
    """Runs call(); allowed outcomes: a result, or TypeError/ValueError naming fn_name."""
    try:
        return call()
    except (TypeError, ValueError) as e:
        assert fn_name in str(e), f"{type(e).__name__} without the function name: {e}"
        return None


FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(X=arrays(), W=arrays(), b=arrays(2), stride=st.integers(-1, 3), pad=st.integers(-1, 3))
def test_conv_forward_arguments(X, W, b, stride, pad):
    out = call_checked("conv_forward", lambda: layer.conv_forward(X, W, b, stride, pad))
    if out is not None:
        assert out[0].dtype == X.dtype and out[0].ndim == 4


@FUZZ
@given(X=arrays(), W=arrays(3), b=arrays(2))
def test_linear_forward_arguments(X, W, b):
    out = call_checked("linear_forward", lambda: layer.linear_forward(X, W, b))
    if out is not None:
        assert out[0].dtype == X.dtype and out[0].shape == (X.shape[0], W.shape[1])


@FUZZ
@given(X=arrays(), size=st.integers(-1, 4), stride=st.integers(-1, 3))
def test_maxpool_forward_arguments(X, size, stride):
    out = call_checked("maxpool_forward", lambda: layer.maxpool_forward(X, size, stride))
    if out is not None:
        assert out[0].dtype == X.dtype


@FUZZ
@given(X=arrays())
def test_relu_forward_arguments(X):
    out = call_checked("relu_forward", lambda: layer.relu_forward(X))
    if out is not None:
        assert out[0].dtype == X.dtype and out[0].shape == X.shape


@FUZZ
@given(scores=arrays(3), y=arrays(2), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_softmax_loss_arguments(scores, y, reduction):
    out = call_checked("softmax_loss", lambda: layer.softmax_loss(scores, y, reduction))
    if out is not None:
        assert out[1].dtype == scores.dtype and np.isfinite(out[0])


def backward_cases() -> dict[str, tuple]:
    """name -> (backward, cache, forward output, shapes of the gradients) on float64 inputs."""
    X = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    conv_out, ccache = layer.conv_forward(X, np.ones((4, 3, 3, 3)), np.zeros(4), 1, 1)
    pool_out, pcache = layer.maxpool_forward(X, 2, 2)
    relu_out, rcache = layer.relu_forward(X)
    lin_out, lcache = layer.linear_forward(X, np.ones((108, 5)), np.zeros(5))
    return {
        "conv_backward": (layer.conv_backward, ccache, conv_out, [X.shape, (4, 3, 3, 3), (4,)]),
        "maxpool_backward": (layer.maxpool_backward, pcache, pool_out, [X.shape]),
        "relu_backward": (layer.relu_backward, rcache, relu_out, [X.shape]),
        "linear_backward": (layer.linear_backward, lcache, lin_out, [X.shape, (108, 5), (5,)]),
    }


def check_backward(name, backward, cache, out, grad_shapes, dout):
    """An upstream gradient of the forward output's shape and dtype gives gradients of the
    forward inputs' shapes in dout's dtype; a wrong shape or another dtype is refused."""
    grads = call_checked(name, functools.partial(backward, dout, cache))
    if dout.shape == out.shape and dout.dtype == out.dtype:
        assert grads is not None, f"{name} refused a well-formed dout {dout.shape} {dout.dtype}"
    if dout.shape != out.shape or dout.dtype != out.dtype:
        assert grads is None, f"{name} accepted dout {dout.shape} {dout.dtype}, wants {out.shape}"
    if grads is not None:
        grads = grads if isinstance(grads, tuple) else (grads,)
        assert [g.shape for g in grads] == grad_shapes, name
        assert all(g.dtype == dout.dtype for g in grads), name


# random arrays, or the shape of one of backward_cases' outputs (float64) in some dtype
OUT_SHAPES = [(2, 4, 6, 6), (2, 3, 3, 3), (2, 3, 6, 6), (2, 5)]
OUT_DTYPES = [np.float64, np.float32, np.int64]
upstream = arrays() | st.builds(np.ones, st.sampled_from(OUT_SHAPES), st.sampled_from(OUT_DTYPES))


@FUZZ
@given(dout=upstream)
def test_backward_upstream_arguments(dout):
    """Backward functions check the upstream gradient against their forward's shapes."""
    for name, (backward, cache, out, grad_shapes) in backward_cases().items():
        check_backward(name, backward, cache, out, grad_shapes, dout)


def test_the_backward_check_can_fail():
    """check_backward catches a backward that ignores dout's shape or returns wrong shapes."""
    backward, cache, out, grad_shapes = backward_cases()["relu_backward"]
    with pytest.raises(AssertionError, match="accepted dout"):
        check_backward("relu_backward", lambda d, c: d, cache, out, grad_shapes, np.ones(3))
    too_strict = lambda d, c: backward(d[:1], c)  # noqa: E731 - refuses every dout
    with pytest.raises(AssertionError, match="refused a well-formed"):
        check_backward("relu_backward", too_strict, cache, out, grad_shapes, out)
    with pytest.raises(AssertionError, match="relu_backward"):
        check_backward("relu_backward", lambda d, c: d[:1], cache, out, grad_shapes, out)


def test_the_fuzz_check_can_fail():
    """call_checked rejects an error that does not name the function."""
    with pytest.raises(AssertionError, match="without the function name"):
        call_checked("conv_forward", lambda: np.ones(3) @ np.ones(4))
