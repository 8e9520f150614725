"""Networks as tables of layers, so that each network is written down once.

A network is a tuple of layer specs (`Conv`, `ReLU`, `MaxPool`, `Linear`).
Each spec knows its parameter names (named after the layer number, e.g.
`W4`, `b4`), its output shape, how to initialise its parameters, its FLOPs,
and how to run the matching `util.layer` forward/backward functions. The
networks' tables themselves are in `util.models`. Both the matrix and the Spark
classifiers run the same tables through `forward()` / `backward()` below.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from util import augment, kernels, layer
from util.kernel_shapes import out_size

Params = dict[str, np.ndarray]

# Bytes of activations per sub-batch in loss_and_grads: the CNN's (about 200 KB per
# image in float32, so 80 images) then stay within the caches between layers instead
# of streaming arrays of hundreds of MB through memory (measured best at 64-128
# images). Networks with small activations (linear, nn) run the batch in one piece.
SUB_BATCH_BYTES = 16 << 20


@dataclass(frozen=True)
class LayerSpec:
    """One row of a layer table. `n` is the layer's number in the network (parameters are
    named after it: W4, b4); every spec answers the same questions, so nothing outside
    the specs switches on layer types."""

    n: int
    param_names: ClassVar[tuple[str, ...]] = ()

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    def out_shape(self, in_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
        """The shape of one image's output, given one image's input shape."""
        return tuple(in_shape)

    def init(
        self, in_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator, dtype
    ) -> Params:
        """Initial parameters (He-initialised weights, zero biases); {} for none."""
        return {}

    def flops(self, in_shape: tuple[int, ...], num_classes: int) -> int:
        """FLOPs (2 per multiply-add) of the forward GEMM for one image; each gradient GEMM
        of the backward pass (weights, input) costs as much again. 0 without a GEMM."""
        return 0

    def forward(self, X: np.ndarray, p: Params):
        raise NotImplementedError

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        raise NotImplementedError


@dataclass(frozen=True)
class WeightedSpec(LayerSpec):
    """A layer with a weight W<n> and a bias b<n>, run by a util.layer forward/backward pair
    (`_forward(X, W, b)`, `_backward(dout, cache, input_grad) -> dX, dW, db`)."""

    @property
    def param_names(self) -> tuple[str, ...]:
        return (f"W{self.n}", f"b{self.n}")

    def forward(self, X: np.ndarray, p: Params):
        W, b = (p[k] for k in self.param_names)
        return self._forward(X, W, b)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        dX, dW, db = self._backward(dout, cache, input_grad)
        return dX, dict(zip(self.param_names, (dW, db), strict=True))


@dataclass(frozen=True)
class Conv(WeightedSpec):
    """Convolution, `filters` filters of `size` x `size`: W<n> (F, C, k, k), b<n> (F,).

    Two training-time forms of the same layer, each an exact reparametrisation once trained:

    batchnorm: the convolution without bias, then batch normalisation
    (`layer.batchnorm_forward`, scale g<n> (F,), shift b<n>). With population statistics it
    is an affine map per filter again, so a trained network folds it back into a plain Conv
    of the same W<n>, b<n> shapes (`fold_batchnorm`).

    factored (stride 1, size >= 4): the convolution as two linear ones, nothing between them:
    V<n> (F, C, k-2, k-2) with the layer's padding, then W<n> (F, F, 3, 3) with none. Their
    composition is one k x k convolution (`collapse`), so the trained layer has the plain
    layer's shapes and cost; the product of factors only changes how training moves it."""

    filters: int
    size: int
    stride: int = 1
    pad: int = 0
    batchnorm: bool = False
    factored: bool = False

    def __post_init__(self) -> None:
        if self.factored and (self.stride != 1 or self.size < 4):
            raise ValueError(
                f"Conv {self.n}: factored needs stride 1 and size >= 4, got stride "
                f"{self.stride}, size {self.size}"
            )

    @property
    def kind(self) -> str:
        conv = f"conv{self.size - 2}x{self.size - 2}+conv3x3" if self.factored else "conv"
        return conv + ("+bn" if self.batchnorm else "")

    @property
    def param_names(self) -> tuple[str, ...]:
        n = self.n
        return (
            (f"W{n}", f"b{n}")
            + ((f"g{n}",) if self.batchnorm else ())
            + ((f"V{n}",) if self.factored else ())
        )

    def forward(self, X: np.ndarray, p: Params):
        if not (self.batchnorm or self.factored):
            return super().forward(X, p)
        W, b = p[f"W{self.n}"], p[f"b{self.n}"]
        bias = np.zeros_like(b) if self.batchnorm else b
        factor_cache = None
        if self.factored:
            V = p[f"V{self.n}"]
            X, factor_cache = layer.conv_forward(X, V, np.zeros(len(V), V.dtype), 1, self.pad)
            out, conv_cache = layer.conv_forward(X, W, bias, 1, 0)
        else:
            out, conv_cache = layer.conv_forward(X, W, bias, self.stride, self.pad)
        bn_cache = None
        if self.batchnorm:
            out, bn_cache = layer.batchnorm_forward(out, p[f"g{self.n}"], b)
        return out, (factor_cache, conv_cache, bn_cache)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        if not (self.batchnorm or self.factored):
            return super().backward(dout, cache, input_grad)
        factor_cache, conv_cache, bn_cache = cache
        n, grads = self.n, {}
        if self.batchnorm:
            dout, grads[f"g{n}"], grads[f"b{n}"] = layer.batchnorm_backward(dout, bn_cache)
        dX, grads[f"W{n}"], db = layer.conv_backward(dout, conv_cache, self.factored or input_grad)
        if not self.batchnorm:
            grads[f"b{n}"] = db
        if self.factored:
            dX, grads[f"V{n}"], _ = layer.conv_backward(dX, factor_cache, input_grad)
        return dX, {k: grads[k] for k in self.param_names}

    def out_shape(self, in_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
        C, H, W = in_shape
        k, s, p = self.size, self.stride, self.pad
        return (self.filters, out_size(H, k, s, p), out_size(W, k, s, p))

    def init(
        self, in_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator, dtype
    ) -> Params:
        def he(shape, gain):  # gain 2 before a ReLU, 1 before a linear factor
            return (rng.standard_normal(shape) * np.sqrt(gain / np.prod(shape[1:]))).astype(dtype)

        F, C, k = self.filters, in_shape[0], self.size
        params = {f"W{self.n}": he((F, F, 3, 3) if self.factored else (F, C, k, k), 2.0)}
        params[f"b{self.n}"] = np.zeros(F, dtype=dtype)
        if self.batchnorm:
            params[f"g{self.n}"] = np.ones(F, dtype=dtype)
        if self.factored:
            params[f"V{self.n}"] = he((F, C, k - 2, k - 2), 1.0)
        return params

    def flops(self, in_shape: tuple[int, ...], num_classes: int) -> int:
        F, Ho, Wo = self.out_shape(in_shape, num_classes)
        if self.factored:  # V<n> onto the (Ho + 2) x (Wo + 2) grid that W<n> reads
            return (
                2 * F * (in_shape[0] * (self.size - 2) ** 2 * (Ho + 2) * (Wo + 2) + F * 9 * Ho * Wo)
            )
        return 2 * F * in_shape[0] * self.size**2 * Ho * Wo

    def _forward(self, X: np.ndarray, W: np.ndarray, b: np.ndarray):
        return layer.conv_forward(X, W, b, self.stride, self.pad)

    def _backward(self, dout: np.ndarray, cache, input_grad: bool):
        return layer.conv_backward(dout, cache, input_grad)


@dataclass(frozen=True)
class Linear(WeightedSpec):
    """Fully connected layer to `units` outputs (None: the number of classes)."""

    units: int | None = None

    def out_shape(self, in_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
        return (self.units or num_classes,)

    def init(
        self, in_shape: tuple[int, ...], num_classes: int, rng: np.random.Generator, dtype
    ) -> Params:
        D, K = int(np.prod(in_shape)), self.units or num_classes
        W = rng.standard_normal((D, K)) * np.sqrt(2.0 / D)
        return {f"W{self.n}": W.astype(dtype), f"b{self.n}": np.zeros(K, dtype=dtype)}

    def flops(self, in_shape: tuple[int, ...], num_classes: int) -> int:
        return 2 * int(np.prod(in_shape)) * (self.units or num_classes)

    def _forward(self, X: np.ndarray, W: np.ndarray, b: np.ndarray):
        return layer.linear_forward(X, W, b)

    def _backward(self, dout: np.ndarray, cache, input_grad: bool):
        return layer.linear_backward(dout, cache, input_grad)


@dataclass(frozen=True)
class ReLU(LayerSpec):
    def forward(self, X: np.ndarray, p: Params):
        return layer.relu_forward(X)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        return (layer.relu_backward(dout, cache) if input_grad else None), {}


@dataclass(frozen=True)
class MaxPool(LayerSpec):
    size: int = 2
    stride: int = 2

    def out_shape(self, in_shape: tuple[int, ...], num_classes: int) -> tuple[int, ...]:
        C, H, W = in_shape
        return (C, out_size(H, self.size, self.stride, 0), out_size(W, self.size, self.stride, 0))

    def forward(self, X: np.ndarray, p: Params):
        return layer.maxpool_forward(X, self.size, self.stride)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        return (layer.maxpool_backward(dout, cache) if input_grad else None), {}


Layer = LayerSpec


def check_layers(layers: Sequence[Layer], what: str = "layer table") -> None:
    """Layer numbers name the parameters (W4, b4): they must be unique and increasing, so
    that no two layers share (and silently overwrite) a parameter."""
    numbers = [spec.n for spec in layers]
    for prev, (i, spec) in zip([0, *numbers], enumerate(layers), strict=False):
        if not isinstance(spec, LayerSpec):
            raise TypeError(f"{what}: entry {i} is {spec!r}, not a layer spec")
        if spec.n <= prev:
            raise ValueError(
                f"{what}: layer {i + 1} ({spec.kind}) is numbered {spec.n} after layer number "
                f"{prev}: layer numbers must be unique and increasing, got {numbers}"
            )


def shapes(
    layers: Sequence[Layer], in_shape: tuple[int, ...], num_classes: int
) -> list[tuple[int, ...]]:
    """The input shape of one image followed by each layer's output shape."""
    out = [tuple(in_shape)]
    for spec in layers:
        out.append(spec.out_shape(out[-1], num_classes))
    return out


def init_params(
    layers: Sequence[Layer],
    in_shape: tuple[int, ...],
    num_classes: int,
    seed: int = 0,
    dtype=np.float64,
) -> Params:
    """He-initialised weights and zero biases for every layer with parameters."""
    check_layers(layers)
    rng = np.random.default_rng(seed)
    params: Params = {}
    for spec, shape in zip(layers, shapes(layers, in_shape, num_classes), strict=False):
        params.update(spec.init(shape, num_classes, rng, dtype))
    return params


def step_flops(
    layers: Sequence[Layer], in_shape: tuple[int, ...], batch: int, num_classes: int
) -> int:
    """FLOPs of one training step's GEMMs: forward, and backward's weight and input
    gradients (no input gradient for the first layer)."""
    per_image = [
        spec.flops(shape, num_classes) * (2 if i == 0 else 3)
        for i, (spec, shape) in enumerate(
            zip(layers, shapes(layers, in_shape, num_classes), strict=False)
        )
    ]
    return batch * sum(per_image)


def num_outputs(layers: Sequence[Layer], params: Params) -> int:
    """The number of scores per image (classes): the last parameterised layer's bias size."""
    for spec in reversed(layers):
        if spec.param_names:
            return len(params[spec.param_names[-1]])
    raise ValueError("the layer table has no layer with parameters")


def _label(spec: Layer) -> str:
    return f"{spec.n:>2} {spec.kind}"


@dataclass(frozen=True)
class MaxPoolReLU(MaxPool):
    """A ReLU and the max-pool after it in one pass (`layer.maxpool_relu_forward`): what
    `fused` makes of them; numbered as the max-pool."""

    @property
    def kind(self) -> str:
        return "relu+maxpool"

    def forward(self, X: np.ndarray, p: Params):
        return layer.maxpool_relu_forward(X, self.size, self.stride)

    def backward(
        self, dout: np.ndarray, cache, input_grad: bool = True
    ) -> tuple[np.ndarray | None, Params]:
        return (layer.maxpool_relu_backward(dout, cache) if input_grad else None), {}


def fused(layers: Sequence[Layer]) -> list[Layer]:
    """The layers as loss_and_grads and predict run them: every ReLU directly followed by a
    max-pool becomes one MaxPoolReLU. Max-pooling commutes with ReLU (both give max(0, the
    window's maximum), and the gradient reaches the same input), so the results are the
    same, with one pass over the ReLU's input instead of four."""
    out: list[Layer] = []
    for spec in layers:
        if isinstance(spec, MaxPool) and out and isinstance(out[-1], ReLU):
            out[-1] = MaxPoolReLU(spec.n, spec.size, spec.stride)
        else:
            out.append(spec)
    return out


# ------------------------------------------- training forms: batch normalisation, factored convs

# channel -> (mean, variance) of each batch-normalised conv's output (before normalisation),
# by layer number
BatchnormStats = dict[int, tuple[np.ndarray, np.ndarray]]


def has_batchnorm(layers: Sequence[Layer]) -> bool:
    """Whether any layer of the table is a conv with batch normalisation (training form)."""
    return any(isinstance(spec, Conv) and spec.batchnorm for spec in layers)


def is_training_form(layers: Sequence[Layer]) -> bool:
    """Whether any conv of the table is in a training form (batch-normalised or factored),
    which `collapse` and `fold_batchnorm` turn into the plain network before it predicts."""
    return any(isinstance(spec, Conv) and (spec.batchnorm or spec.factored) for spec in layers)


def _check_inference(layers: Sequence[Layer], fn: str) -> None:
    if is_training_form(layers):
        raise ValueError(
            f"{fn}: the layer table is in training form (factored convolutions or batch "
            f"normalisation with each batch's statistics); make it plain first "
            f"(network.collapse, then network.fold_batchnorm / batchnorm_statistics)"
        )


def collapse(layers: Sequence[Layer], params: Params) -> tuple[tuple[Layer, ...], Params]:
    """The network with every factored conv n (`Conv.factored`) made one conv of its size:
        W<n>[f, c, i + u, j + v] = sum over m of W<n>[f, m, i, j] * V<n>[m, c, u, v]
    (i, j < 3; u, v < k - 2), the composition of V<n> (padded) and then W<n> (unpadded).
    Exact up to rounding; computed in float64, returned in the parameters' dtype. Other
    layers, batch normalisation included, keep their parameters; `params` is not modified."""
    out_layers, out = [], dict(params)
    for spec in layers:
        if isinstance(spec, Conv) and spec.factored:
            W, V = params[f"W{spec.n}"], params[f"V{spec.n}"]
            kv = V.shape[2]
            K = np.zeros((W.shape[0], V.shape[1], kv + 2, kv + 2))
            for i in range(3):
                for j in range(3):
                    K[:, :, i : i + kv, j : j + kv] += np.einsum(
                        "fm,mcuv->fcuv", W[:, :, i, j].astype(np.float64), V.astype(np.float64)
                    )
            out[f"W{spec.n}"] = K.astype(W.dtype)
            del out[f"V{spec.n}"]
            spec = replace(spec, factored=False)
        out_layers.append(spec)
    return tuple(out_layers), out


def fold_batchnorm(
    layers: Sequence[Layer], params: Params, stats: BatchnormStats
) -> tuple[tuple[Layer, ...], Params]:
    """The plain network equal to `layers` with every batch normalisation using the population
    statistics `stats` instead of the batch's: conv+bn n becomes Conv n with
        W<n> = W<n> * s,  b<n> = b<n> - mean * s,  s = g<n> / sqrt(var + eps)  (per filter).
    Layers without batch normalisation keep their parameters. Computed in float64, returned
    in the parameters' dtype; `params` is not modified."""
    out_layers, out = [], dict(params)
    for spec in layers:
        if has_batchnorm((spec,)):
            if spec.n not in stats:
                raise ValueError(f"fold_batchnorm: no statistics for layer {spec.n} ({spec.kind})")
            mean, var = stats[spec.n]
            W, b, g = (params[k] for k in spec.param_names)
            s = g.astype(np.float64) / np.sqrt(var + layer.BATCHNORM_EPS)
            out[f"W{spec.n}"] = (W * s[:, None, None, None]).astype(W.dtype)
            out[f"b{spec.n}"] = (b - mean * s).astype(b.dtype)
            del out[f"g{spec.n}"]
            spec = replace(spec, batchnorm=False)
        out_layers.append(spec)
    return tuple(out_layers), out


def conv_moments(
    layers: Sequence[Layer], params: Params, i: int, X: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-filter sum and sum of squares (float64, (F,) each) and count of the outputs of conv
    `layers[i]` before its batch normalisation, for the images X (N, C, H, W): what
    `batchnorm_statistics` adds over the training data. layers[:i] must be plain (folded)."""
    prefix, conv = fused(layers[:i]), layers[i]
    _check_inference(prefix, "conv_moments")

    def moments(Xb: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        Z, _ = forward(prefix, params, Xb)
        W = params[f"W{conv.n}"]
        Z, _ = layer.conv_forward(Z, W, np.zeros(len(W), W.dtype), conv.stride, conv.pad)
        return (*layer.channel_moments(Z), Z.size // conv.filters)

    parts = _in_sub_batches(layers, params, X, moments)
    s = sum((p[0] for p in parts), np.zeros(conv.filters))
    ss = sum((p[1] for p in parts), np.zeros(conv.filters))
    return s, ss, sum(p[2] for p in parts)


def batchnorm_statistics(
    layers: Sequence[Layer],
    params: Params,
    moments: Callable[[tuple[Layer, ...], Params, int], tuple[np.ndarray, np.ndarray, int]],
) -> BatchnormStats:
    """Population statistics of every batch normalisation, layer after layer: each layer's are
    taken with the layers before it already folded (as the network will run), by
    `moments(folded layers, folded params, i)` -> (sum, sum of squares, count) of conv
    layers[i]'s outputs over the data (`conv_moments` on each piece of it, added up)."""
    stats: BatchnormStats = {}
    for i, spec in enumerate(layers):
        if has_batchnorm((spec,)):
            folded, fparams = fold_batchnorm(layers[:i], params, stats)
            s, ss, m = moments((*folded, *layers[i:]), fparams, i)
            mean = s / m
            stats[spec.n] = (mean, np.maximum(ss / m - mean * mean, 0.0))
    return stats


def folded(
    layers: Sequence[Layer], params: Params, X: np.ndarray
) -> tuple[tuple[Layer, ...], Params]:
    """The plain network of a training form: `collapse`, then `fold_batchnorm` with the
    statistics of the images X (N, C, H, W) held in memory (a no-op for a plain network)."""
    layers, params = collapse(layers, params)
    if not has_batchnorm(layers):
        return layers, params
    stats = batchnorm_statistics(layers, params, lambda lays, p, i: conv_moments(lays, p, i, X))
    return fold_batchnorm(layers, params, stats)


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


def activation_bytes(layers: Sequence[Layer], params: Params, X: np.ndarray) -> int:
    """Bytes of all layer outputs of one image of X (N, ...) float."""
    outs = shapes(layers, X.shape[1:], num_outputs(layers, params))[1:]
    return sum(int(np.prod(shape)) for shape in outs) * X.itemsize


def _in_sub_batches(layers: Sequence[Layer], params: Params, X: np.ndarray, fn) -> list:
    """fn(sub-batch) for consecutive sub-batches of X holding SUB_BATCH_BYTES of activations."""
    B = max(1, SUB_BATCH_BYTES // activation_bytes(layers, params, X))
    return [fn(X[i : i + B]) for i in range(0, len(X), B)]


def probabilities(
    layers: Sequence[Layer], params: Params, X: np.ndarray, tta: bool = False
) -> np.ndarray:
    """Softmax probabilities (N, K) of X's dtype for X (N, ...) float, in sub-batches;
    tta: their mean over `augment.test_views` (images (N, C, H, W) flipped and shifted by
    up to one pixel)."""

    def probs(Xb: np.ndarray) -> np.ndarray:
        views = augment.test_views(Xb) if tta else [Xb]
        total = sum(np.exp(layer.log_softmax(forward(layers, params, V)[0])) for V in views)
        return total / (augment.TEST_VIEWS if tta else 1)

    _check_inference(layers, "probabilities")
    layers = fused(layers)
    out = _in_sub_batches(layers, params, X, probs)
    return np.concatenate(out) if out else np.zeros((0, num_outputs(layers, params)), X.dtype)


def predict(
    layers: Sequence[Layer], params: Params, X: np.ndarray, tta: bool = False
) -> np.ndarray:
    """Class indices (N,) int64 for X (N, ...) float, forward in sub-batches so that
    memory stays small whatever N (SUB_BATCH_BYTES of activations at a time).

    tta: test-time augmentation - the class of highest softmax probability averaged over
    `augment.test_views` (`probabilities`)."""
    if tta:
        return probabilities(layers, params, X, tta=True).argmax(axis=1)
    _check_inference(layers, "predict")
    layers = fused(layers)
    out = _in_sub_batches(layers, params, X, lambda Xb: forward(layers, params, Xb)[0].argmax(1))
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
    max-pool run in parallel too; a ReLU and the max-pool after it run as one
    (`fused`, the same results). Losses and gradients are summed in a fixed
    order, so results are reproducible for a given thread count; they equal the
    whole-batch result up to floating-point summation order. A network with batch
    normalisation runs the batch in one piece (its statistics are the batch's).
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
    B = sub_batch or max(1, SUB_BATCH_BYTES // activation_bytes(layers, params, X))
    if has_batchnorm(layers):
        B = N  # batch statistics are the whole batch's, not a sub-batch's
    layers = fused(layers)
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
