"""The raw-image data set, its error type, and the stratified train/validation split.

A `Dataset` holds raw pixels, X (N, 3, H, W) uint8 and y (N,) int64, plus
the class names in label order; every loader in `util.data` returns one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class DataError(ValueError):
    """A data file or folder is missing, malformed, or not what was expected."""


@dataclass
class Dataset:
    """Raw images and labels.

    X: (N, 3, H, W) uint8 pixels, channels R, G, B;
    y: (N,) int64 labels in 0..len(classes)-1;
    classes: class names in label order.
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if not isinstance(self.X, np.ndarray) or self.X.dtype != np.uint8 or self.X.ndim != 4:
            raise TypeError(f"Dataset: X must be a 4-d uint8 array, got {describe(self.X)}")
        if not isinstance(self.y, np.ndarray) or self.y.dtype != np.int64 or self.y.ndim != 1:
            raise TypeError(f"Dataset: y must be a 1-d int64 array, got {describe(self.y)}")
        if len(self.X) != len(self.y):
            raise ValueError(f"Dataset: {len(self.X)} images but {len(self.y)} labels")
        self.classes = list(self.classes)
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise ValueError(
                f"Dataset: labels span {self.y.min()}..{self.y.max()}, "
                f"expected 0..{len(self.classes) - 1} for {len(self.classes)} classes"
            )

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray) -> Dataset:
        """The images at the integer indices `idx` (copies), same classes."""
        return Dataset(self.X[idx], self.y[idx], list(self.classes))


def describe(a: Any) -> str:
    """What `a` is, for error messages: shape and dtype of an array, else its type."""
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    return type(a).__name__


def check_split(split: str) -> None:
    """ValueError unless `split` is "train" or "test"."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def train_val_split(ds: Dataset, n_val: int, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Splits off `n_val` validation images, stratified by class, deterministically.

    The images at `split_indices(ds.y, len(ds.classes), n_val, seed)`: same ds
    and seed, same split; both parts keep the original relative order.
    """
    train, val = split_indices(ds.y, len(ds.classes), n_val, seed)
    return ds.subset(train), ds.subset(val)


def split_indices(
    y: np.ndarray, n_classes: int, n_val: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The (train, val) row indices of `train_val_split`, from the labels alone.

    y: (N,) integer labels in 0..n_classes-1, in load order. Each class gives
    (almost exactly) its share of `n_val`: the images of a class are shuffled
    with `seed` and spread evenly over [0, 1), and the n_val images with the
    smallest positions form the validation set. Returns two sorted (n,) int64
    arrays that together are 0..N-1. Data that lives elsewhere (Spark) is split
    the same way from its labels, without its pixels.
    """
    if isinstance(n_val, bool) or not isinstance(n_val, (int, np.integer)):
        raise TypeError(f"train_val_split: n_val must be an int, got {type(n_val).__name__}")
    if not 0 <= n_val < len(y):
        raise ValueError(f"train_val_split: n_val must be in 0..{len(y) - 1}, got {n_val}")
    rng = np.random.default_rng(seed)
    position = np.empty(len(y))
    for c in range(n_classes):
        members = rng.permutation(np.flatnonzero(y == c))
        position[members] = (np.arange(len(members)) + 0.5) / max(len(members), 1)
    # ties (same position in equally large classes) broken by a seeded random key
    order = np.lexsort((rng.random(len(y)), position))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
