"""The numerical comparisons that tests, the tester, the grader and the trainers share."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def rel_error(a: np.ndarray | float, b: np.ndarray | float) -> float:
    """max |a - b| / max(max |a|, max |b|): a scale-aware relative error, 0 when both are 0.

    a, b: arrays (or scalars) of one shape, compared in float64."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.abs(a).max(initial=0.0), np.abs(b).max(initial=0.0))
    return 0.0 if scale == 0 else float(np.abs(a - b).max() / scale)


def non_finite(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """The names of the arrays holding a NaN or an infinity, in the mapping's order."""
    return [k for k, a in arrays.items() if not np.all(np.isfinite(a))]
