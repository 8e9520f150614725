"""The matrix-vs-Spark tester: the Spark version must retrace the matrix version.

Both versions start from the same parameters and train on the same images;
after every iteration the loss and every parameter must agree to a relative
error of at most `tol` (1e-9 in float64). Before the first iteration the Spark
version's forward() runs once and its records must keep the record contract
(spark/contract.py), so a wrong record layout is named as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.sql import SparkSession

from matrix.classifier import Classifier
from spark import contract
from spark.classifier import SparkClassifier, SparkTaskError
from spark.session import job_group
from util.network import Params
from util.numerics import rel_error


class MismatchError(AssertionError):
    """The Spark version departed from the matrix version."""


@dataclass
class Agreement:
    iteration: int
    loss_error: float
    param_errors: dict[str, float]

    @property
    def worst(self) -> float:
        return max(self.loss_error, *self.param_errors.values())


def compare_params(
    it: int, loss_m: float, loss_s: float, pm: Params, ps: Params, tol: float
) -> Agreement:
    """Errors of one iteration; raises MismatchError naming what disagrees."""
    if set(pm) != set(ps):
        raise MismatchError(
            f"iteration {it}: parameter names differ: matrix {sorted(pm)} vs spark {sorted(ps)}"
        )
    for k in pm:
        if np.shape(pm[k]) != np.shape(ps[k]):
            raise MismatchError(
                f"iteration {it}: {k} has shape {np.shape(ps[k])} in Spark, "
                f"{np.shape(pm[k])} in the matrix version"
            )
    agreement = Agreement(
        it, rel_error(loss_m, loss_s), {k: rel_error(pm[k], ps[k]) for k in sorted(pm)}
    )
    bad = [(k, e) for k, e in agreement.param_errors.items() if not e <= tol]
    if not agreement.loss_error <= tol:
        bad.insert(0, ("loss", agreement.loss_error))
    if bad:
        detail = ", ".join(f"{k} {e:.2e}" for k, e in bad)
        raise MismatchError(
            f"iteration {it}: Spark departs from the matrix version (relative error > {tol:.0e}): "
            f"{detail}; matrix loss {loss_m:.12g}, spark loss {loss_s:.12g}"
        )
    return agreement


Trajectory = list[tuple[float, Params]]  # (loss, parameters) after each iteration


def _recorder(model: Classifier, out: Trajectory):
    """An on_iteration callback appending (loss, a copy of model's parameters) to out."""
    return lambda r: out.append((r.loss, {k: v.copy() for k, v in model.params.items()}))


def matrix_trajectory(
    matrix_cls: type[Classifier],
    X: np.ndarray,
    y: np.ndarray,
    *,
    iters: int,
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[Params, Trajectory]:
    """The reference: the matrix version's initial parameters and its trajectory.
    X: (N, C, H, W) float32|float64, y: (N,) int. Imports no Spark code."""
    kwargs = dict(num_classes=int(y.max()) + 1, in_shape=X.shape[1:], dtype=X.dtype, seed=seed)
    ref = matrix_cls(**kwargs)
    init = {k: v.copy() for k, v in ref.params.items()}
    out: Trajectory = []
    ref.train(
        X,
        y,
        iters,
        batch_size=batch_size,
        seed=seed,
        on_iteration=_recorder(ref, out),
    )
    return init, out


def spark_trajectory(
    spark_cls: type[SparkClassifier],
    spark: SparkSession,
    init: Params,
    X: np.ndarray,
    y: np.ndarray,
    *,
    iters: int,
    partitions: int = 3,
    chunks: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
) -> Trajectory:
    """The Spark version's trajectory from the parameters `init`, after checking forward()'s
    records (ContractError). A failing iteration raises (SparkTaskError and others)."""
    kwargs = dict(num_classes=int(y.max()) + 1, in_shape=X.shape[1:], dtype=X.dtype, seed=seed)
    sut = spark_cls(
        {k: v.copy() for k, v in init.items()},
        spark=spark,
        partitions=partitions,
        chunks=chunks,
        **kwargs,
    )
    check_records(sut, X, y)
    out: Trajectory = []
    sut.train(
        X,
        y,
        iters,
        batch_size=batch_size,
        seed=seed,
        on_iteration=_recorder(sut, out),
    )
    return out


def compare_trajectories(expected: Trajectory, got: Trajectory, tol: float) -> list[Agreement]:
    """The agreement of each iteration; MismatchError at the first one that departs, or when
    the Spark version ran another number of iterations."""
    out = [
        compare_params(it, loss_m, loss_s, pm, ps, tol)
        for it, ((loss_m, pm), (loss_s, ps)) in enumerate(zip(expected, got, strict=False), start=1)
    ]
    if len(got) != len(expected):
        raise MismatchError(
            f"the Spark version ran {len(got)} iterations, the matrix version {len(expected)}"
        )
    return out


def run_tester(
    matrix_cls: type[Classifier],
    spark_cls: type[SparkClassifier],
    spark: SparkSession,
    X: np.ndarray,
    y: np.ndarray,
    *,
    iters: int = 3,
    partitions: int = 3,
    chunks: int | Sequence[int] | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    tol: float = 1e-9,
) -> list[Agreement]:
    """Trains both versions from the same parameters; returns the per-iteration agreement.

    X: (N, C, H, W) float64 (the dtype of X is used by both versions), y: (N,) int.
    Raises ContractError if forward()'s records break the record contract, MismatchError at
    the first iteration that disagrees.
    """
    init, expected = matrix_trajectory(
        matrix_cls, X, y, iters=iters, batch_size=batch_size, seed=seed
    )
    got = spark_trajectory(
        spark_cls,
        spark,
        init,
        X,
        y,
        iters=iters,
        partitions=partitions,
        chunks=chunks,
        batch_size=batch_size,
        seed=seed,
    )
    return compare_trajectories(expected, got, tol)


def check_records(sut: SparkClassifier, X: np.ndarray, y: np.ndarray) -> None:
    """Runs sut.forward() once on X (N, C, H, W), y (N,) and checks its records against the
    record contract (ContractError). The jobs run in a job group of their own, so the job
    counts of the caller's group stay those of training."""
    with job_group(sut.sc, "sparknet-record-contract"):
        data = sut.parallelize(X, y)
        try:
            contract.forward_records(sut, data, sut.broadcast_params(), y)
        except SparkTaskError:
            pass  # a failing task: the first iteration fails the same way and reports it
        finally:
            sut.release(data)
