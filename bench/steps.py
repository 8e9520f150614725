"""`make bench`: training-step time of every classifier, in-process, on Spark and in PyTorch.

    python -m bench.steps [--models linear nn cnn] [--batches 100 500 2000]
                          [--dtypes float32 float64] [--masters 'local[1]' 'local[2]']
                          [--threads 2] [--repeat 5] [--data DIR] [--no-torch]

For each classifier, batch size and dtype it times one SGD training step
(gradients + regularised momentum update) on real CIFAR-10 images:

- matrix: `Classifier.gradients` + `step` in this process, BLAS pinned to
  --threads threads (`util.network.loss_and_grads`: cache-sized sub-batches);
- layers: the bare `util.layer` functions composed layer by layer on the whole
  batch (`util.network.forward`/`backward`, what the course's Spark classifiers and
  the students' `forward()`/`backward()` run on each chunk) + the same update;
- spark local[N]: one sync step of `python -m trainer` (broadcast, one job
  over N partitions, reduce, update) on a batch drawn from the whole training set
  cached in the RDD (--data; the full CIFAR-10 set when ../shared has it);
- torch: the same network (same layer table and initial parameters, checked to
  give the same loss) as torch.nn layers with torch.optim.SGD on --threads
  threads, when PyTorch is installed (`pip install -e .[bench]`).

Each time is the median (and min, max) of --repeat steps after one warm-up.
Also: images/s; peak memory (of one step in this process, and of the largest
Spark Python worker); the step's FLOP count, this machine's BLAS GEMM rate,
and so the "limit" = FLOPs / GEMM rate that no implementation can beat; and
Spark's fixed cost per step (1 image per partition) next to the latency of a
trivial job on the same session.
Prints a table; writes everything to --out as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import platform
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from matrix.classifier import classifier_class
from spark.session import get_session
from trainer import monitor
from trainer.data import distribute
from trainer.settings import Settings
from trainer.train import Trainer
from util import data, kernels, layer, models, network

FULL_DATA = models.REPO.parent / "shared" / "data" / "cifar10-jpeg"
# the full CIFAR-10 set where the development machines have it, else the shipped sample
MEASURE_DATA = FULL_DATA if FULL_DATA.is_dir() else data.SAMPLE
IN_SHAPE = (3, 32, 32)


# ----------------------------------------------------------------------------- measuring


def load_mixed(path: str) -> data.Dataset:
    """The training images of `path` in a seeded random order. Image folders list them
    class by class, and the first `batch` images of one class are learnt in a step or two,
    after which the float32 gradients turn denormal and every step (PyTorch's too) runs
    several times slower: a benchmark artefact, not a training step."""
    train = data.load(path, "train")
    return train.subset(np.random.default_rng(0).permutation(len(train)))


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {field}")


def step_memory(fn: Callable[[], object]) -> int | None:
    """Peak RSS increase (bytes) of one call of fn; None where it cannot be measured.

    Linux with glibc: the heap is trimmed first (freed memory goes back to the
    system) and the kernel's high-water mark is reset (/proc/self/clear_refs), so
    the figure is what the call itself needs at its peak, not what earlier calls
    left allocated."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = _status_bytes("VmRSS")
        fn()
        return _status_bytes("VmHWM") - base
    except (OSError, AttributeError):
        return None


def timed(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    """Median, min and max seconds of `repeat` calls after one warm-up call; the peak
    memory of one more call (`step_memory`, this process) and the largest Spark Python
    worker's peak RSS during the timed calls (0 without Spark)."""
    fn()
    times = []
    with monitor.MemoryWatch(interval=0.02) as mem:
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "step_mem": step_memory(fn),
        "worker_mem": mem.peaks["worker"],
    }


def report(column: str, key: tuple, r: dict[str, float]) -> dict[str, float]:
    """Prints one measured cell as progress output; returns it."""
    model, dtype, batch = key
    print(f"  {column:<9} {model:<7} {dtype:<8} batch {batch:>5}: {r['median']:.4f} s", flush=True)
    return r


def gemm_gflops(dtype: str, threads: int, n: int = 2048, repeat: int = 5) -> float:
    """Best GFLOP/s of an n x n x n matrix product with BLAS on `threads` threads (n = 2048:
    OpenBLAS's full rate here; 1024 gave up to a third less on a busy machine)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype=dtype)
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=out)
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_flops(layers, batch: int, num_classes: int = 10) -> int:
    """FLOPs of one training step's GEMMs on CIFAR-10 images (`network.step_flops`)."""
    return network.step_flops(layers, IN_SHAPE, batch, num_classes)


# ----------------------------------------------------------------------------- the three


def in_process_cells(
    args, train: data.Dataset, norm: data.Normalizer, whole_batch: bool
) -> dict[tuple, dict]:
    """Steps in this process: `loss_and_grads` in its cache-sized sub-batches (the matrix
    column) or, with whole_batch, the bare layer functions in the table's order on the whole
    batch (layers), as the course's Spark classifiers run them on a chunk."""
    column = "layers" if whole_batch else "matrix"
    cells = {}
    with threadpool_limits(args.threads, user_api="blas"):
        for model_name, dtype, batch in grid(args):
            m = classifier_class(model_name)(dtype=dtype)
            X, y = norm.apply(train.X[:batch], dtype), train.y[:batch]

            def step(m=m, X=X, y=y) -> None:
                if not whole_batch:
                    m.step(*network.loss_and_grads(m.layers, m.params, X, y))
                    return
                scores, caches = network.forward(m.layers, m.params, X)  # the table's order
                loss, dscores = layer.softmax_loss(scores, y)
                m.step(loss, network.backward(m.layers, dscores, caches))

            key = (model_name, dtype, batch)
            cells[key] = report(column, key, timed(step, args.repeat))
    return cells


def torch_network(layers, params: dict[str, np.ndarray]):
    """torch.nn.Sequential equal to a layer table, with a copy of `params`."""
    import torch
    from torch import nn

    def tensor(a: np.ndarray):
        return torch.from_numpy(a.copy())

    def conv(spec, W, b, g=None, V=None):
        """Any form of Conv: factored (V<n> padded, then W<n> unpadded), batch-normalised
        (no bias, then BatchNorm2d in training mode: batch statistics, biased variance, as
        ours), both or neither."""
        mods, stride, pad = [], spec.stride, spec.pad
        if V is not None:
            first = nn.Conv2d(V.shape[1], V.shape[0], V.shape[2], 1, spec.pad, bias=False)
            first.weight.data = tensor(V)
            mods, stride, pad = [first], 1, 0
        m = nn.Conv2d(W.shape[1], W.shape[0], W.shape[2], stride, pad, bias=g is None)
        m.weight.data = tensor(W)
        if g is None:
            m.bias.data = tensor(b)
            return [*mods, m]
        bn = nn.BatchNorm2d(W.shape[0], eps=layer.BATCHNORM_EPS)
        bn.weight.data, bn.bias.data = tensor(g), tensor(b)
        return [*mods, m, bn]

    def linear(spec, W, b):
        m = nn.Linear(*W.shape)
        m.weight.data, m.bias.data = tensor(W.T), tensor(b)
        return [nn.Flatten(), m]

    modules = {
        "linear": linear,
        "relu": lambda spec: [nn.ReLU()],
        "maxpool": lambda spec: [nn.MaxPool2d(spec.size, spec.stride)],
    }
    mods = []
    for spec in layers:
        if isinstance(spec, network.Conv):
            mods += conv(spec, **{k[0]: params[k] for k in spec.param_names})
            continue
        if spec.kind not in modules:
            raise ValueError(f"torch_network: no PyTorch module for layer {spec.n} ({spec.kind})")
        mods += modules[spec.kind](spec, *(params[k] for k in spec.param_names))
    return nn.Sequential(*mods)


def torch_cells(args, train: data.Dataset, norm: data.Normalizer) -> dict[tuple, dict]:
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed (pip install -e .[bench]): no torch columns")
        return {}
    torch.set_num_threads(args.threads)
    cells = {}
    for model_name, dtype, batch in grid(args):
        ours = classifier_class(model_name)(dtype=dtype)
        net = torch_network(ours.layers, ours.params)
        sgd = ours.sgd  # (torch decays biases too and has its own momentum form: same cost)
        opt = torch.optim.SGD(
            net.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay
        )
        X = torch.from_numpy(norm.apply(train.X[:batch], dtype))
        y = torch.from_numpy(train.y[:batch])
        # the same network: equal data loss at the same parameters
        with torch.no_grad():
            theirs = torch.nn.functional.cross_entropy(net(X), y).item()
        mine, _ = network.loss_and_grads(ours.layers, ours.params, X.numpy(), y.numpy())
        if abs(theirs - mine) > 1e-3 * abs(mine):
            raise AssertionError(f"torch {model_name}: loss {theirs} differs from ours {mine}")

        def step(net=net, opt=opt, X=X, y=y) -> None:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(X), y).backward()
            opt.step()

        key = (model_name, dtype, batch)
        cells[key] = report("torch", key, timed(step, args.repeat))
    return cells


def spark_cells(args, train: data.Dataset, master: str) -> tuple[dict[tuple, dict], dict]:
    """Sync training steps on `master` (one partition per core); and its fixed cost."""
    workers = int(re.fullmatch(r"local\[(\d+)\]", master).group(1))
    spark = get_session(master, "sparknet-bench")
    sc = spark.sparkContext
    val = data.Dataset(train.X[:workers], train.y[:workers], train.classes)
    cells, fixed = {}, {}
    out = tempfile.mkdtemp(prefix="sparknet-bench-")
    try:
        with threadpool_limits(args.threads, user_api="blas"):  # the driver's update

            def trainer_steps(model: str, dtype: str, td) -> Callable[[], object]:
                s = Settings(model, dtype=dtype, batch=td.layout.batch, partitions=workers, out=out)
                t = Trainer(s, spark, td)
                rounds = itertools.count()  # a new batch (partitions) every step
                return lambda: t.train_round(next(rounds) % td.layout.rounds)

            for batch in args.batches:
                td = distribute(sc, Settings(batch=batch, partitions=workers), train, val)
                td.rdd.count()
                for model_name, dtype, b in grid(args):
                    if b == batch:
                        step = trainer_steps(model_name, dtype, td)
                        key = (model_name, dtype, batch)
                        cells[key] = report(master, key, timed(step, args.repeat))
                td.release()
            few = data.Dataset(train.X[: 20 * workers], train.y[: 20 * workers], train.classes)
            tiny = distribute(sc, Settings(batch=workers, partitions=workers), few, val)
            tiny.rdd.count()
            fixed["tiny step"] = timed(trainer_steps("cnn", "float32", tiny), args.repeat)
            tiny.release()
            trivial = sc.parallelize(range(workers), workers).cache()
            trivial.count()
            fixed["trivial job"] = timed(
                lambda: sc.runJob(trivial, lambda it: [sum(it)], list(range(workers))),
                args.repeat,
            )
            trivial.unpersist()
    finally:
        spark.stop()
    return cells, fixed


def grid(args):
    for model in args.models:
        for dtype in args.dtypes:
            for batch in args.batches:
                yield model, dtype, batch


# ----------------------------------------------------------------------------- output


def mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def table(args, results: dict[str, Any]) -> str:
    """One row per (model, dtype, batch): medians, ratios, img/s, memory, FLOP limit."""
    cols = results["columns"]
    head = f"{'model':<7}{'dtype':<8}{'batch':>6}{'GFLOP':>7}{'limit s':>9}"
    for c in cols:
        head += f"{c + ' s':>15}"
    head += f"{'img/s':>8}{'%limit':>7}{'mem MB':>8}"
    if "layers" in cols:
        head += f"{'lay %lim':>9}{'lay MB':>8}"
    if "local[2]" in cols:
        head += f"{'spark2/mx':>10}{'wkr MB':>8}"
    if "torch" in cols:
        head += f"{'mx/torch':>9}{'lay/torch':>10}{'torch MB':>9}"
    lines = [head]
    for row in results["rows"]:
        line = (
            f"{row['model']:<7}{row['dtype'][5:]:<8}{row['batch']:>6}"
            f"{row['gflop']:>7.2f}{row['limit_s']:>9.4f}"
        )
        for c in cols:
            r = row.get(c)
            line += f"{r['median']:>9.4f}±{(r['max'] - r['min']) / 2:<5.3f}" if r else f"{'-':>15}"
        mx = row["matrix"]
        line += f"{row['batch'] / mx['median']:>8.0f}{100 * row['limit_s'] / mx['median']:>6.0f}%"
        line += f"{mb(mx['step_mem']):>8}"
        if "layers" in cols:
            lay = row["layers"]
            line += f"{100 * row['limit_s'] / lay['median']:>8.0f}%{mb(lay['step_mem']):>8}"
        if "local[2]" in cols:
            sp = row["local[2]"]
            line += f"{sp['median'] / mx['median']:>9.2f}x{mb(sp['worker_mem']):>8}"
        if "torch" in cols and row.get("torch"):
            th = row["torch"]
            lay = row.get("layers")
            line += f"{mx['median'] / th['median']:>8.2f}x"
            line += f"{lay['median'] / th['median']:>9.2f}x" if lay else f"{'-':>10}"
            line += f"{mb(th['step_mem']):>9}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.steps",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models", nargs="+", choices=sorted(models.MODELS), default=["linear", "nn", "cnn"]
    )
    p.add_argument("--batches", nargs="+", type=int, default=[100, 500, 2000])
    p.add_argument(
        "--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"]
    )
    p.add_argument(
        "--masters", nargs="*", default=["local[1]", "local[2]"], help="local[N] masters"
    )
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (matrix, torch, driver)")
    p.add_argument("--repeat", type=int, default=5, help="timed steps per cell, after a warm-up")
    p.add_argument(
        "--data",
        default=str(MEASURE_DATA),
        help="training images (default: the full CIFAR-10 set in ../shared if present, "
        "else the shipped sample)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--out", default="build/bench/bench.json", help="JSON output")
    args = p.parse_args(argv)
    kernels.keep_freed_memory()  # as Spark's workers have it (MALLOC_ENV)
    for m in args.masters:
        if not re.fullmatch(r"local\[\d+\]", m):
            p.error(f"--masters: expected local[N], got {m!r}")
    if args.repeat < 1 or args.threads < 1 or min(args.batches) < 1:
        p.error("--repeat, --threads and --batches must be >= 1")

    t0 = time.perf_counter()
    train = load_mixed(args.data)
    if max(args.batches) > len(train):
        p.error(f"--batches: {args.data} has only {len(train)} training images")
    norm = data.Normalizer.fit(train.X)
    print(f"{len(train)} training images from {args.data} ({time.perf_counter() - t0:.0f}s)")
    blas = [
        f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}"
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    gemm = {d: gemm_gflops(d, args.threads) for d in args.dtypes}
    print(
        f"BLAS {'; '.join(blas)}: GEMM "
        + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in gemm.items())
        + f" on {args.threads} threads"
    )

    columns = {c: in_process_cells(args, train, norm, c == "layers") for c in ("matrix", "layers")}
    print(f"matrix and layers done ({time.perf_counter() - t0:.0f}s)", flush=True)
    fixed = {}
    for master in args.masters:
        columns[master], fixed[master] = spark_cells(args, train, master)
        print(f"{master} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    if not args.no_torch:
        torch = torch_cells(args, train, norm)
        if torch:
            columns["torch"] = torch
    # the machine's rate is the best of a measurement before and one after the steps, so
    # that a slow moment during one of them cannot lower the limit (and flatter the steps)
    gemm = {d: max(g, gemm_gflops(d, args.threads)) for d, g in gemm.items()}
    print(
        "GEMM rate for the limit (best of before and after): "
        + ", ".join(f"{d} {g:.0f} GFLOP/s" for d, g in gemm.items())
    )
    rows = []
    for model, dtype, batch in grid(args):
        flops = step_flops(models.get(model).layers, batch)
        row = {
            "model": model,
            "dtype": dtype,
            "batch": batch,
            "gflop": flops / 1e9,
            "limit_s": flops / (gemm[dtype] * 1e9),
        }
        row.update({c: cells[model, dtype, batch] for c, cells in columns.items()})
        rows.append(row)
    results = {
        "settings": vars(args),
        "machine": platform.processor() or platform.machine(),
        "blas": blas,
        "gemm_gflops": gemm,
        "columns": list(columns),
        "rows": rows,
        "spark_fixed_cost": fixed,
    }
    print()
    print(
        f"training step, median ± half range of {args.repeat} (s), {args.threads} threads; "
        f"img/s, %limit and mem (peak RSS of one step) of the matrix version (lay: of the "
        f"layers column); wkr: the "
        f"largest Spark Python worker's peak RSS (local[2]); mx/torch, lay/torch: matrix, "
        f"layers over PyTorch"
    )
    print(table(args, results))
    for master, f in fixed.items():
        tiny, triv = f["tiny step"]["median"], f["trivial job"]["median"]
        print(
            f"{master}: step of 1 image per partition {tiny:.4f}s, trivial job {triv:.4f}s "
            f"-> fixed cost {tiny / triv:.2f}x a trivial job"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out} ({time.perf_counter() - t0:.0f}s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
