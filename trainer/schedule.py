"""The learning-rate schedule of a run: constant, cosine over the whole run, or step drops."""

from __future__ import annotations

import math

from trainer.settings import Settings


def learning_rate(s: Settings, base: float, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate of SGD step `step` (0-based) of `total`."""
    if s.lr_schedule == "constant":
        return base
    if s.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    if s.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return base * 0.1 ** sum(epoch >= d for d in s.lr_drops)
    raise ValueError(f"unknown --lr-schedule {s.lr_schedule!r}")
