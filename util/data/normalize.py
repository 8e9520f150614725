"""Per-channel normalisation of uint8 images, fitted on the training data only.

The statistics travel with a saved model (`to_meta`/`from_meta`), and Spark
executors unpickle `Normalizer` objects: keep this module's imports light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from util.data.dataset import describe


@dataclass
class Normalizer:
    """Per-channel standardisation: (X / 255 - mean[c]) / std[c].

    mean, std: (C,) float64, statistics of X / 255 over the training images.
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.std = np.asarray(self.std, dtype=np.float64)
        if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
            raise ValueError(
                f"Normalizer: mean and std must be (C,) vectors, got {self.mean.shape}, "
                f"{self.std.shape}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(self.std > 0)):
            raise ValueError(f"Normalizer: need finite mean and std > 0, got std {self.std}")

    @classmethod
    def fit(cls, X: np.ndarray) -> Normalizer:
        """Exact per-channel mean and (population) std of X / 255 for X (N, C, H, W) uint8.

        Fit on the training images only. Computed from per-channel histograms
        of the 256 pixel values (`pixel_counts`, `from_counts`), so it needs no
        float copy of X, and data spread over many places gives the same
        statistics bit for bit: add the parts' integer histograms, then call
        `from_counts`. A constant channel (std 0) gets std 1 so that applying
        stays finite.
        """
        _check_uint8_images("Normalizer.fit", X)
        if X.size == 0:
            raise ValueError("Normalizer.fit: no images")
        return cls.from_counts(pixel_counts(X))

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> Normalizer:
        """The statistics of images whose per-channel histograms are `counts`.

        counts: (C, 256) int64, counts[c, v] = pixels of value v in channel c
        (`pixel_counts`, or the sum of several parts' `pixel_counts`: integer
        sums, so the order of adding does not matter).
        """
        counts = np.asarray(counts)
        if counts.ndim != 2 or counts.shape[1] != 256 or counts.dtype.kind not in "iu":
            raise TypeError(
                f"Normalizer.from_counts: counts must be (C, 256) integers, got {describe(counts)}"
            )
        if counts.size == 0 or counts[0].sum() == 0:
            raise ValueError("Normalizer.from_counts: no images")
        values = np.arange(256) / 255.0
        mean, std = [], []
        for c in range(counts.shape[0]):
            m = counts[c] @ values / counts[c].sum()
            var = counts[c] @ (values - m) ** 2 / counts[c].sum()
            mean.append(m)
            std.append(np.sqrt(var) if var > 0 else 1.0)
        return cls(np.array(mean), np.array(std))

    def apply(self, X: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """(X / 255 - mean) / std per channel: X (N, C, H, W) uint8 -> (N, C, H, W) `dtype`."""
        _check_uint8_images("Normalizer.apply", X)
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"Normalizer.apply: dtype must be float32 or float64, got {dtype}")
        if X.shape[1] != len(self.mean):
            raise ValueError(
                f"Normalizer.apply: X has {X.shape[1]} channels, the normalizer {len(self.mean)}"
            )
        # Per-channel affine map on float64 constants, rounded once to dtype: out = X * a + b.
        a = (1.0 / (255.0 * self.std)).astype(dtype)[None, :, None, None]
        b = (-self.mean / self.std).astype(dtype)[None, :, None, None]
        out = X.astype(dtype)
        out *= a
        out += b
        return out

    def to_meta(self) -> dict[str, Any]:
        """JSON-serialisable description (for a model's .npz metadata); exact round trip."""
        return {
            "kind": "per-channel",
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Normalizer:
        """Inverse of `to_meta`; ValueError if `meta` is not such a description."""
        if not isinstance(meta, dict) or meta.get("kind") != "per-channel":
            raise ValueError(f"Normalizer.from_meta: not a per-channel normalizer: {meta!r}")
        try:
            return cls(np.array(meta["mean"], dtype=float), np.array(meta["std"], dtype=float))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"Normalizer.from_meta: bad mean/std in {meta!r} ({e})") from e


def pixel_counts(X: np.ndarray) -> np.ndarray:
    """Per-channel histograms of X (N, C, H, W) uint8: (C, 256) int64 (see `Normalizer.fit`)."""
    _check_uint8_images("pixel_counts", X)
    return np.stack(
        [np.bincount(X[:, c].ravel(), minlength=256).astype(np.int64) for c in range(X.shape[1])]
    )


def _check_uint8_images(fn: str, X: Any) -> None:
    if not isinstance(X, np.ndarray) or X.dtype != np.uint8 or X.ndim != 4:
        raise TypeError(f"{fn}: X must be an (N, C, H, W) uint8 array, got {describe(X)}")
