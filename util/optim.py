"""L2 regularisation and momentum SGD, shared by the matrix and Spark versions.

Both versions call `sgd_step` on the driver with the mean data loss and its
gradients, so the update is literally the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from util.network import Params


@dataclass
class SGDConfig:
    lr: float = 0.01  # learning rate
    momentum: float = 0.9  # velocity decay; 0 gives plain gradient descent
    weight_decay: float = 1e-4  # L2 strength on weight matrices (`is_weight`)

    def override(self, **values: float | None) -> SGDConfig:
        """A copy with the given fields replaced, except those given as None (a command
        line's unset options)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


def is_weight(name: str) -> bool:
    """Weight matrices (W<n>, and V<n>, a factored conv's first factor) are regularised;
    biases and batch-normalisation scales are not."""
    return name.startswith(("W", "V"))


def regularise(loss: float, grads: Params, params: Params, weight_decay: float) -> float:
    """Adds 0.5 * wd * sum(W**2) to the loss and wd * W to each weight's gradient (in place).

    Returns the regularised loss.
    """
    reg = 0.0
    for name, p in params.items():
        if is_weight(name):
            reg += float(np.sum(p * p))
            grads[name] += weight_decay * p
    return loss + 0.5 * weight_decay * reg


def sgd_step(
    params: Params, grads: Params, velocity: Params, loss: float, cfg: SGDConfig
) -> tuple[Params, Params, float]:
    """One regularised momentum step: v = m*v - lr*g; p += v.

    params, velocity: dicts of arrays (not modified); grads: mean data gradients
    (modified: regularisation is added). Returns new params, new velocity, and
    the regularised loss.
    """
    missing = set(params) ^ set(grads)
    if missing:
        raise ValueError(f"sgd_step: parameters and gradients differ in {sorted(missing)}")
    loss = regularise(loss, grads, params, cfg.weight_decay)
    new_params, new_velocity = {}, {}
    for name, p in params.items():
        v = cfg.momentum * velocity.get(name, np.zeros_like(p)) - cfg.lr * grads[name]
        new_velocity[name] = v.astype(p.dtype, copy=False)
        new_params[name] = p + new_velocity[name]
    return new_params, new_velocity, loss
