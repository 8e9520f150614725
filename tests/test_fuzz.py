"""Fuzzing the layer API's argument checking: any input either works (and keeps the
dtype) or raises TypeError/ValueError naming the function, never a deep error."""

from __future__ import annotations

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


@FUZZ
@given(dout=arrays())
def test_backward_upstream_arguments(dout):
    """Backward functions check the upstream gradient against their forward's shapes."""
    X = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    _, ccache = layer.conv_forward(X, np.ones((4, 3, 3, 3)), np.zeros(4), 1, 1)
    _, pcache = layer.maxpool_forward(X, 2, 2)
    _, rcache = layer.relu_forward(X)
    _, lcache = layer.linear_forward(X, np.ones((108, 5)), np.zeros(5))
    call_checked("conv_backward", lambda: layer.conv_backward(dout, ccache))
    call_checked("maxpool_backward", lambda: layer.maxpool_backward(dout, pcache))
    call_checked("relu_backward", lambda: layer.relu_backward(dout, rcache))
    call_checked("linear_backward", lambda: layer.linear_backward(dout, lcache))


def test_the_fuzz_check_can_fail():
    """call_checked rejects an error that does not name the function."""
    with pytest.raises(AssertionError, match="without the function name"):
        call_checked("conv_forward", lambda: np.ones(3) @ np.ones(4))
