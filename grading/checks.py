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

Per classifier `m` (linear, nn, cnn) there are five checks, written once in
spark/contract.py (students run the same ones: `make test-<step>`, `make check-submission`):

    m.forward               forward() returns an RDD whose records keep the record contract
                            (offset, (scores, caches, y)) on uneven chunks, and its scores equal
                            the matrix forward pass (rel. error <= 1e-9)
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
import contextlib
import importlib
import io
import json
import sys
import time
from pathlib import Path

from spark.contract import CHECKS, ContractError, check_images, explain
from util import models

REPO = Path(__file__).resolve().parent.parent
MODELS = tuple(spec.name for spec in models.STEPS)  # in step order
KINDS = tuple(CHECKS)  # forward, tester_uneven_chunks, ..., spark_usage
CHECK_IDS = tuple(f"{m}.{k}" for m in MODELS for k in KINDS)


def student_class(model: str):
    """The student class of `model`, imported from this tree (the worker's clean tree)."""
    spec = models.get(model)
    module_name = spec.spark_class.split(":")[0]
    module = importlib.import_module(module_name)
    if not Path(module.__file__).resolve().is_relative_to(REPO):
        raise RuntimeError(f"grader: {module_name} was imported from {module.__file__}, not {REPO}")
    cls = getattr(module, spec.student_class, None)
    if cls is None:
        raise ContractError(f"{spec.student_file} does not define {spec.student_class}")
    return cls


# --------------------------------------------------------------------------- the worker


def run(ids: list[str], progress: Path, master: str) -> int:
    def emit(**event) -> None:
        with progress.open("a") as f:
            f.write(json.dumps(event) + "\n")

    from spark.session import get_session

    X, y = check_images()
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
                    text, passed = CHECKS[kind](student_class(model), spark, X, y), True
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
