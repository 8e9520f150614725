"""Networks as tables of layers, so that each network is written down once.

A network is a tuple of layer specs (`Conv`, `ReLU`, `MaxPool`, `Linear`).
Each spec knows its parameter names (named after the layer number, e.g.
`W4`, `b4`), how to initialise them, and how to run the matching
`util.layer` forward/backward functions. Both the matrix and the Spark
classifiers run the same tables through `forward()` / `backward()` below.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from util import layer

Params = dict[str, np.ndarray]


@dataclass(frozen=True)
class Conv:
    """Convolution, `filters` filters of `size` x `size`: W<n> (F, C, k, k), b<n> (F,)."""

    n: int
    filters: int
    size: int
    stride: int = 1
    pad: int = 0

    @property
    def param_names(self) -> tuple[str, ...]:
        return (f"W{self.n}", f"b{self.n}")

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        C, H, W = in_shape
        k, s, p = self.size, self.stride, self.pad
        return (self.filters, (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1)

    def init(self, in_shape: tuple[int, ...], rng: np.random.Generator, dtype) -> Params:
        fan_in = in_shape[0] * self.size * self.size
        W = rng.standard_normal((self.filters, in_shape[0], self.size, self.size))
        return {
            f"W{self.n}": (W * np.sqrt(2.0 / fan_in)).astype(dtype),
            f"b{self.n}": np.zeros(self.filters, dtype=dtype),
        }

    def forward(self, X: np.ndarray, p: Params):
        W, b = (p[k] for k in self.param_names)
        return layer.conv_forward(X, W, b, self.stride, self.pad)

    def backward(self, dout: np.ndarray, cache) -> tuple[np.ndarray, Params]:
        dX, dW, db = layer.conv_backward(dout, cache)
        return dX, dict(zip(self.param_names, (dW, db), strict=True))


@dataclass(frozen=True)
class Linear:
    """Fully connected layer to `units` outputs (None: the number of classes)."""

    n: int
    units: int | None = None

    @property
    def param_names(self) -> tuple[str, ...]:
        return (f"W{self.n}", f"b{self.n}")

    def out_shape(self, in_shape: tuple[int, ...], num_classes: int = 10) -> tuple[int, ...]:
        return (self.units or num_classes,)

    def init(self, in_shape: tuple[int, ...], rng: np.random.Generator, dtype, num_classes=10):
        D, K = int(np.prod(in_shape)), self.units or num_classes
        W = rng.standard_normal((D, K)) * np.sqrt(2.0 / D)
        return {f"W{self.n}": W.astype(dtype), f"b{self.n}": np.zeros(K, dtype=dtype)}

    def forward(self, X: np.ndarray, p: Params):
        W, b = (p[k] for k in self.param_names)
        return layer.linear_forward(X, W, b)

    def backward(self, dout: np.ndarray, cache) -> tuple[np.ndarray, Params]:
        dX, dW, db = layer.linear_backward(dout, cache)
        return dX, dict(zip(self.param_names, (dW, db), strict=True))


@dataclass(frozen=True)
class ReLU:
    n: int
    param_names = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def forward(self, X: np.ndarray, p: Params):
        return layer.relu_forward(X)

    def backward(self, dout: np.ndarray, cache) -> tuple[np.ndarray, Params]:
        return layer.relu_backward(dout, cache), {}


@dataclass(frozen=True)
class MaxPool:
    n: int
    size: int = 2
    stride: int = 2
    param_names = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        C, H, W = in_shape
        return (C, (H - self.size) // self.stride + 1, (W - self.size) // self.stride + 1)

    def forward(self, X: np.ndarray, p: Params):
        return layer.maxpool_forward(X, self.size, self.stride)

    def backward(self, dout: np.ndarray, cache) -> tuple[np.ndarray, Params]:
        return layer.maxpool_backward(dout, cache), {}


Layer = Conv | Linear | ReLU | MaxPool


def init_params(
    layers: Sequence[Layer],
    in_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    dtype=np.float64,
) -> Params:
    """He-initialised weights and zero biases for every layer with parameters."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    shape = tuple(in_shape)
    for spec in layers:
        if isinstance(spec, Linear):
            params.update(spec.init(shape, rng, dtype, num_classes))
            shape = spec.out_shape(shape, num_classes)
        else:
            if isinstance(spec, Conv):
                params.update(spec.init(shape, rng, dtype))
            shape = spec.out_shape(shape)
    return params


def _label(spec: Layer) -> str:
    return f"{spec.n:>2} {type(spec).__name__.lower()}"


def forward(
    layers: Sequence[Layer], params: Params, X: np.ndarray, timer: dict | None = None
) -> tuple[np.ndarray, list]:
    """Runs X (N, C, H, W) through the layers. Returns scores (N, K) and one cache per layer.

    If `timer` is a dict, each layer's seconds are added under "<n> <kind> forward".
    """
    caches = []
    for spec in layers:
        t0 = time.perf_counter()
        X, cache = spec.forward(X, params)
        caches.append(cache)
        if timer is not None:
            key = f"{_label(spec)} forward"
            timer[key] = timer.get(key, 0.0) + time.perf_counter() - t0
    return X, caches


def backward(
    layers: Sequence[Layer], dscores: np.ndarray, caches: Sequence, timer: dict | None = None
) -> Params:
    """Back-propagates dscores (N, K) through the layers; returns one gradient per parameter."""
    grads: Params = {}
    dout = dscores
    for spec, cache in zip(reversed(layers), reversed(caches), strict=True):
        t0 = time.perf_counter()
        dout, g = spec.backward(dout, cache)
        grads.update(g)
        if timer is not None:
            key = f"{_label(spec)} backward"
            timer[key] = timer.get(key, 0.0) + time.perf_counter() - t0
    return grads


def loss_and_grads(
    layers: Sequence[Layer],
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    reduction: str = "mean",
    timer: dict | None = None,
) -> tuple[float, Params]:
    """Data loss (softmax cross-entropy, no regularisation) and its gradients."""
    scores, caches = forward(layers, params, X, timer)
    loss, dscores = layer.softmax_loss(scores, y, reduction)
    return loss, backward(layers, dscores, caches, timer)
