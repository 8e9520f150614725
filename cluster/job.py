"""The application for spark-submit: proves a cluster trains what the matrix version trains.

    spark-submit --master spark://HOST:7077 \\
        --archives build/sparknet-env.tar.gz#env \\
        --conf spark.pyspark.python=./env/bin/python \\
        --conf spark.pyspark.driver.python=.venv/bin/python \\
        cluster/job.py --model nn

Three checks, each printed line by line; the exit status is non-zero when one fails:

1. environment: on the executors, `util.layer` and the Cython kernels are
   imported from the shipped environment (./env/... in the executor's working
   directory), not from the repository or the driver's venv;
2. versions: every executor runs the driver's project, kernels, numpy and
   Python (`trainer.executors.check`, which the trainer also runs at start-up);
3. agreement: the chosen Spark classifier and its matrix twin, trained side by
   side by `spark.tester.run_tester` on the shipped sample (float64, uneven
   chunks), agree after every iteration (relative error <= --tol).

Exit status: 0 every check passes, 1 a check failed, 2 Spark could not start.
Also runs without spark-submit (`python cluster/job.py --master local[2]
--skip-env-check`), e.g. where the machines share the installation.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# the driver imports the project from the repository this file lives in
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from pyspark import SparkContext  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402

from matrix.classifier import classifier_class  # noqa: E402
from spark.classifier import SparkTaskError, spark_class  # noqa: E402
from spark.session import SparkSetupError, get_session, stop_quietly, submitted_master  # noqa: E402
from spark.tester import MismatchError, run_tester  # noqa: E402
from trainer import executors  # noqa: E402
from util import data, models  # noqa: E402

UNEVEN_WEIGHTS = (700, 113, 520, 1, 666)  # chunk sizes far apart, as in tests/test_spark.py


class CheckFailed(RuntimeError):
    """One of the two checks failed; the message says which and why."""


def uneven_chunks(n: int, weights: tuple[int, ...] = UNEVEN_WEIGHTS) -> list[int]:
    """Chunk sizes for n images in proportion to `weights` (each >= 1, summing to n)."""
    if n < len(weights):
        raise ValueError(f"need at least {len(weights)} images for uneven chunks, got {n}")
    sizes = [max(1, n * w // sum(weights)) for w in weights[:-1]]
    return [*sizes, n - sum(sizes)]


def where_imported(_: object) -> dict[str, str]:
    """On an executor: where this Python and the project's modules come from."""
    import os
    import sys

    import pyspark
    import util._kernels

    import util.layer

    return {
        "cwd": os.getcwd(),
        "python": sys.executable,
        "util.layer": os.path.realpath(util.layer.__file__),
        "util._kernels": os.path.realpath(util._kernels.__file__),
        "pyspark": pyspark.__file__,
    }


def check_executor_env(sc: SparkContext, env_name: str) -> list[str]:
    """Every executor must import util.layer and util._kernels from <its cwd>/<env_name>/.

    Returns the report lines; raises CheckFailed naming the offending paths.
    """
    n = max(4, 2 * sc.defaultParallelism)  # enough tasks to reach every executor
    seen = {
        tuple(sorted(r.items())) for r in sc.parallelize(range(n), n).map(where_imported).collect()
    }
    lines, bad = [], []
    for info in map(dict, sorted(seen)):
        env_dir = os.path.realpath(os.path.join(info["cwd"], env_name)) + os.sep
        for module in ("util.layer", "util._kernels"):
            path = info[module]
            ok = path.startswith(env_dir) and not path.startswith(str(REPO) + os.sep)
            shown = "./" + env_name + "/" + path[len(env_dir) :] if ok else path
            lines.append(f"executor env: {module} from {shown} ({'ok' if ok else 'WRONG'})")
            if not ok:
                bad.append(f"{module} from {path} (executor in {info['cwd']})")
        lines.append(f"executor env: python {info['python']}, pyspark from {info['pyspark']}")
    if bad:
        raise CheckFailed(
            f"executors do not use the shipped environment ./{env_name}/: "
            + "; ".join(bad)
            + f". Ship it with --archives <env.tar.gz>#{env_name} and "
            f"--conf spark.pyspark.python=./{env_name}/bin/python"
        )
    return lines


def load_sample(path: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n training images drawn at random (seeded) as float64, normalised with the
    statistics of the whole training split: X (n, 3, 32, 32) float64, y (n,) int64.

    Drawn, not the first n: the shipped sample is sorted by class, so its first
    500 images hold only 3 of the 10 classes.
    """
    train = data.load(path, "train")
    if n > len(train):
        raise ValueError(f"--images {n}: {path} has only {len(train)} training images")
    idx = np.random.default_rng(seed).permutation(len(train))[:n]
    X = data.Normalizer.fit(train.X).apply(train.X[idx], np.float64)
    return X, train.y[idx]


def check_agreement(spark: SparkSession, args: argparse.Namespace) -> list[str]:
    """Trains the Spark classifier and its matrix twin side by side; one line per iteration."""
    X, y = load_sample(args.data, args.images)
    chunks = [int(c) for c in args.chunks.split(",")] if args.chunks else uneven_chunks(len(y))
    print(
        f"agreement: {args.model}, {len(y)} images float64 ({len(np.unique(y))} classes), "
        f"{args.iters} iterations, "
        f"{args.partitions} partitions, chunks {chunks}",
        flush=True,
    )
    try:
        agreement = run_tester(
            classifier_class(args.model), spark_class(args.model), spark, X, y,
            iters=args.iters, partitions=args.partitions, chunks=chunks, tol=args.tol,
        )  # fmt: skip
    except MismatchError as e:
        raise CheckFailed(f"agreement: {e}") from None
    return [
        f"agreement iteration {a.iteration}: loss {a.loss_error:.1e}, "
        + ", ".join(f"{k} {e:.1e}" for k, e in a.param_errors.items())
        + f"; worst {a.worst:.1e} <= {args.tol:.0e}"
        for a in agreement
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cluster/job.py",
        description="Check a Spark cluster: executors use the shipped env, and a Spark "
        "classifier agrees with its matrix version.",
    )
    parser.add_argument(
        "--model", choices=[m.name for m in models.STEPS], default="nn", help="classifier"
    )
    parser.add_argument(
        "--master", help="Spark master (default: spark-submit's --master, else local[2])"
    )
    parser.add_argument("--data", default=str(data.SAMPLE), help="data directory (on the driver)")
    parser.add_argument("--images", type=int, default=500, help="training images to use")
    parser.add_argument("--iters", type=int, default=3, help="iterations")
    parser.add_argument("--partitions", type=int, default=3, help="RDD partitions")
    parser.add_argument("--chunks", help="comma-separated chunk sizes (default: 5 uneven chunks)")
    parser.add_argument("--tol", type=float, default=1e-9, help="relative error tolerance")
    parser.add_argument(
        "--env-name", default="env", help="the archive's name after '#' in --archives"
    )
    parser.add_argument(
        "--skip-env-check",
        action="store_true",
        help="do not require the executors to use ./<env-name> (machines sharing the install)",
    )
    args = parser.parse_args(argv)

    try:
        master = args.master or submitted_master("local[2]")
        spark = get_session(master, f"sparknet-cluster-{args.model}")
    except SparkSetupError as e:
        print(f"cluster_job: error: {e}", file=sys.stderr)
        return 2
    try:
        sc = spark.sparkContext
        print(f"cluster_job: master {sc.master}, app {sc.applicationId}", flush=True)
        if not args.skip_env_check:
            for line in check_executor_env(sc, args.env_name):
                print(line, flush=True)
        for line in executors.check(sc):
            print(line, flush=True)
        for line in check_agreement(spark, args):
            print(line, flush=True)
    except (CheckFailed, SparkTaskError, ValueError) as e:  # ExecutorMismatch is a ValueError
        print(f"cluster_job: FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        stop_quietly(spark)
    print("cluster_job: OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
