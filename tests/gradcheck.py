"""Centred-difference gradient checking (float64)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from util.numerics import rel_error


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f() / d x by central differences; x is perturbed in place and restored."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * h)
    return grad


def check_gradient(
    f: Callable[[], float], x: np.ndarray, analytic: np.ndarray, tol: float = 1e-7
) -> float:
    """Asserts that `analytic` matches the numerical gradient of f at x; returns the error."""
    assert analytic.shape == x.shape, f"gradient shape {analytic.shape} != {x.shape}"
    err = rel_error(numerical_gradient(f, x), analytic)
    assert err < tol, f"relative error {err:.3e} >= {tol:.0e}"
    return err
