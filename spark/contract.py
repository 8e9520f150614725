"""The assignment's checks, written once for the grader and for the students' own targets.

The grader (grading/checks.py) runs these functions on a submission; `make test-<step>`
(tests/test_steps.py) and `make check-submission` (this module's command line) run the same
functions, with the same data and parameters, on the student's files, so a message reads
the same locally and in the grade. Per step (the student class of util/models.py):

    rules                 spark/rules.py on the student's file (a broken rule: 0 for the step)
    forward               forward() returns an RDD whose records keep the record contract,
                          and each chunk's scores equal the matrix forward pass (<= 1e-9)
    tester_uneven_chunks  the matrix-vs-Spark tester: 3 iterations, 5 uneven chunks (one of
                          1 image) over 3 partitions
    tester_one_partition  the tester: 2 iterations, 32 images in one partition
    tester_mini_batches   the tester: 3 mini-batch iterations (20 images) over 5 chunks
    spark_usage           forward() runs no Spark job, a training iteration is exactly one
                          job, and the file never collects RDD data to the driver

The record contract of forward(): one record per chunk, `(offset, (scores, caches, y))`,
keyed by the chunk's offset as in the data RDD, `scores` (n, K), `caches` a list of one
cache per layer, `y` the chunk's labels. The tester checks it before its first iteration
(`forward_records`), so a wrong layout is named there instead of surfacing as an unpack
error in backward().

    python -m spark.contract [--master local[2]] [MODEL ...]     (make check-submission)
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import RDD, Broadcast, SparkContext

from spark import rules
from spark.classifier import SparkClassifier, SparkTaskError, chunk_bounds, spark_class
from spark.errors import STUDENT_FILES, task_failure
from spark.session import job_group
from util import models, network
from util.numerics import rel_error

N_IMAGES = 64  # of the shipped training sample, float64 (check_images)
UNEVEN = [26, 5, 22, 1, 10]  # 5 chunks over 3 partitions, sizes far apart
TOL = 1e-9
# the tester's runs: images (a prefix of check_images), then run_tester's arguments
TESTER_RUNS: dict[str, dict[str, Any]] = {
    "tester_uneven_chunks": dict(images=N_IMAGES, iters=3, partitions=3, chunks=UNEVEN),
    "tester_one_partition": dict(images=32, iters=2, partitions=1),
    "tester_mini_batches": dict(images=N_IMAGES, iters=3, partitions=3, chunks=5, batch_size=20),
}
USAGE_IMAGES, USAGE_PARTITIONS = 32, 2  # the Spark-usage checks' data
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
RECORD = "(offset, (scores, caches, y))"


class ContractError(AssertionError):
    """A check's finding, in the student's terms, shown as is."""


# --------------------------------------------------------------------------- data and models


def check_images() -> tuple[np.ndarray, np.ndarray]:
    """N_IMAGES of the shipped training sample, classes interleaved (any prefix of 10 or more
    images holds every class), normalised with the whole sample's statistics.
    Returns X: (N_IMAGES, 3, 32, 32) float64, y: (N_IMAGES,) int."""
    from util import data

    train = data.load(data.SAMPLE, "train")
    rank = np.zeros(len(train.y), dtype=np.int64)
    for c in np.unique(train.y):
        where = np.flatnonzero(train.y == c)
        rank[where] = np.arange(len(where))
    pick = np.lexsort((train.y, rank))[:N_IMAGES]
    norm = data.Normalizer.fit(train.X)
    return norm.apply(train.X[pick], np.float64), train.y[pick]


def make_model(cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray, **kwargs):
    """The student class for X (N, C, H, W), y (N,), seed 1; kwargs: partitions, chunks."""
    kw = dict(num_classes=int(y.max()) + 1, in_shape=X.shape[1:], dtype=X.dtype, seed=1)
    return cls(spark=spark, **kw, **kwargs)


def student_source(cls: type) -> tuple[str, str]:
    """The source of the file that defines the student class, and its name in the repository
    ("spark/linear.py")."""
    path = Path(sys.modules[cls.__module__].__file__)
    return path.read_text(encoding="utf-8"), models.get(cls.name).student_file


def count_jobs(sc: SparkContext, name: str, fn: Callable[[], object]) -> int:
    """The number of Spark jobs fn() starts (in a job group of its own, a fresh id)."""
    with job_group(sc, f"{name}-{uuid.uuid4().hex[:8]}", name) as group:
        fn()
    return len(sc.statusTracker().getJobIdsForGroup(group))


# --------------------------------------------------------------------------- the record contract


def _kind(x: object) -> str:
    """What x is, in a message: "a tuple of 3", "an array of shape (26, 10)", "the int 5"."""
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)}"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f"the int {x}"
    return "None" if x is None else f"a {type(x).__name__}"


def record_problem(record: object, n_layers: int) -> str | None:
    """What breaks the record contract in one record of forward()'s RDD (None: nothing)."""
    if not isinstance(record, (tuple, list)) or len(record) != 2:
        if isinstance(record, (tuple, list)) and len(record) == 3:
            items = ", ".join(_kind(x) for x in record)
            return (
                f"forward() returned records without the offset key: expected {RECORD}, got "
                f"(scores, caches, y) = ({items}); keep each chunk's key (data.mapValues(f) "
                "keeps it, data.map(f) must return it)"
            )
        return f"forward() must return records {RECORD}, got {_kind(record)}"
    key, value = record
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        return (
            f"forward() returned records keyed by {_kind(key)}: expected {RECORD}, keyed by "
            "the chunk's offset (an int) as in the data RDD"
        )
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        return f"forward(): a record's value must be (scores, caches, y), got {_kind(value)}"
    scores, caches, y = value
    if not isinstance(caches, list) or len(caches) != n_layers:
        layers = f"{n_layers} layer" + ("s" if n_layers != 1 else "")
        return (
            f"forward(): the caches must be a list with one cache per layer ({layers}), "
            f"got {_kind(caches)}"
        )
    for name, a in (("scores", scores), ("labels y", y)):
        if not isinstance(a, np.ndarray):
            return f"forward(): the {name} must be a numpy array, got {_kind(a)}"
    return None


def _summary(record: object, n_layers: int) -> tuple[Any, str | None, Any, Any]:
    """(key, problem, scores, y) of one record, on the executor: ships no caches, never raises
    (whatever the record holds, the driver gets a message)."""
    try:
        problem = record_problem(record, n_layers)
        if problem:
            return None, problem, None, None
        key, (scores, _, y) = record
        if scores.dtype.kind not in "fiu" or y.dtype.kind not in "iu":
            return None, "forward(): the scores and labels must be arrays of numbers", None, None
        return int(key), None, scores, y
    except Exception as e:  # noqa: BLE001 - an unreadable record is a finding, not a crash
        return None, f"forward(): could not read a record ({type(e).__name__}: {e})", None, None


def forward_summaries(m: SparkClassifier, data: RDD, params: Broadcast) -> list[tuple]:
    """Runs m.forward(data, params) once (one Spark job): (key, problem, scores, y) per record
    (_summary). Raises ContractError if forward() returns no RDD; a failing task raises
    SparkTaskError."""
    out = m.forward(data, params)
    if not isinstance(out, RDD):
        raise ContractError(
            f"forward() must return an RDD (a lazy transformation of `data`), "
            f"got {type(out).__name__}"
        )
    n_layers = len(m.layers)
    return m._run(
        lambda d: m.forward(d, params).map(lambda r: _summary(r, n_layers)).collect(), data
    )


def judge_records(
    summaries: list[tuple], bounds: list[tuple[int, int]], num_classes: int, y: np.ndarray
) -> dict[int, np.ndarray]:
    """Checks forward()'s record summaries against the record contract for chunks `bounds`
    of labels y (N,); returns offset -> scores (n, K). Raises ContractError naming what is
    wrong."""
    problems = [p for _, p, _, _ in summaries if p]
    if problems:
        raise ContractError(problems[0])
    expected = [a for a, _ in bounds]
    got = sorted(k for k, *_ in summaries)
    if got != expected:
        raise ContractError(
            f"forward() must keep one record per chunk keyed by its offset {expected}, "
            f"got keys {got}"
        )
    records = {k: (scores, y_out) for k, _, scores, y_out in summaries}
    for a, b in bounds:
        scores, y_out = records[a]
        if scores.shape != (b - a, num_classes):
            raise ContractError(
                f"forward(): chunk at row {a}: scores have shape {scores.shape}, "
                f"expected {(b - a, num_classes)}"
            )
        if not np.array_equal(y_out, y[a:b]):
            raise ContractError(
                f"forward(): chunk at row {a}: the record's labels y are not the chunk's"
            )
    return {k: scores for k, (scores, _) in records.items()}


def forward_records(
    m: SparkClassifier, data: RDD, params: Broadcast, y: np.ndarray
) -> dict[int, np.ndarray]:
    """forward()'s records on data = m.parallelize(X, y), checked against the record contract:
    offset -> scores (n, K). Raises ContractError naming what is wrong."""
    bounds = chunk_bounds(len(y), m.chunks or m.partitions)
    return judge_records(forward_summaries(m, data, params), bounds, m.num_classes, y)


# --------------------------------------------------------------------------- the checks
#
# Each check is three functions, so that the grader can keep the student's code away from
# the verdict (docs/grading.md): `observe` runs the student's class and returns raw outputs
# only (an Observed: numbers, Spark's job counts); `reference` computes what they must be
# without Spark and without the student's code; `judge` compares the two and returns what
# passed or raises ContractError / MismatchError. Students' targets run all three in one
# process (`check`); the grader runs `observe` in a sandboxed process of its own.


@dataclass
class Observed:
    """A check's raw outputs. meta: JSON values (counts, keys); arrays: name -> numbers."""

    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def init_params(model: str, X: np.ndarray, y: np.ndarray) -> tuple[list, dict[str, np.ndarray]]:
    """(layers, initial parameters) of `model` for X (N, C, H, W), y (N,), seed 1: what every
    check's classifier starts from (make_model uses the same seed)."""
    from matrix.classifier import classifier_class

    ref = classifier_class(model)(
        num_classes=int(y.max()) + 1, in_shape=X.shape[1:], dtype=X.dtype, seed=1
    )
    return ref.layers, ref.params


def observe_forward(cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray) -> Observed:
    """forward() on UNEVEN chunks over 3 partitions: each record's key, scores and labels."""
    m = make_model(cls, spark, X, y, partitions=3, chunks=UNEVEN)
    data = m.parallelize(X, y)
    try:
        summaries = forward_summaries(m, data, m.broadcast_params())
    finally:
        m.release(data)
    obs = Observed(
        {
            "keys": [k for k, p, *_ in summaries if not p],
            "problems": [p for _, p, *_ in summaries if p][:3],
        }
    )
    for k, problem, scores, y_out in summaries:
        if not problem:
            obs.arrays[f"scores.{k}"], obs.arrays[f"y.{k}"] = scores, y_out
    return obs


def reference_forward(model: str, X: np.ndarray, y: np.ndarray) -> Observed:
    """The matrix forward pass of each UNEVEN chunk from the initial parameters."""
    layers, params = init_params(model, X, y)
    ref = Observed({"num_classes": int(y.max()) + 1}, {"y": y})
    for a, b in chunk_bounds(len(y), UNEVEN):
        ref.arrays[f"scores.{a}"] = network.forward(layers, params, X[a:b])[0]
    return ref


def judge_forward(obs: Observed, ref: Observed, source: tuple[str, str]) -> str:
    """The record contract holds and every chunk's scores equal the matrix forward pass
    (relative error <= TOL)."""
    y = ref.arrays["y"]
    summaries = [
        (k, None, obs.arrays[f"scores.{k}"], obs.arrays[f"y.{k}"]) for k in obs.meta["keys"]
    ] + [(None, str(p), None, None) for p in obs.meta["problems"]]
    bounds = chunk_bounds(len(y), UNEVEN)
    scores = judge_records(summaries, bounds, ref.meta["num_classes"], y)
    worst = 0.0
    for offset, got in sorted(scores.items()):
        err = rel_error(got, ref.arrays[f"scores.{offset}"])
        if not err <= TOL:
            raise ContractError(
                f"forward(): chunk at row {offset}: scores differ from the matrix forward pass "
                f"(relative error {err:.2e} > {TOL:.0e})"
            )
        worst = max(worst, err)
    return (
        f"forward() scores of all {len(scores)} chunks match the matrix version "
        f"(worst relative error {worst:.1e})"
    )


def _tester_run(kind: str) -> tuple[int, dict[str, Any]]:
    """(images, run arguments) of the tester's run `kind`."""
    run = dict(TESTER_RUNS[kind])
    return run.pop("images"), run


def observe_tester(
    kind: str, cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray
) -> Observed:
    """The Spark version's loss and parameters after each iteration of the tester's run
    `kind` (TESTER_RUNS), from the matrix version's initial parameters."""
    from spark.tester import spark_trajectory  # which imports this module

    n, run = _tester_run(kind)
    _, init = init_params(cls.name, X[:n], y[:n])
    traj = spark_trajectory(cls, spark, init, X[:n], y[:n], seed=1, **run)
    return observed_trajectory(traj)


def reference_tester(kind: str, model: str, X: np.ndarray, y: np.ndarray) -> Observed:
    """The matrix version's loss and parameters after each iteration of the run `kind`."""
    from matrix.classifier import classifier_class
    from spark.tester import matrix_trajectory

    n, run = _tester_run(kind)
    _, traj = matrix_trajectory(
        classifier_class(model),
        X[:n],
        y[:n],
        iters=run["iters"],
        batch_size=run.get("batch_size"),
        seed=1,
    )
    return observed_trajectory(traj)


def observed_trajectory(traj: list[tuple[float, dict[str, np.ndarray]]]) -> Observed:
    """A trajectory as an Observed: "loss" (iterations,) and "<iteration>.<name>" arrays."""
    obs = Observed({"iterations": len(traj)}, {"loss": np.array([loss for loss, _ in traj])})
    for it, (_, params) in enumerate(traj, start=1):
        obs.arrays.update({f"{it}.{k}": v for k, v in params.items()})
    return obs


def trajectory(obs: Observed) -> list[tuple[float, dict[str, np.ndarray]]]:
    """The (loss, parameters) per iteration held in an Observed of observe_/reference_tester."""
    out = []
    for it in range(1, int(obs.meta["iterations"]) + 1):
        prefix = f"{it}."
        params = {k[len(prefix) :]: v for k, v in obs.arrays.items() if k.startswith(prefix)}
        out.append((float(obs.arrays["loss"][it - 1]), params))
    return out


def judge_tester(obs: Observed, ref: Observed, source: tuple[str, str]) -> str:
    """Every iteration's loss and parameters agree with the matrix version (<= TOL)."""
    from spark.tester import compare_trajectories

    agreement = compare_trajectories(trajectory(ref), trajectory(obs), TOL)
    worst = max(a.worst for a in agreement)
    return (
        f"{len(agreement)} iterations agree with the matrix version "
        f"(worst relative error {worst:.1e} <= {TOL:.0e})"
    )


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


def check_nothing_collected(source: str, filename: str) -> None:
    """The student's file calls no collecting RDD method (COLLECTING): a static scan."""
    bad = collecting_calls(source, filename)
    if bad:
        raise ContractError(
            "the data must stay on the executors: only the reduced (loss, n, gradients) may "
            "reach the driver, but the file brings RDD data to the driver at "
            + "; ".join(bad)
            + " (reduce with treeReduce(add_results) instead)"
        )


def usage_model(cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray):
    """(classifier, its cached data RDD) for the Spark-usage checks: USAGE_IMAGES images over
    USAGE_PARTITIONS partitions. The caller releases the data (m.release(data))."""
    m = make_model(cls, spark, X[:USAGE_IMAGES], y[:USAGE_IMAGES], partitions=USAGE_PARTITIONS)
    return m, m.parallelize(X[:USAGE_IMAGES], y[:USAGE_IMAGES])


def forward_jobs(m: SparkClassifier, data: RDD) -> int:
    """The Spark jobs forward() starts (it must start none)."""
    params = m.broadcast_params()
    return count_jobs(m.sc, f"check-{m.name}-forward", lambda: m.forward(data, params))


def iteration_jobs(m: SparkClassifier, data: RDD) -> tuple[int, list[str]]:
    """The Spark jobs of 2 training iterations (gradients()), and the iterations' errors:
    wrong numbers or a failing task are the testers' business, here only the jobs count."""
    errors: list[str] = []

    def iterations() -> None:
        for _ in range(2):
            try:
                m.gradients(data, None)
            except NotImplementedError:
                raise
            except Exception as e:  # noqa: BLE001 - see the docstring
                errors.append(f"{type(e).__name__}: {e}")

    return count_jobs(m.sc, f"check-{m.name}-iterations", iterations), errors


def check_lazy_forward(jobs: int) -> None:
    """forward() started no Spark job."""
    if jobs:
        raise ContractError(
            f"forward() started {jobs} Spark job(s): it must be lazy (transformations only, "
            "no action, no cache()+count())"
        )


def check_one_job_per_iteration(jobs: int) -> None:
    """2 training iterations ran exactly 2 Spark jobs."""
    if jobs != 2:
        raise ContractError(
            f"2 training iterations ran {jobs} Spark jobs; each iteration must be exactly one job "
            "(forward's transformations and one reduction in backward)"
        )


def observe_spark_usage(
    cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray
) -> Observed:
    """Spark's job counts of forward() and of 2 training iterations."""
    m, data = usage_model(cls, spark, X, y)
    try:
        lazy = forward_jobs(m, data)
        jobs, errors = iteration_jobs(m, data)
    finally:
        m.release(data)
    return Observed({"forward_jobs": lazy, "iteration_jobs": jobs, "errors": errors[:1]})


def judge_spark_usage(obs: Observed, ref: None, source: tuple[str, str]) -> str:
    """Nothing collected (static scan of the source), forward() lazy, one job per iteration."""
    check_nothing_collected(*source)
    check_lazy_forward(int(obs.meta["forward_jobs"]))
    check_one_job_per_iteration(int(obs.meta["iteration_jobs"]))
    errors = [str(e) for e in obs.meta["errors"]]
    note = (
        f" (the iterations themselves failed, see the tester checks: {errors[0]})" if errors else ""
    )
    return "forward() is lazy, one Spark job per iteration, nothing collected to the driver" + note


@dataclass(frozen=True)
class Check:
    observe: Callable[..., Observed]  # (student class, spark, X, y): runs the student's code
    reference: Callable[..., Any]  # (model, X, y): no Spark, no student code
    judge: Callable[..., str]  # (observed, reference, (source, filename)) -> what passed


# kind -> its check, in the grader's order
CHECKS: dict[str, Check] = {
    "forward": Check(observe_forward, reference_forward, judge_forward),
    **{
        kind: Check(partial(observe_tester, kind), partial(reference_tester, kind), judge_tester)
        for kind in TESTER_RUNS
    },
    "spark_usage": Check(observe_spark_usage, lambda model, X, y: None, judge_spark_usage),
}


def check(kind: str, cls: type[SparkClassifier], spark, X: np.ndarray, y: np.ndarray) -> str:
    """The check `kind` on the student class in this process: what passed, or raises
    (ContractError, MismatchError, or the student code's own error)."""
    c = CHECKS[kind]
    return c.judge(c.observe(cls, spark, X, y), c.reference(cls.name, X, y), student_source(cls))


def explain(exc: BaseException) -> str:
    """What the student sees for a failed check: the finding, or the error and where in their
    file it arose."""
    from spark.tester import MismatchError  # which imports this module

    if isinstance(exc, ContractError):
        return f"FAILED: {exc}"
    if isinstance(exc, MismatchError):
        return f"FAILED (tester): {exc}"
    if isinstance(exc, SparkTaskError):  # names the chunk, the error and the student's line
        return f"ERROR: {exc}"
    text = str(exc)
    if "Traceback (most recent call last)" in text:  # a Spark job the check ran itself
        return f"ERROR in a Spark task: {task_failure(text).summary()}"
    msg = f"ERROR: {type(exc).__name__}: {exc}"
    frames = [
        (rel, f)
        for f in traceback.extract_tb(exc.__traceback__)
        for rel in STUDENT_FILES
        if Path(f.filename).as_posix().endswith("/" + rel)
    ]
    if frames:
        msg += "\n  in your code:\n" + "".join(
            f"    at {rel}:{f.lineno} in {f.name}: {f.line}\n" for rel, f in frames[-3:]
        )
    return msg


# --------------------------------------------------------------------------- make check-submission


def check_step(spec: models.ModelSpec, spark, X: np.ndarray, y: np.ndarray) -> list[bool]:
    """Runs the rules and every check of one step, printing one line per check."""

    def show(ok: bool, kind: str, text: str, seconds: float | None = None) -> None:
        first, *rest = text.rstrip().splitlines() or [""]
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"{'✓' if ok else '✗'} step {spec.step} {spec.name} {kind}: {first}{took}")
        for line in rest:
            print(f"      {line}")

    rel = spec.student_file
    problems = rules.check_rules(spec.name, (models.REPO / rel).read_text(encoding="utf-8"))
    if problems:
        show(False, "rules", f"{rel} breaks the submission rules:\n" + "\n".join(problems))
        for kind in CHECKS:
            show(False, kind, f"not run: {rel} breaks the rules (the grader gives 0 for the step)")
        return [False] * (1 + len(CHECKS))
    show(True, "rules", f"{rel} follows the submission rules")
    passed = [True]
    for kind in CHECKS:
        t0 = time.perf_counter()
        try:
            text, ok = check(kind, spark_class(spec.name), spark, X, y), True
        except Exception as e:  # noqa: BLE001 - a submission's error is a result
            text, ok = explain(e), False
            spark.sparkContext.cancelAllJobs()
        show(ok, kind, text, time.perf_counter() - t0)
        passed.append(ok)
    return passed


def main(argv: list[str] | None = None) -> int:
    steps = {spec.name: spec for spec in models.STEPS}
    p = argparse.ArgumentParser(
        prog="python -m spark.contract",
        description="The grader's checks of the assignment's steps on your files "
        "(make check-submission): one line per check, exit status 1 if any fails.",
    )
    p.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"{', '.join(steps)} (default: all)")
    args = p.parse_args(argv)
    unknown = [name for name in args.models if name not in steps]
    if unknown:
        p.error(f"unknown step {unknown[0]!r}; expected one of {', '.join(steps)}")
    from spark.session import get_session

    X, y = check_images()
    spark = get_session(args.master, "sparknet-check-submission")
    try:
        passed = [
            ok for name in args.models or steps for ok in check_step(steps[name], spark, X, y)
        ]
    finally:
        spark.stop()
    failed = passed.count(False)
    print(
        f"{len(passed) - failed} of {len(passed)} checks passed"
        + (f", {failed} failed" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    # run the module proper, not __main__: spark.tester raises spark.contract's ContractError
    from spark.contract import main as contract_main

    sys.exit(contract_main())
