"""The step runner: one step's checks on the student's class, in the sandbox (staff-only file,
copied into the grading tree). It runs next to submitted code, so it sends raw outputs only
(spark/contract.py's `observe` halves) and the grader believes nothing but numbers it checks.

    python -m grading.runner --channel FD --kinds K1,K2,... [--master local[2]] [--bench] MODEL

Frames on the pipe FD (grading/channel.py), in this order:

    {"event": "ready"}                                  Spark is up (nothing submitted imported)
    {"event": "check", "kind": K, "meta": {...}} + arrays   one per check of --kinds, in order
    {"event": "bench-ready"}                            --bench: then one line on stdin, the
                                                        seed (or end of input: no benchmark)
    {"event": "bench", "iteration": i, "loss": x}       one per benchmark iteration

A check whose student code raises sends {"error": "<what the student sees>"} as its meta.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from grading import channel

TREE = Path(__file__).resolve().parent.parent
IMAGES = "grading/check_images.npz"  # the checks' images, written into the tree by the grader
# a small machine's Spark: the JVM's quick compiler only and the serial collector start it in
# about 60 % of the time on 0.5 vCPU; a heap that fits a 1.5 GB machine with the workers
JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData"


def spark_conf(scratch: str) -> dict[str, str]:
    """Spark's settings in the sandbox: every temporary file in the step's scratch directory."""
    return {
        "spark.driver.extraJavaOptions": f"{JVM_OPTIONS} -Djava.io.tmpdir={scratch}",
        "spark.driver.memory": "768m",
        "spark.local.dir": scratch,
    }


def student_class(model: str):
    """The student class of `model`, imported from this tree."""
    from spark.contract import ContractError
    from util import models

    spec = models.get(model)
    module_name = spec.spark_class.split(":")[0]
    module = importlib.import_module(module_name)
    if not Path(module.__file__).resolve().is_relative_to(TREE):
        raise RuntimeError(f"grader: {module_name} was imported from {module.__file__}, not {TREE}")
    cls = getattr(module, spec.student_class, None)
    if cls is None:
        raise ContractError(f"{spec.student_file} does not define {spec.student_class}")
    return cls


def run(model: str, kinds: list[str], fd: int, master: str, bench: bool) -> int:
    from spark.contract import CHECKS, Observed, check_images, explain
    from spark.session import get_session

    images = TREE / IMAGES
    if images.is_file():
        with np.load(images, allow_pickle=False) as z:
            X, y = z["X"], z["y"]
    else:
        X, y = check_images()
    scratch = os.environ.get("TMPDIR", tempfile.gettempdir())
    spark = get_session(master, f"sparknet-grade-{model}", conf=spark_conf(scratch))
    channel.send(fd, {"event": "ready"})
    cls = None
    for kind in kinds:
        check = CHECKS[kind]
        try:
            cls = cls or student_class(model)
            obs = check.observe(cls, spark, X, y)
        except BaseException as e:  # noqa: BLE001 - a submission's error is a result
            obs = Observed({"error": explain(e)})
            spark.sparkContext.cancelAllJobs()
        channel.send(fd, {"event": "check", "kind": kind, "meta": obs.meta}, obs.arrays)
    if bench and cls is not None:
        from grading.leaderboard import run_bench

        channel.send(fd, {"event": "bench-ready"})
        line = sys.stdin.readline().strip()
        if line.isdigit():
            run_bench(
                cls,
                spark,
                int(line),
                lambda i, loss: channel.send(
                    fd, {"event": "bench", "iteration": i, "loss": float(loss)}
                ),
            )
    spark.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grading.runner")
    p.add_argument("--channel", type=int, required=True, help="the grader's pipe (an fd)")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--kinds", required=True, help="the checks to run, comma-separated, in order")
    p.add_argument("--bench", action="store_true", help="offer the leaderboard benchmark")
    p.add_argument("model")
    args = p.parse_args(argv)
    return run(args.model, args.kinds.split(","), args.channel, args.master, args.bench)


if __name__ == "__main__":
    sys.exit(main())
