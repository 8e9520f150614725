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

from util import augment, kernels, layer

Params = dict[str, np.ndarray]

# Bytes of activations per sub-batch in loss_and_grads: the CNN's (about 200 KB per
# image in float32, so 80 images) then stay within the caches between layers instead
# of streaming arrays of hundreds of MB through memory (measured best at 64-128
# images). Networks with small activations (linear, nn) run the batch in one piece.
SUB_BATCH_BYTES = 16 << 20


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

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        dX, dW, db = layer.conv_backward(dout, cache, input_grad)
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

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        dX, dW, db = layer.linear_backward(dout, cache, input_grad)
        return dX, dict(zip(self.param_names, (dW, db), strict=True))


@dataclass(frozen=True)
class ReLU:
    n: int
    param_names = ()

    def out_shape(self, in_shape: tuple[int, ...]) -> tuple[int, ...]:
        return in_shape

    def forward(self, X: np.ndarray, p: Params):
        return layer.relu_forward(X)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        return (layer.relu_backward(dout, cache) if input_grad else None), {}


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

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        return (layer.maxpool_backward(dout, cache) if input_grad else None), {}


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
    """Back-propagates dscores (N, K) through the layers; returns one gradient per parameter.

    The first layer's input gradient (the images') is not computed."""
    grads: Params = {}
    dout = dscores
    for i, (spec, cache) in enumerate(zip(reversed(layers), reversed(caches), strict=True)):
        t0 = time.perf_counter()
        dout, g = spec.backward(dout, cache, input_grad=i < len(layers) - 1)
        grads.update(g)
        if timer is not None:
            key = f"{_label(spec)} backward"
            timer[key] = timer.get(key, 0.0) + time.perf_counter() - t0
    return grads


def activation_bytes(layers: Sequence[Layer], X: np.ndarray) -> int:
    """Bytes of all layer outputs of one image of X (N, ...) float."""
    total, shape = 0, tuple(X.shape[1:])
    for spec in layers:  # (the class count of a last Linear layer only matters a little)
        shape = spec.out_shape(shape) if not isinstance(spec, Linear) else (spec.units or 10,)
        total += int(np.prod(shape))
    return total * X.itemsize


def predict(
    layers: Sequence[Layer], params: Params, X: np.ndarray, tta: bool = False
) -> np.ndarray:
    """Class indices (N,) int64 for X (N, ...) float, forward in sub-batches so that
    memory stays small whatever N (SUB_BATCH_BYTES of activations at a time).

    tta: test-time augmentation - the class of highest softmax probability averaged over
    `augment.test_views` (images (N, C, H, W) flipped and shifted by up to one pixel)."""
    B = max(1, SUB_BATCH_BYTES // activation_bytes(layers, X))

    def classify(Xb: np.ndarray) -> np.ndarray:
        if not tta:
            return forward(layers, params, Xb)[0].argmax(axis=1)
        views = augment.test_views(Xb)
        probs = sum(np.exp(layer.log_softmax(forward(layers, params, V)[0])) for V in views)
        return probs.argmax(axis=1)

    out = [classify(X[i : i + B]) for i in range(0, len(X), B)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _timed_loss(scores, y, reduction: str, timer: dict | None):
    t0 = time.perf_counter()
    out = layer.softmax_loss(scores, y, reduction)
    if timer is not None:
        timer["loss"] = timer.get("loss", 0.0) + time.perf_counter() - t0
    return out


def loss_and_grads(
    layers: Sequence[Layer],
    params: Params,
    X: np.ndarray,
    y: np.ndarray,
    reduction: str = "mean",
    timer: dict | None = None,
    sub_batch: int | None = None,
) -> tuple[float, Params]:
    """Data loss (softmax cross-entropy, no regularisation) and its gradients.

    X: (N, C, H, W) or (N, D) float32|float64, y: (N,) ints in 0..K-1.
    The batch runs through forward and backward in near-equal sub-batches of at
    most `sub_batch` images (default: SUB_BATCH_BYTES of activations): a
    sub-batch's activations stay in the caches, and the sub-batches are dealt to
    as many threads as BLAS may use (`kernels.parallel_map`), so ReLU and
    max-pool run in parallel too. Losses and gradients are summed in a fixed
    order, so results are reproducible for a given thread count; they equal the
    whole-batch result up to floating-point summation order.
    With `timer`, per-layer seconds are summed over threads (thread-seconds).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"loss_and_grads: reduction must be 'mean' or 'sum', got {reduction!r}")
    if not isinstance(X, np.ndarray) or not isinstance(y, np.ndarray) or len(X) != len(y):
        raise ValueError(
            f"loss_and_grads: X and y must be numpy arrays with one label per image, got "
            f"{getattr(X, 'shape', type(X).__name__)} and {getattr(y, 'shape', type(y).__name__)}"
        )
    N = len(X)
    B = sub_batch or max(1, SUB_BATCH_BYTES // activation_bytes(layers, X))
    if N <= B:
        scores, caches = forward(layers, params, X, timer)
        loss, dscores = _timed_loss(scores, y, reduction, timer)
        return loss, backward(layers, dscores, caches, timer)
    # near-equal sub-batches of at most B images, as many as a multiple of the threads,
    # so that every thread gets the same work
    threads = kernels.blas_threads()
    count = min(N, -(-N // B) if threads <= 1 else -(-N // (B * threads)) * threads)
    edges = np.linspace(0, N, count + 1).astype(int)

    def work(spans: list[tuple[int, int]]) -> tuple[float, Params, dict | None]:
        t = None if timer is None else {}
        loss, grads = 0.0, {}
        for a, b in spans:
            scores, caches = forward(layers, params, X[a:b], t)
            part, dscores = _timed_loss(scores, y[a:b], "sum", t)
            del scores
            for k, g in backward(layers, dscores, caches, t).items():
                if k in grads:
                    grads[k] += g
                else:
                    grads[k] = g
            loss += part
        return loss, grads, t

    parts = kernels.parallel_map(list(zip(edges[:-1], edges[1:], strict=True)), work)
    loss, grads, _ = parts[0]
    for part_loss, part_grads, _ in parts[1:]:  # fixed order: reproducible sums
        loss += part_loss
        for k, g in part_grads.items():
            grads[k] += g
    if timer is not None:
        for *_, t in parts:
            for k, v in t.items():
                timer[k] = timer.get(k, 0.0) + v
    if reduction == "mean":
        loss /= N
        grads = {k: g / N for k, g in grads.items()}
    return loss, grads
