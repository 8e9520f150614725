"""The networks by name: the one registry that every command, the trainer, the
benchmarks, the grader and the starter generator read.

Adding a network is one `ModelSpec` in `MODELS`: its layer table and default
hyperparameters are enough to train it (`python -m matrix NAME`, the
trainer); a course classifier (`matrix_class`) and a student's Spark file
(`spark_class`, `step`) are optional. Classes are named as "module:Class"
strings, so this module imports neither the classifiers nor Spark.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from util.network import Conv, Layer, Linear, MaxPool, ReLU, check_layers
from util.optim import SGDConfig

REPO = Path(__file__).resolve().parent.parent


def cnn_layers(
    width: int = 1, batchnorm: bool = False, factored: bool = False
) -> tuple[Layer, ...]:
    """The 10-layer CIFAR-10 CNN, with `width` times its filters; each conv trained with
    batch normalisation (`batchnorm`) and as a 3x3 conv after a 3x3 conv (`factored`), the
    training forms of `network.Conv`:
     1 conv 16 filters 5x5, stride 1, pad 2   32x32x16
     2 ReLU
     3 max-pool 2x2, stride 2                 16x16x16
     4 conv 20 filters 5x5, stride 1, pad 2   16x16x20
     5 ReLU
     6 max-pool 2x2, stride 2                  8x8x20
     7 conv 20 filters 5x5, stride 1, pad 2    8x8x20
     8 ReLU
     9 max-pool 2x2, stride 2                  4x4x20
    10 fully connected 320 -> K, softmax cross-entropy loss"""
    bn, fac = batchnorm, factored
    return (
        Conv(1, filters=16 * width, size=5, pad=2, batchnorm=bn, factored=fac),
        ReLU(2),
        MaxPool(3),
        Conv(4, filters=20 * width, size=5, pad=2, batchnorm=bn, factored=fac),
        ReLU(5),
        MaxPool(6),
        Conv(7, filters=20 * width, size=5, pad=2, batchnorm=bn, factored=fac),
        ReLU(8),
        MaxPool(9),
        Linear(10),
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: tuple[Layer, ...]
    defaults: SGDConfig  # hyperparameters that train on the shipped sample
    iters: int  # iterations of `make matrix-NAME` / `spark-NAME` when training
    batch: int | None  # images per iteration there (None: all)
    pretrained: str | None = None  # shipped trained model, relative to the repository
    matrix_class: str | None = None  # "module:Class" of the course's reference classifier
    spark_class: str | None = None  # "module:Class" of the Spark version students write
    step: int | None = None  # the assignment step of that file
    folds_into: str | None = None  # batch-normalised: the model it is saved as, once folded

    def __post_init__(self) -> None:
        check_layers(self.layers, f"model {self.name!r}")
        if (self.spark_class is None) != (self.step is None):
            raise ValueError(f"model {self.name!r}: spark_class and step go together")

    @property
    def pretrained_path(self) -> Path | None:
        return REPO / self.pretrained if self.pretrained else None

    @property
    def student_file(self) -> str | None:
        """The file students write, relative to the repository: "spark/cnn.py"."""
        return self.spark_class and self.spark_class.split(":")[0].replace(".", "/") + ".py"

    @property
    def student_class(self) -> str | None:
        return self.spark_class and self.spark_class.split(":")[1]


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        # scores = X W1 + b1
        ModelSpec(
            "linear",
            (Linear(1),),
            SGDConfig(lr=0.02, momentum=0.9, weight_decay=1e-3),
            iters=20,
            batch=None,
            matrix_class="matrix.linear:LinearClassifier",
            spark_class="spark.linear:LinearSpark",
            step=1,
        ),
        # two layers, fully connected: 3072 -> 100 -> ReLU -> K
        ModelSpec(
            "nn",
            (Linear(1, units=100), ReLU(2), Linear(3)),
            SGDConfig(lr=0.05, momentum=0.9, weight_decay=1e-3),
            iters=20,
            batch=None,
            matrix_class="matrix.nn:NNClassifier",
            spark_class="spark.nn:NNSpark",
            step=2,
        ),
        # the 10-layer CIFAR-10 CNN (`cnn_layers`)
        ModelSpec(
            "cnn",
            cnn_layers(),
            SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4),
            iters=40,
            batch=100,
            pretrained="data/cnn-pretrained.npz",
            matrix_class="matrix.cnn:CNNClassifier",
            spark_class="spark.cnn:CNNSpark",
            step=3,
        ),
        # the same 10 layers with twice the filters (32, 40, 40; 3.6x the parameters, 3.4x
        # the arithmetic): a teacher for distilling into the CNN (`trainer --teacher`)
        ModelSpec(
            "cnn-wide",
            cnn_layers(width=2),
            SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4),
            iters=40,
            batch=100,
        ),
        # the CNN trained with batch normalisation after each conv; the trainer folds it
        # (population statistics of the training images) and saves a plain "cnn" model
        ModelSpec(
            "cnn-bn",
            cnn_layers(batchnorm=True),
            SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
            iters=40,
            batch=100,
            folds_into="cnn",
        ),
        # the same with each 5x5 conv trained as a 3x3 conv (padding 2) and then a 3x3 conv
        # (none): linear factors that collapse exactly into the plain CNN's 5x5 weights
        ModelSpec(
            "cnn-bn-3x3",
            cnn_layers(batchnorm=True, factored=True),
            SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
            iters=40,
            batch=100,
            folds_into="cnn",
        ),
    )
}

# the assignment's steps, in order
STEPS: tuple[ModelSpec, ...] = tuple(
    sorted((m for m in MODELS.values() if m.step is not None), key=lambda m: m.step)
)


def get(name: str) -> ModelSpec:
    """The model called `name`; ValueError listing the known ones otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None


def import_class(ref: str) -> type:
    """The class named by a "module:Class" reference."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)
