"""The graded checks, run by `grading/grade.py` in a worker process (staff-only).

    python -m grading.checks --progress FILE [--master local[2]] CHECK_ID ...

Runs the named checks in order in one process with one SparkSession, on the
shipped sample in float64, and appends one JSON line per event to FILE:

    {"event": "ready"}                                   Spark is up, checks start
    {"event": "start", "id": "nn.forward"}               a check begins
    {"event": "end", "id": "nn.forward", "passed": true, "output": "..."}

The grader watches FILE: it enforces each check's time limit (killing this
process group, JVM included) and restarts a worker for the checks left after a
timeout or a crash. Nothing here decides points; grading/grading.toml does.

Per classifier `m` (linear, nn, cnn) there are five checks:

    m.forward               forward() is lazy, keeps the keys and y, and its scores equal
                            the matrix forward pass on uneven chunks (rel. error <= 1e-9)
    m.tester_uneven_chunks  the tester: 3 iterations, 5 uneven chunks (one of 1 image)
                            over 3 partitions
    m.tester_one_partition  the tester: 2 iterations, everything in one partition
    m.tester_mini_batches   the tester: 3 mini-batch iterations over 5 chunks
    m.spark_usage           forward() runs no Spark job, each iteration is exactly one job,
                            and the file never collects RDD data to the driver
                            (collect, take, toLocalIterator, ...)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from util import models
from util.numerics import rel_error

REPO = Path(__file__).resolve().parent.parent
MODELS = tuple(spec.name for spec in models.STEPS)  # in step order
STUDENT_FILES = tuple(spec.student_file for spec in models.STEPS)  # "spark/linear.py", ...
# a traceback line in one of the students' files
_STUDENT_FRAME = re.compile(
    r'File ".*/(' + "|".join(map(re.escape, STUDENT_FILES)) + r')", line (\d+), in (\S+)'
)
KINDS = (
    "forward",
    "tester_uneven_chunks",
    "tester_one_partition",
    "tester_mini_batches",
    "spark_usage",
)
CHECK_IDS = tuple(f"{m}.{k}" for m in MODELS for k in KINDS)

N_IMAGES = 64  # of the shipped training sample, float64
UNEVEN = [26, 5, 22, 1, 10]  # 5 chunks over 3 partitions, sizes far apart
TOL = 1e-9
# RDD methods that bring data to the driver; the only way back is one reduction per iteration
COLLECTING = {
    "collect",
    "collectAsMap",
    "toLocalIterator",
    "take",
    "takeOrdered",
    "takeSample",
    "top",
    "countByKey",
    "countByValue",
    "toPandas",
}


class CheckFailed(AssertionError):
    """A check's finding, shown to the student as is."""


# --------------------------------------------------------------------------- helpers


def student_class(model: str):
    spec = models.get(model)
    module_name = spec.spark_class.split(":")[0]
    module = importlib.import_module(module_name)
    if not Path(module.__file__).resolve().is_relative_to(REPO):
        raise RuntimeError(f"grader: {module_name} was imported from {module.__file__}, not {REPO}")
    cls = getattr(module, spec.student_class, None)
    if cls is None:
        raise CheckFailed(f"{spec.student_file} does not define {spec.student_class}")
    return cls


def matrix_class(model: str):
    from matrix.classifier import classifier_class

    return classifier_class(model)


def make_model(model: str, spark, X, y, **kwargs):
    kw = dict(num_classes=int(y.max()) + 1, in_shape=X.shape[1:], dtype=X.dtype, seed=1)
    return student_class(model)(spark=spark, **kw, **kwargs)


def count_jobs(spark, group: str, fn: Callable[[], object]) -> int:
    sc = spark.sparkContext
    sc.setJobGroup(group, group)
    try:
        fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    return len(sc.statusTracker().getJobIdsForGroup(group))


def grading_images() -> tuple[np.ndarray, np.ndarray]:
    """N_IMAGES of the shipped training sample, classes interleaved (any prefix of 10 or more
    images holds every class), normalised with the whole sample's statistics, float64."""
    from util import data

    train = data.load(data.SAMPLE, "train")
    rank = np.zeros(len(train.y), dtype=np.int64)
    for c in np.unique(train.y):
        where = np.flatnonzero(train.y == c)
        rank[where] = np.arange(len(where))
    pick = np.lexsort((train.y, rank))[:N_IMAGES]
    norm = data.Normalizer.fit(train.X)
    return norm.apply(train.X[pick], np.float64), train.y[pick]


# --------------------------------------------------------------------------- the checks


def check_forward(model: str, spark, X, y) -> str:
    from pyspark import RDD

    from util import network

    m = make_model(model, spark, X, y, partitions=3, chunks=UNEVEN)
    data = m.parallelize(X, y)
    try:
        params = m.broadcast_params()
        out = m.forward(data, params)
        if not isinstance(out, RDD):
            raise CheckFailed(
                f"forward() must return an RDD (a lazy transformation of `data`), "
                f"got {type(out).__name__}"
            )
        records = m._run(
            lambda d: (
                m.forward(d, params)
                .map(lambda r: (r[0], np.asarray(r[1][0]), np.asarray(r[1][2]), len(r[1][1])))
                .collect()
            ),
            data,
        )
    finally:
        m.release(data)
    offsets = sorted(k for k, *_ in records)
    expected_offsets = [int(s) for s in np.cumsum([0, *UNEVEN[:-1]])]
    if offsets != expected_offsets:
        raise CheckFailed(
            f"forward() must keep one record per chunk keyed by its offset {expected_offsets}, "
            f"got keys {offsets}"
        )
    worst = 0.0
    for offset, scores, y_out, n_caches in records:
        n = UNEVEN[expected_offsets.index(offset)]
        X_c, y_c = X[offset : offset + n], y[offset : offset + n]
        want, caches = network.forward(m.layers, m.params, X_c)
        if scores.shape != want.shape:
            raise CheckFailed(
                f"chunk at row {offset}: scores have shape {scores.shape}, expected {want.shape}"
            )
        if not np.array_equal(y_out, y_c):
            raise CheckFailed(f"chunk at row {offset}: the record's labels y are not the chunk's")
        if n_caches != len(caches):
            raise CheckFailed(
                f"chunk at row {offset}: the record holds {n_caches} caches, expected one per "
                f"layer ({len(caches)})"
            )
        err = rel_error(scores, want)
        if not err <= TOL:
            raise CheckFailed(
                f"chunk at row {offset}: scores differ from the matrix forward pass "
                f"(relative error {err:.2e} > {TOL:.0e})"
            )
        worst = max(worst, err)
    return (
        f"forward() scores of all {len(records)} chunks match the matrix version "
        f"(worst relative error {worst:.1e})"
    )


def _tester(model: str, spark, X, y, **kwargs) -> str:
    from spark.tester import run_tester

    agreement = run_tester(
        matrix_class(model), student_class(model), spark, X, y, seed=1, tol=TOL, **kwargs
    )
    worst = max(a.worst for a in agreement)
    return (
        f"{len(agreement)} iterations agree with the matrix version "
        f"(worst relative error {worst:.1e} <= {TOL:.0e})"
    )


def check_tester_uneven_chunks(model: str, spark, X, y) -> str:
    return _tester(model, spark, X, y, iters=3, partitions=3, chunks=UNEVEN)


def check_tester_one_partition(model: str, spark, X, y) -> str:
    return _tester(model, spark, X[:32], y[:32], iters=2, partitions=1)


def check_tester_mini_batches(model: str, spark, X, y) -> str:
    return _tester(model, spark, X, y, iters=3, partitions=3, chunks=5, batch_size=20)


def collecting_calls(source: str, filename: str) -> list[str]:
    """`file:line: .collect()` for every call of a collecting RDD method in the source."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in COLLECTING
        ):
            found.append(f"{filename}:{node.lineno}: .{node.func.attr}()")
    return found


def check_spark_usage(model: str, spark, X, y) -> str:
    cls = student_class(model)
    path = Path(sys.modules[cls.__module__].__file__)
    bad = collecting_calls(path.read_text(), f"spark/{model}.py")
    if bad:
        raise CheckFailed(
            "the data must stay on the executors: only the reduced (loss, n, gradients) may "
            "reach the driver, but the file brings RDD data to the driver at "
            + "; ".join(bad)
            + " (reduce with treeReduce(add_results) instead)"
        )
    m = make_model(model, spark, X[:32], y[:32], partitions=2)
    data = m.parallelize(X[:32], y[:32])
    try:
        params = m.broadcast_params()
        jobs = count_jobs(spark, f"grade-{model}-forward", lambda: m.forward(data, params))
        if jobs:
            raise CheckFailed(
                f"forward() started {jobs} Spark job(s): it must be lazy (transformations only, "
                "no action, no cache()+count())"
            )
        errors: list[str] = []

        def iterations() -> None:
            # wrong numbers or a failing task are the testers' business; here only the jobs count
            for _ in range(2):
                try:
                    m.gradients(data, None)
                except NotImplementedError:
                    raise
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{type(e).__name__}: {e}")

        jobs = count_jobs(spark, f"grade-{model}-iterations", iterations)
    finally:
        m.release(data)
    if jobs != 2:
        raise CheckFailed(
            f"2 training iterations ran {jobs} Spark jobs; each iteration must be exactly one job "
            "(forward's transformations and one reduction in backward)"
        )
    note = (
        f" (the iterations themselves failed, see the tester checks: {errors[0]})" if errors else ""
    )
    return "forward() is lazy, one Spark job per iteration, nothing collected to the driver" + note


CHECKS: dict[str, Callable[..., str]] = {
    "forward": check_forward,
    "tester_uneven_chunks": check_tester_uneven_chunks,
    "tester_one_partition": check_tester_one_partition,
    "tester_mini_batches": check_tester_mini_batches,
    "spark_usage": check_spark_usage,
}


# --------------------------------------------------------------------------- the worker


def explain(exc: BaseException) -> str:
    """What the student sees for a failed check: the error and where in their file it arose."""
    if isinstance(exc, CheckFailed):
        return f"FAILED: {exc}"
    from spark.errors import python_error
    from spark.tester import MismatchError

    if isinstance(exc, MismatchError):
        return f"FAILED (tester): {exc}"
    text = str(exc)
    if "Traceback (most recent call last)" in text:
        # an error in a Spark task: the Python traceback from the executor is in the message
        lines = text.splitlines()
        where = [
            f"    {m.group(1)}, line {m.group(2)}, in {m.group(3)}: {lines[i + 1].strip()}"
            if i + 1 < len(lines)
            else f"    {m.group(1)}, line {m.group(2)}, in {m.group(3)}"
            for i, ln in enumerate(lines)
            if (m := _STUDENT_FRAME.search(ln))
        ]
        msg = f"ERROR in a Spark task: {python_error(text)}"
        if where:
            msg += "\n  in your code:\n" + "\n".join(where[-3:])
        return msg
    msg = f"ERROR: {type(exc).__name__}: {exc}"
    frames = [
        (rel, f)
        for f in traceback.extract_tb(exc.__traceback__)
        for rel in STUDENT_FILES
        if Path(f.filename).as_posix().endswith("/" + rel)
    ]
    if frames:
        msg += "\n  in your code:\n" + "".join(
            f"    {rel}, line {f.lineno}, in {f.name}: {f.line}\n" for rel, f in frames[-3:]
        )
    return msg


def run(ids: list[str], progress: Path, master: str) -> int:
    def emit(**event) -> None:
        with progress.open("a") as f:
            f.write(json.dumps(event) + "\n")

    from spark.session import get_session

    X, y = grading_images()
    spark = get_session(master, "sparknet-grader")
    emit(event="ready")
    try:
        for check_id in ids:
            model, kind = check_id.split(".", 1)
            emit(event="start", id=check_id)
            out = io.StringIO()
            t0 = time.perf_counter()
            try:
                with contextlib.redirect_stdout(out):
                    text, passed = CHECKS[kind](model, spark, X, y), True
            except BaseException as e:  # noqa: BLE001 - a submission's error is a result
                text, passed = explain(e), False
                spark.sparkContext.cancelAllJobs()
            printed = out.getvalue()
            if printed.strip() and not passed:
                text += "\n--- your code printed (last lines) ---\n" + printed[-1500:]
            emit(
                event="end",
                id=check_id,
                passed=passed,
                output=text,
                seconds=round(time.perf_counter() - t0, 2),
            )
    finally:
        spark.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grading.checks")
    p.add_argument("--progress", type=Path, required=True)
    p.add_argument("--master", default="local[2]")
    p.add_argument("ids", nargs="+", choices=CHECK_IDS, metavar="CHECK_ID")
    args = p.parse_args(argv)
    return run(args.ids, args.progress, args.master)


if __name__ == "__main__":
    sys.exit(main())
