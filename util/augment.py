"""Data augmentation for training: random horizontal flips and small random shifts.

Pure functions of (images, generator): the caller seeds the generator from
(run seed, step, partition) so that augmentation is reproducible and a
resumed run sees exactly the images an uninterrupted one would.
"""

from __future__ import annotations

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
        shifted = np.zeros_like(out)
        dy = rng.integers(-shift, shift + 1, N)
        dx = rng.integers(-shift, shift + 1, N)
        for i in range(N):
            ys, yd = (
                (slice(0, H - dy[i]), slice(dy[i], H))
                if dy[i] >= 0
                else (slice(-dy[i], H), slice(0, H + dy[i]))
            )
            xs, xd = (
                (slice(0, W - dx[i]), slice(dx[i], W))
                if dx[i] >= 0
                else (slice(-dx[i], W), slice(0, W + dx[i]))
            )
            shifted[i, :, yd, xd] = out[i, :, ys, xs]
        out = shifted
    return out
