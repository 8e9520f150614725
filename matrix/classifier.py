"""The in-process reference classifier: a layer table, its parameters, and training.

Subclasses (linear, nn, cnn) only name their entry of the model registry
(`util.models`), which holds the layer table and default hyperparameters.
The Spark classifiers subclass this and replace how the gradients are
computed (`prepare`/`gradients`/`release`); the update, the training loop,
validation and save/load are this code.
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from util import models, network, npz, numerics, optim
from util.network import Layer, Params

log = logging.getLogger(__name__)


@dataclass
class IterationReport:
    """What one training iteration reports (one line of a make target's output)."""

    iteration: int
    loss: float  # regularised training loss of this iteration's batch
    seconds: float  # wall time of the gradient computation and update
    val_accuracy: float | None = None
    layer_seconds: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        s = f"iter {self.iteration:4d}  loss {self.loss:.6f}"
        if self.val_accuracy is not None:
            s += f"  val acc {self.val_accuracy:6.2%}"
        return s + f"  time {self.seconds:.3f}s"


class Classifier:
    """A network from a layer table, trained by regularised momentum SGD."""

    name: ClassVar[str] = "classifier"
    saved_as: ClassVar[str] = "classifier"  # the model name save() writes (`inference`)
    layers: ClassVar[tuple[Layer, ...]] = ()
    defaults: ClassVar[optim.SGDConfig] = optim.SGDConfig()

    def __init_subclass__(cls, model: str | None = None, **kwargs: Any) -> None:
        """`class CNNClassifier(Classifier, model="cnn")` takes the registry's entry."""
        super().__init_subclass__(**kwargs)
        if model is not None:
            spec = models.get(model)
            cls.name, cls.layers, cls.defaults = spec.name, spec.layers, spec.defaults
            cls.saved_as = spec.folds_into or spec.name

    def __init__(
        self,
        params: Params | None = None,
        *,
        num_classes: int = 10,
        in_shape: tuple[int, int, int] = (3, 32, 32),
        dtype: Any = np.float32,
        seed: int = 0,
        sgd: optim.SGDConfig | None = None,
        verbose: bool = False,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.num_classes = num_classes
        self.in_shape = tuple(in_shape)
        self.sgd = sgd or optim.SGDConfig(**asdict(self.defaults))
        self.verbose = verbose
        if params is None:
            params = network.init_params(self.layers, self.in_shape, num_classes, seed, self.dtype)
        self.params: Params = {k: np.asarray(v, dtype=self.dtype) for k, v in params.items()}
        self.velocity: Params = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.metadata: dict[str, Any] = {}  # e.g. preprocessing statistics; saved with the model
        # batch normalisation: the training images whose statistics fold it for inference
        self.statistics_images: np.ndarray | None = None
        self.last_layer_seconds: dict[str, float] = {}  # per-layer times of the last gradients()

    # ------------------------------------------------------------------ gradients

    def prepare(self, X: np.ndarray, y: np.ndarray) -> Any:
        """Turns training data into what `gradients()` works on (here: the arrays)."""
        return X, y

    def gradients(self, data: Any, batch: np.ndarray | None) -> tuple[float, Params]:
        """Mean data loss and gradients over the rows `batch` of the data (None: all)."""
        X, y = data
        if batch is not None:
            X, y = X[batch], y[batch]
        timer = {} if self.verbose else None
        loss, grads = network.loss_and_grads(self.layers, self.params, X, y, timer=timer)
        self.last_layer_seconds = timer or {}
        return loss, grads

    def release(self, data: Any) -> None:
        """Frees what `prepare()` made."""

    # ------------------------------------------------------------------ training

    def step(self, loss: float, grads: Params) -> float:
        """Applies one regularised momentum update; returns the regularised loss."""
        self.params, self.velocity, loss = optim.sgd_step(
            self.params, grads, self.velocity, loss, self.sgd
        )
        return loss

    def train(
        self,
        X: np.ndarray,
        y: np.ndarray,
        iters: int,
        *,
        batch_size: int | None = None,
        seed: int = 0,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        on_iteration: Callable[[IterationReport], None] | None = None,
    ) -> list[IterationReport]:
        """Trains for `iters` iterations on X (N, C, H, W) float, y (N,) int.

        batch_size None (or >= N) uses every image in every iteration;
        otherwise each iteration takes the next batch_size rows of a seeded
        permutation (a new one each epoch). Validation accuracy is measured
        after each iteration when X_val/y_val are given.
        """
        if iters < 0:
            raise ValueError(f"train: iters must be >= 0, got {iters}")
        batches = _batches(len(y), batch_size, seed)
        if network.has_batchnorm(self.layers):
            self.statistics_images = X  # (a reference, kept only where prediction needs it)
        data = self.prepare(X, y)
        val = self.prepare(X_val, y_val) if X_val is not None and y_val is not None else None
        history = []
        try:
            for it in range(1, iters + 1):
                t0 = time.perf_counter()
                loss, grads = self.gradients(data, next(batches))
                self._check_finite(it, loss, grads)
                loss = self.step(loss, grads)
                report = IterationReport(it, loss, time.perf_counter() - t0)
                report.layer_seconds = dict(self.last_layer_seconds)
                if val is not None:
                    report.val_accuracy = self.accuracy_on(val)
                history.append(report)
                if on_iteration:
                    on_iteration(report)
        finally:
            self.release(data)
            if val is not None:
                self.release(val)
        return history

    def _check_finite(self, it: int, loss: float, grads: Params) -> None:
        bad = numerics.non_finite(grads)
        if not np.isfinite(loss) or bad:
            raise FloatingPointError(
                f"{self.name}: iteration {it}: loss {loss} / non-finite gradients {bad}; "
                f"training diverged - try a smaller learning rate (now {self.sgd.lr})"
            )

    # ------------------------------------------------------------------ inference

    def inference(self) -> tuple[tuple[Layer, ...], Params]:
        """(layers, params) as prediction runs them and `save()` writes them: a network in
        training form made the plain model its registry entry names (`folds_into`): factored
        convolutions collapsed, batch normalisation folded with the statistics of the images
        it was trained on (`network.folded`)."""
        if not network.is_training_form(self.layers):
            return self.layers, self.params
        if network.has_batchnorm(self.layers) and self.statistics_images is None:
            raise ValueError(
                f"{self.name}: batch normalisation needs the training images' statistics: "
                f"train() first"
            )
        return network.folded(self.layers, self.params, self.statistics_images)

    def predict(self, X: np.ndarray, tta: bool = False) -> np.ndarray:
        """Class indices (N,) for X (N, C, H, W), computed a sub-batch at a time; `tta`:
        averaged over flipped and shifted views (test-time augmentation, `network.predict`)."""
        return network.predict(*self.inference(), X, tta)

    def accuracy_on(self, data: Any, tta: bool = False) -> float:
        """Fraction of correct predictions on what `prepare()` made of (X, y)."""
        X, y = data
        if len(y) == 0:
            raise ValueError(f"{self.name}: empty validation set")
        return float(np.mean(self.predict(X, tta) == y))

    def validate(self, X: np.ndarray, y: np.ndarray, tta: bool = False) -> float:
        """Accuracy (fraction correct) on X (N, C, H, W), y (N,)."""
        data = self.prepare(X, y)
        try:
            return self.accuracy_on(data, tta)
        finally:
            self.release(data)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Writes parameters and metadata (model name, dtype, preprocessing) to an .npz file;
        a batch-normalised network as the plain model it folds into (`inference`)."""
        meta = {"model": self.saved_as, "num_classes": self.num_classes, **self.metadata}
        params = self.inference()[1]
        npz.write(path, "meta", meta, {f"param/{k}": v for k, v in params.items()})

    def adopt(
        self,
        path: str | Path,
        classes: list[str] | None = None,
        saved: tuple[Params, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Takes the parameters saved in `path` (by `save()`), after checking that they are
        this network's and, if given, were trained on `classes`; returns the file's metadata
        (e.g. its preprocessing statistics). saved: `load_params(path)` if already read."""
        params, meta = saved or load_params(path)
        if meta.get("model") != self.name:
            raise ValueError(f"{path}: holds a {meta.get('model')!r} model, not {self.name!r}")
        if classes is not None and meta.get("classes", classes) != classes:
            raise ValueError(
                f"{path}: trained on classes {meta['classes']}, the data has {classes}"
            )
        check_param_shapes(path, params, self.params)
        self.params = {k: v.astype(self.dtype) for k, v in params.items()}
        return meta

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Classifier:
        """Reads a model written by `save()`; checks it is this model with the right shapes."""
        params, meta = saved = load_params(path)
        if not isinstance(meta.get("num_classes"), int):
            raise ValueError(f"{path}: the model file does not say its number of classes")
        kwargs.setdefault("dtype", next(iter(params.values())).dtype)
        model = cls(num_classes=meta["num_classes"], **kwargs)
        model.adopt(path, saved=saved)
        model.metadata = {k: v for k, v in meta.items() if k not in ("model", "num_classes")}
        return model


def classifier_class(name: str) -> type[Classifier]:
    """The matrix classifier of the registry's model `name`: its course class, or one made
    from the registry entry alone."""
    spec = models.get(name)
    if spec.matrix_class:
        return models.import_class(spec.matrix_class)
    return types.new_class(f"{name}Classifier", (Classifier,), {"model": name})


def load_params(path: str | Path) -> tuple[Params, dict[str, Any]]:
    """Parameters and metadata from an .npz written by `Classifier.save()`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        meta, arrays = npz.read(path, "meta")
    except npz.Unreadable as e:
        raise ValueError(f"{path}: not a model file written by this project ({e})") from e
    params = {k[len("param/") :]: v for k, v in arrays.items() if k.startswith("param/")}
    if not params:
        raise ValueError(f"{path}: the model file holds no parameters")
    return params, meta


def param_problems(arrays: Params, expected: Params) -> list[str]:
    """Every array of `expected` (by name) missing from `arrays`, extra in it, or there with
    another shape: ["missing W3", "unexpected W9", "b1 has shape (10,), expected (100,)"]."""
    problems = [f"missing {k}" for k in expected if k not in arrays]
    problems += [f"unexpected {k}" for k in arrays if k not in expected]
    problems += [
        f"{k} has shape {np.shape(arrays[k])}, expected {v.shape}"
        for k, v in expected.items()
        if k in arrays and np.shape(arrays[k]) != v.shape
    ]
    return problems


def check_param_shapes(path: Any, params: Params, expected: Params) -> None:
    """Raises ValueError naming every missing, extra or mis-shaped parameter."""
    problems = param_problems(params, expected)
    if problems:
        raise ValueError(f"{path}: parameters do not fit the network: " + "; ".join(problems))


def _batches(n: int, batch_size: int | None, seed: int):
    """Endless iterator of row-index arrays (None = the whole data set)."""
    if batch_size is None or batch_size >= n:
        while True:
            yield None
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            yield np.sort(perm[i : i + batch_size])
