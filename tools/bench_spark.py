"""Matrix vs Spark per-iteration time, and Spark's fixed cost per iteration.

    python -m tools.bench_spark [--model cnn] [--batch 2000] [--master local[2]]

Measures, on the shipped sample (float32 by default):
- matrix: one full-batch training iteration in-process with --threads BLAS threads;
- spark:  the same iteration on Spark (`local[N]`, one BLAS thread per worker);
- spark fixed cost: an iteration on a tiny batch (2 images per partition), next to
  the latency of a trivial Spark job on the same session.
Prints a table and writes build/bench/spark.json. Medians of --repeat runs after
one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from matrix.cli import DEFAULT_DATA, MODELS
from spark.models import SPARK_MODELS
from spark.session import get_session
from util import data


def timed(fn, repeat: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.bench_spark",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", choices=sorted(MODELS), default="cnn", help="classifier")
    p.add_argument("--batch", type=int, default=2000, help="images per iteration")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--master", default="local[2]", help="Spark master")
    p.add_argument("--threads", type=int, default=2, help="BLAS threads of the matrix version")
    p.add_argument("--partitions", type=int, default=2, help="RDD partitions")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per measurement")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data directory")
    p.add_argument("--out", default="build/bench/spark.json", help="JSON output")
    args = p.parse_args(argv)

    train = data.load(args.data, "train")
    n = min(args.batch, len(train))
    X = data.Normalizer.fit(train.X).apply(train.X[:n], args.dtype)
    y = train.y[:n]
    results: dict[str, dict] = {}

    matrix = MODELS[args.model](dtype=args.dtype)
    with threadpool_limits(args.threads):
        results["matrix"] = timed(lambda: matrix.step(*matrix.gradients((X, y), None)), args.repeat)

    spark = get_session(args.master, "sparknet-bench")
    try:
        model = SPARK_MODELS[args.model](spark=spark, partitions=args.partitions, dtype=args.dtype)
        with threadpool_limits(args.threads):  # the driver's update, like the matrix version
            rdd = model.prepare(X, y)
            results["spark"] = timed(lambda: model.step(*model.gradients(rdd, None)), args.repeat)
            model.release(rdd)
            tiny = model.prepare(X[: 2 * args.partitions], y[: 2 * args.partitions])
            results["spark tiny batch"] = timed(
                lambda: model.step(*model.gradients(tiny, None)), args.repeat
            )
            model.release(tiny)
        trivial = spark.sparkContext.parallelize(range(args.partitions), args.partitions).cache()
        trivial.count()
        results["trivial spark job"] = timed(lambda: trivial.map(lambda v: v).sum(), args.repeat)
    finally:
        spark.stop()

    print(
        f"{args.model} {args.dtype}, batch {n}, matrix with {args.threads} BLAS threads, "
        f"Spark {args.master} with {args.partitions} partitions"
    )
    print(f"{'':<20}{'median s':>10}{'min s':>10}{'max s':>10}{'img/s':>10}")
    for name, r in results.items():
        ips = n / r["median"] if name in ("matrix", "spark") else float("nan")
        print(f"{name:<20}{r['median']:>10.4f}{r['min']:>10.4f}{r['max']:>10.4f}{ips:>10.0f}")
    ratio = results["spark"]["median"] / results["matrix"]["median"]
    fixed = results["spark tiny batch"]["median"] / results["trivial spark job"]["median"]
    print(
        f"spark / matrix at batch {n}: {ratio:.2f}x;  "
        f"tiny-batch iteration / trivial job: {fixed:.2f}x"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "settings": vars(args),
                "results": results,
                "spark_over_matrix": ratio,
                "fixed_over_trivial": fixed,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
