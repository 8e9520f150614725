"""`make profile-cnn`: where a CNN training step spends its time, layer by layer.

    python -m bench.profile_cnn [--batch 2000] [--dtype float32] [--threads 1]
                                [--master local[2]] [--repeat 3] [--data DIR]

Three tables, each the mean of --repeat steps after a warm-up, on real images:

1. matrix: per-layer forward and backward milliseconds of one training step
   (`util.network.loss_and_grads` with its timer), plus the loss and the SGD
   update. With --threads > 1 the sub-batches run on several threads and the
   per-layer figures are thread-seconds (they add up to threads x wall time).
2. inside each conv layer: the direct convolution kernels (`util/_kernels.pyx`) of
   the forward pass, the weight gradient dW (with the bias gradient db, summed as dout
   is packed), the input gradient dX (a convolution of dout with the flipped
   filters), each on one thread over the blocks `util.layer` uses, with its GFLOP/s
   and its share of the machine's one-thread square-GEMM rate measured in the same run.
3. spark: the same per-layer times measured inside the executors (mean per
   task; each task works on batch/partitions images on one thread), and the
   step's wall time split into task compute and Spark's own cost (broadcast,
   scheduling, serialisation, reduce, update on the driver).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from bench.steps import MEASURE_DATA, gemm_gflops, load_mixed
from matrix.cnn import CNNClassifier
from spark.session import get_session
from trainer.data import distribute
from trainer.settings import Settings
from trainer.train import Trainer
from util import data, kernels, layer, models, network, optim
from util.network import Conv

LAYERS = models.get("cnn").layers


def mean_timer(run: Callable[[dict], object], repeat: int) -> dict[str, float]:
    """Per-key mean seconds of `repeat` calls of run(timer), after one warm-up call."""
    run({})
    total: dict[str, float] = {}
    for _ in range(repeat):
        run(total)
    return {k: v / repeat for k, v in total.items()}


def matrix_profile(X: np.ndarray, y: np.ndarray, repeat: int) -> dict[str, float]:
    model = CNNClassifier(dtype=X.dtype)

    def step(timer: dict) -> None:
        t0 = time.perf_counter()
        loss, grads = network.loss_and_grads(LAYERS, model.params, X, y, timer=timer)
        t1 = time.perf_counter()
        optim.sgd_step(model.params, grads, model.velocity, loss, model.sgd)
        t2 = time.perf_counter()
        timer["update"] = timer.get("update", 0.0) + t2 - t1
        timer["step (wall)"] = timer.get("step (wall)", 0.0) + t2 - t0

    return mean_timer(step, repeat)


def conv_internals(X: np.ndarray, repeat: int) -> list[dict]:
    """One-thread seconds of the pieces of each conv layer, over the whole batch."""
    rows = []
    params = network.init_params(LAYERS, X.shape[1:], 10, dtype=X.dtype)
    for spec, shape in zip(LAYERS, network.shapes(LAYERS, X.shape[1:], 10), strict=False):
        if spec.kind == "conv":
            rows.append(conv_pieces(spec, (len(X), *shape), X.dtype, params, repeat))
    return rows


def conv_pieces(spec: Conv, x_shape: tuple, dtype, params, repeat: int) -> dict:
    """Times the direct kernels of one (stride-1) conv layer, block by block as util.layer
    runs them; FLOPs per piece as `Conv.flops` counts them."""
    N, C, H, Wd = x_shape
    F, k, p = spec.filters, spec.size, spec.pad
    rng = np.random.default_rng(0)
    X = rng.standard_normal(x_shape).astype(dtype)
    Wt, b = params[f"W{spec.n}"], params[f"b{spec.n}"]
    Ho, Wo = kernels.out_size(H, k, 1, p), kernels.out_size(Wd, k, 1, p)
    dout = rng.standard_normal((N, F, Ho, Wo)).astype(dtype)
    W_flip = np.ascontiguousarray(Wt[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    zero = np.zeros(C, dtype)
    out, dX = np.empty((N, F, Ho, Wo), dtype), np.empty(x_shape, dtype)
    B = layer.DIRECT_BLOCK

    def blocks(B: int):
        return [slice(n0, n0 + B) for n0 in range(0, N, B)]

    pieces = {
        "forward": lambda s: kernels.conv_direct(X[s], Wt, b, p, out=out[s]),
        "dW": lambda s: kernels.conv_direct_dW(X[s], dout[s], k, k, p),  # db with it
        "dX": lambda s: kernels.conv_direct(dout[s], W_flip, zero, (k - 1 - p,) * 2, out=dX[s]),
    }
    flops = spec.flops((C, H, Wd), 10) * N
    row: dict = {"layer": spec.n, "block": B}
    with threadpool_limits(1, user_api="blas"):
        for name, fn in pieces.items():

            def run(timer: dict, fn=fn) -> None:
                t0 = time.perf_counter()
                for s in blocks(B):
                    fn(s)
                timer["t"] = timer.get("t", 0.0) + time.perf_counter() - t0

            row[name] = mean_timer(run, repeat)["t"]
            row[name + " GFLOP/s"] = flops / row[name] / 1e9
    return row


def spark_profile(args, train: data.Dataset) -> tuple[dict[str, float], float]:
    """Per-layer seconds inside the executors (mean per task) and the step's wall time."""
    workers = args.partitions
    spark = get_session(args.master, "sparknet-profile")
    sc = spark.sparkContext
    val = data.Dataset(train.X[:workers], train.y[:workers], train.classes)
    s = Settings("cnn", dtype=args.dtype, batch=args.batch, partitions=workers)
    s.out = tempfile.mkdtemp(prefix="sparknet-profile-")
    td = distribute(sc, s, train, val)
    try:
        td.rdd.count()
        trainer = Trainer(s, spark, td)
        recipe = trainer.recipe
        bc = sc.broadcast(trainer.model.params)

        def task(records):
            for key, chunks in records:
                X, y = chunks[0]
                timer: dict[str, float] = {}
                t0 = time.perf_counter()
                Xf = recipe.inputs(X, 0, key)
                timer["input (normalise)"] = time.perf_counter() - t0
                network.loss_and_grads(recipe.layers, bc.value, Xf, y, "sum", timer=timer)
                timer["task compute"] = time.perf_counter() - t0
                yield timer

        def job(total: dict) -> None:
            for t in sc.runJob(td.rdd, task, list(range(workers))):
                for k, v in t.items():
                    total[k] = total.get(k, 0.0) + v / workers

        per_task = mean_timer(job, args.repeat)
        bc.destroy()
        with threadpool_limits(args.threads, user_api="blas"):
            trainer.train_round(0)
            t0 = time.perf_counter()
            for r in range(args.repeat):
                trainer.train_round(r % td.layout.rounds)
            wall = (time.perf_counter() - t0) / args.repeat
    finally:
        td.release()
        spark.stop()
    return per_task, wall


def layer_table(columns: dict[str, dict[str, float]]) -> str:
    """Rows: each layer's forward and backward ms per column, then the other keys."""
    names = [f"{spec.n:>2} {spec.kind}" for spec in network.fused(LAYERS)]
    head = f"{'layer':<14}" + "".join(f"{c + ' fwd':>16}{c + ' bwd':>16}" for c in columns)
    lines = [head]
    for name in names:
        line = f"{name:<14}"
        for t in columns.values():
            line += f"{1e3 * t.get(name + ' forward', 0):>16.1f}"
            line += f"{1e3 * t.get(name + ' backward', 0):>16.1f}"
        lines.append(line)
    others = [k for t in columns.values() for k in t if not k.endswith(("forward", "backward"))]
    for k in dict.fromkeys(others):
        line = f"{k:<14}"
        for t in columns.values():
            v = t.get(k)
            line += f"{1e3 * v:>16.1f}{'':>16}" if v is not None else f"{'-':>16}{'':>16}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile_cnn",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=2000, help="images per training step")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=1, help="BLAS/sub-batch threads (matrix)")
    p.add_argument("--master", default="local[2]", help="Spark master for the Spark profile")
    p.add_argument("--partitions", type=int, default=2, help="partitions per step on Spark")
    p.add_argument("--repeat", type=int, default=3, help="steps averaged, after a warm-up")
    p.add_argument("--no-spark", action="store_true", help="profile the matrix version only")
    p.add_argument(
        "--data",
        default=str(MEASURE_DATA),
        help="training images (default: full CIFAR-10 in ../shared if present, else the sample)",
    )
    args = p.parse_args(argv)
    kernels.keep_freed_memory()  # as Spark's workers have it (MALLOC_ENV)
    train = load_mixed(args.data)
    if args.batch > len(train) or args.batch < args.partitions:
        p.error(f"--batch must be between --partitions and the {len(train)} training images")
    X = data.Normalizer.fit(train.X).apply(train.X[: args.batch], args.dtype)
    y = train.y[: args.batch]

    with threadpool_limits(args.threads, user_api="blas"):
        mx = matrix_profile(X, y, args.repeat)
    columns = {f"matrix {args.threads}t": mx}
    if not args.no_spark:
        per_task, wall = spark_profile(args, train)
        per_task["step (wall)"] = wall
        per_task["spark's cost"] = wall - per_task["task compute"]
        columns["spark task"] = per_task
    spark = (
        ""
        if args.no_spark
        else f", Spark {args.master} with {args.partitions} partitions "
        f"(per task: {args.batch // args.partitions} images, 1 thread)"
    )
    print(
        f"CNN training step, batch {args.batch}, {args.dtype}, mean of {args.repeat} (ms); "
        f"matrix on {args.threads} thread(s){spark}"
    )
    print(layer_table(columns))
    rows = conv_internals(X, args.repeat)
    peak = gemm_gflops(args.dtype, 1)
    print(
        f"\ninside conv layers (direct kernels, 1 thread, whole batch of {args.batch}, ms; "
        f"GFLOP/s and % of the one-thread square GEMM, {peak:.0f} GFLOP/s):"
    )
    print(f"{'layer':<7}" + "".join(f"{k:>22}" for k in ("forward", "dW (+db)", "dX")))
    for r in rows:
        line = f"{r['layer']:<7}"
        for k in ("forward", "dW", "dX"):
            g = r[k + " GFLOP/s"]
            rate = f" ({g:.0f}, {100 * g / peak:.0f}%)" if g else ""
            line += f"{1e3 * r[k]:>10.1f}{rate:>12}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
