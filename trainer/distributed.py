"""Mini-batch data-parallel training on Spark: the data layout and the two modes.

Layout. A seeded permutation of the N training images is cut into
`steps = N // batch` batches; each batch into `workers` equal chunks. A
*block* is the `avg_every` (K) consecutive chunks that one worker uses in one
round, and every block is one RDD partition, so a step (sync) or a round
(avg) is a job over `workers` whole partitions (`SparkContext.runJob` with a
partition list): no iteration deserialises any other part of the cached data.

    partition r * workers + p  =  [chunk(r*K + k, p) for k in 0..K-1]

Modes.
- sync (K = 1): every step, each worker returns the summed loss and gradients
  of its chunk; they are added in partition order (`trainer.aggregate`), and
  the driver divides by the batch size and applies util.optim: exactly
  single-process mini-batch SGD.
- avg: each worker runs K local SGD steps from the broadcast parameters and
  velocity on its own chunks; parameters and velocities are added the same way
  and averaged.

Images travel as uint8 and are normalised (and augmented) on the executors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from util import augment, network, optim
from util.data import Normalizer
from util.network import Layer


def check_split(batch: int, workers: int, avg_every: int) -> None:
    """ValueError unless a batch splits into `workers` equal chunks and K >= 1 (the part of a
    layout that does not depend on the number of images)."""
    if workers < 1 or batch < workers or batch % workers:
        raise ValueError(f"batch {batch} must be a positive multiple of the {workers} partitions")
    if avg_every < 1:
        raise ValueError(f"--avg-every must be >= 1, got {avg_every}")


@dataclass(frozen=True)
class Layout:
    n_images: int
    batch: int  # images per step, all workers together
    workers: int  # chunks per step = partitions per job
    avg_every: int = 1  # K: chunks per block (local steps per round in avg mode)

    def __post_init__(self) -> None:
        check_split(self.batch, self.workers, self.avg_every)
        if self.rounds < 1:
            raise ValueError(
                f"{self.n_images} images make no complete round of {self.avg_every} step(s) "
                f"of batch {self.batch}; use a smaller batch or --avg-every"
            )

    @property
    def chunk(self) -> int:
        return self.batch // self.workers

    @property
    def rounds(self) -> int:
        """Rounds (jobs) per epoch."""
        return self.n_images // self.batch // self.avg_every

    @property
    def steps(self) -> int:
        """SGD steps per epoch."""
        return self.rounds * self.avg_every

    @property
    def dropped(self) -> int:
        """Images of the permutation that no step uses (the same ones every epoch)."""
        return self.n_images - self.steps * self.batch

    def chunk_rows(self, perm: np.ndarray, step: int, worker: int) -> np.ndarray:
        start = step * self.batch + worker * self.chunk
        return perm[start : start + self.chunk]

    def partitions_of_round(self, r: int) -> list[int]:
        return [r * self.workers + p for p in range(self.workers)]


def blocks(X: np.ndarray, y: np.ndarray, layout: Layout, perm: np.ndarray):
    """Yields (partition index, [(X_chunk uint8, y_chunk)] * K) in partition order."""
    for r in range(layout.rounds):
        for p in range(layout.workers):
            rows = [
                layout.chunk_rows(perm, r * layout.avg_every + k, p)
                for k in range(layout.avg_every)
            ]
            yield r * layout.workers + p, [(X[i], y[i]) for i in rows]


def task_rng(seed: int, step: int, partition: int) -> np.random.Generator:
    """The augmentation generator of one chunk of one step: a function of its coordinates."""
    return np.random.default_rng([seed, step, partition])


@dataclass(frozen=True)
class Recipe:
    """What an executor needs to turn a uint8 chunk into a float batch."""

    layers: tuple[Layer, ...]
    normalizer: Normalizer
    dtype: str
    augment: bool
    seed: int
    shift: int = 2  # pixels of random shift when augmenting (0: flips only)

    def inputs(self, X: np.ndarray, step: int, partition: int) -> np.ndarray:
        Xf = self.normalizer.apply(X, self.dtype)
        if self.augment:
            Xf = augment.augment(Xf, task_rng(self.seed, step, partition), shift=self.shift)
        return Xf


def sync_task(recipe: Recipe, params_bc, step: int) -> Callable:
    """Partition function: summed loss and gradients of the partition's chunk."""

    def run(records):
        for key, chunks in records:
            (X, y) = chunks[0]
            Xf = recipe.inputs(X, step, key)
            loss, grads = network.loss_and_grads(recipe.layers, params_bc.value, Xf, y, "sum")
            yield loss, len(y), grads

    return run


def avg_task(recipe: Recipe, state_bc, first_step: int, lrs: Sequence[float], sgd: optim.SGDConfig):
    """Partition function: K local momentum-SGD steps; returns (params, velocity, loss_sum, n)."""

    def run(records):
        for key, chunks in records:
            params, velocity = state_bc.value
            loss_sum, n = 0.0, 0
            for k, (X, y) in enumerate(chunks):
                Xf = recipe.inputs(X, first_step + k, key)
                loss, grads = network.loss_and_grads(recipe.layers, params, Xf, y)
                cfg = sgd.override(lr=lrs[k])
                params, velocity, loss = optim.sgd_step(params, grads, velocity, loss, cfg)
                loss_sum += loss * len(y)
                n += len(y)
            yield params, velocity, loss_sum, n

    return run


def moments_task(recipe: Recipe, net_bc, i: int):
    """Partition function: per chunk, ((partition, chunk), (sum, sum of squares, count)) per
    filter of conv layer i's outputs before its batch normalisation (`network.conv_moments`),
    on the chunk's images without augmentation, with the broadcast (layers, params) folded up
    to layer i."""

    def run(records):
        layers, params = net_bc.value
        for key, chunks in records:
            for k, (X, _) in enumerate(chunks):
                Xf = recipe.normalizer.apply(X, recipe.dtype)
                yield (key, k), network.conv_moments(layers, params, i, Xf)

    return run


def accuracy_task(
    layers: tuple[Layer, ...], normalizer: Normalizer, dtype: str, params_bc, tta: bool = False
):
    """Partition function: (correct, total, (predictions, labels)) per chunk of the partition;
    tta: test-time augmentation (`network.predict`)."""

    def run(records):
        for _, chunks in records:
            for X, y in chunks:
                pred = network.predict(layers, params_bc.value, normalizer.apply(X, dtype), tta)
                yield int(np.sum(pred == y)), len(y), (pred, y)

    return run


def add(a: Any, b: Any) -> Any:
    """The elementwise sum of two round results of the same structure (tuples of numbers and
    dicts of arrays), as new objects: neither argument is modified (no aliasing)."""
    if isinstance(a, tuple):
        return tuple(add(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return {k: a[k] + b[k] for k in a}
    return a + b
