"""Data augmentation: random horizontal flips and small random shifts for training, and the
fixed flipped and shifted views that test-time augmentation averages over.

`augment` is a pure function of (images, generator): the caller seeds the generator from
(run seed, step, partition) so that augmentation is reproducible and a
resumed run sees exactly the images an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def augment(
    X: np.ndarray, rng: np.random.Generator, flip: bool = True, shift: int = 2
) -> np.ndarray:
    """A new array: each image flipped left-right with probability 1/2 and shifted by up to
    `shift` pixels in each direction (the uncovered border is zero, i.e. the mean after
    normalisation). X: (N, C, H, W) float; the result has X's shape and dtype.
    """
    if X.ndim != 4:
        raise ValueError(f"augment: X must be (N, C, H, W), got shape {X.shape}")
    N, _, H, W = X.shape
    out = X[:, :, :, ::-1].copy() if flip else X.copy()
    if flip:
        keep = rng.random(N) >= 0.5
        out[keep] = X[keep]
    if shift > 0:
        moved = np.zeros_like(out)
        dy = rng.integers(-shift, shift + 1, N)
        dx = rng.integers(-shift, shift + 1, N)
        for i in range(N):
            (ys, yd), (xs, xd) = _move(dy[i], H), _move(dx[i], W)
            moved[i, :, yd, xd] = out[i, :, ys, xs]
        out = moved
    return out


def shifted(X: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """X (N, C, H, W) moved `dy` pixels down and `dx` right (negative: up, left); the
    uncovered border is zero."""
    (ys, yd), (xs, xd) = _move(dy, X.shape[2]), _move(dx, X.shape[3])
    out = np.zeros_like(X)
    out[:, :, yd, xd] = X[:, :, ys, xs]
    return out


TEST_SHIFT = 1  # pixels: test-time views are shifted by at most this in each direction
TEST_VIEWS = 2 * (2 * TEST_SHIFT + 1) ** 2  # (un)flipped x every shift: 18


def test_views(X: np.ndarray) -> Iterator[np.ndarray]:
    """The TEST_VIEWS views of X (N, C, H, W) that test-time augmentation classifies: every
    shift by at most TEST_SHIFT pixels in each direction, of X and of X flipped left-right.
    The first view is X itself."""
    if X.ndim != 4:
        raise ValueError(f"test_views: X must be (N, C, H, W), got shape {X.shape}")
    offsets = sorted(range(-TEST_SHIFT, TEST_SHIFT + 1), key=abs)
    for view in (X, X[:, :, :, ::-1]):
        for dy in offsets:
            for dx in offsets:
                yield shifted(view, dy, dx)


def _move(d: int, n: int) -> tuple[slice, slice]:
    """(source, destination) slices that move an axis of length n by d."""
    return (slice(0, n - d), slice(d, n)) if d >= 0 else (slice(-d, n), slice(0, n + d))
