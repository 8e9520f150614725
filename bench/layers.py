"""Benchmark of the CNN's layers: training-step time and Cython-vs-numpy kernel times.

    python -m bench.layers [--batch 2000] [--threads 2] [--repeat 5]

For each dtype it times, on random data with the CNN's layer table
(matrix/cnn.py), the forward pass, the backward pass (softmax loss included)
and a whole training step (`util.network.loss_and_grads`), then each kernel
(im2col, col2im, max-pool forward/backward) on the CNN's actual layer shapes,
Cython against its numpy twin. im2col/col2im run block by block into reused
buffers, exactly as `util.layer.conv_forward`/`conv_backward` use them.
Every time is the median of `--repeat` runs after one warm-up run. The BLAS
thread count is pinned with threadpoolctl. Results go to stdout and, as JSON,
to build/bench/layers.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from util import kernels, kernels_numpy, layer, models, network
from util.network import Conv, MaxPool

IN_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of `repeat` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_network(batch: int, dtype: np.dtype, repeat: int, seed: int = 0) -> dict[str, float]:
    """Seconds for forward, backward (loss included) and a whole step of the CNN."""
    layers = models.get("cnn").layers
    rng = np.random.default_rng(seed)
    params = network.init_params(layers, IN_SHAPE, NUM_CLASSES, seed=seed, dtype=dtype)
    X = rng.standard_normal((batch, *IN_SHAPE)).astype(dtype)
    y = rng.integers(0, NUM_CLASSES, batch)

    def backward(caches: list, scores: np.ndarray) -> None:
        _, dscores = layer.softmax_loss(scores, y)
        network.backward(layers, dscores, caches)

    result = {"forward": median_time(partial(network.forward, layers, params, X), repeat)}
    scores, caches = network.forward(layers, params, X)
    result["backward"] = median_time(partial(backward, caches, scores), repeat)
    del scores, caches  # frees the activations before the whole-step runs
    result["step"] = median_time(lambda: network.loss_and_grads(layers, params, X, y), repeat)
    return result


def _layer_shapes() -> tuple[list[tuple[Conv, tuple]], list[tuple[MaxPool, tuple]]]:
    """The CNN's conv and max-pool layers with their input shapes (C, H, W)."""
    layers = models.get("cnn").layers
    inputs = list(zip(layers, network.shapes(layers, IN_SHAPE, NUM_CLASSES), strict=False))
    return (
        [(spec, shape) for spec, shape in inputs if spec.kind == "conv"],
        [(spec, shape) for spec, shape in inputs if spec.kind == "maxpool"],
    )


def _blocked_im2col(impl, X: np.ndarray, spec: Conv) -> Callable[[], None]:
    """im2col of the whole batch, block by block into one buffer, as conv_forward does."""
    N, C, H, W = X.shape
    k, s, p = spec.size, spec.stride, spec.pad
    K, P = C * k * k, kernels.out_size(H, k, s, p) * kernels.out_size(W, k, s, p)
    B = kernels.block_images(N, K * P * X.itemsize)
    buf = np.empty(K * B * P, dtype=X.dtype)

    def run() -> None:
        for n0 in range(0, N, B):
            nb = min(B, N - n0)
            impl.im2col(X[n0 : n0 + nb], k, k, s, p, out=buf[: K * nb * P].reshape(K, nb * P))

    return run


def _blocked_col2im(impl, X: np.ndarray, spec: Conv) -> Callable[[], None]:
    """col2im of the whole batch, block by block into dX, as conv_backward does."""
    N, C, H, W = X.shape
    k, s, p = spec.size, spec.stride, spec.pad
    K, P = C * k * k, kernels.out_size(H, k, s, p) * kernels.out_size(W, k, s, p)
    B = kernels.block_images(N, K * P * X.itemsize)
    buf = np.random.default_rng(1).standard_normal(K * B * P).astype(X.dtype)
    dX = np.empty_like(X)

    def run() -> None:
        for n0 in range(0, N, B):
            nb = min(B, N - n0)
            cols = buf[: K * nb * P].reshape(K, nb * P)
            impl.col2im(cols, (nb, C, H, W), k, k, s, p, out=dX[n0 : n0 + nb])

    return run


def time_kernels(batch: int, dtype: np.dtype, repeat: int) -> list[dict]:
    """Cython and numpy seconds of each kernel on the CNN's layer shapes."""
    from util import _kernels as cython_kernels  # a clear ImportError if not built

    impls = {"cython": cython_kernels, "numpy": kernels_numpy}
    rng = np.random.default_rng(0)
    rows = []
    convs, pools = _layer_shapes()
    for spec, shape in convs:
        X = rng.standard_normal((batch, *shape)).astype(dtype)
        for kernel, make in (("im2col", _blocked_im2col), ("col2im", _blocked_col2im)):
            row = {"kernel": kernel, "layer": spec.n, "shape": [batch, *shape]}
            for name, impl in impls.items():
                row[name] = median_time(make(impl, X, spec), repeat)
            rows.append(row)
    for spec, shape in pools:
        X = rng.standard_normal((batch, *shape)).astype(dtype)
        size, stride = spec.size, spec.stride
        out, argmax = cython_kernels.maxpool_forward(X, size, stride)
        dout = rng.standard_normal(out.shape).astype(dtype)
        fwd = {"kernel": "maxpool fwd", "layer": spec.n, "shape": [batch, *shape]}
        bwd = {"kernel": "maxpool bwd", "layer": spec.n, "shape": [batch, *shape]}
        for name, impl in impls.items():
            fwd[name] = median_time(partial(impl.maxpool_forward, X, size, stride), repeat)
            bwd[name] = median_time(
                partial(impl.maxpool_backward, dout, argmax, X.shape, size, stride), repeat
            )
        rows += [fwd, bwd]
    for row in rows:
        row["ratio"] = row["numpy"] / row["cython"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.layers",
        description="Times the CNN's training step and the Cython vs numpy layer kernels.",
    )
    parser.add_argument("--batch", type=int, default=2000, help="images per batch (default 2000)")
    parser.add_argument(
        "--threads", type=int, default=2, help="BLAS threads, pinned with threadpoolctl (default 2)"
    )
    parser.add_argument(
        "--repeat", type=int, default=5, help="timed runs per measurement, after a warm-up (5)"
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "float64"],
        choices=["float32", "float64"],
        help="dtypes to benchmark (default: float32 float64)",
    )
    parser.add_argument(
        "--no-kernels", action="store_true", help="skip the per-kernel Cython vs numpy timings"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("build/bench/layers.json"),
        help="where to write the JSON results (default build/bench/layers.json)",
    )
    args = parser.parse_args(argv)
    if args.batch < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--batch, --threads and --repeat must be >= 1")

    kernels.use("cython")
    results: dict = {
        "batch": args.batch,
        "threads": args.threads,
        "repeat": args.repeat,
        "statistic": "median",
        "machine": platform.processor() or platform.machine(),
        "dtypes": {},
    }
    with threadpool_limits(limits=args.threads, user_api="blas"):
        blas = [
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
            f"threads={i.get('num_threads')}"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
        results["blas"] = blas
        print(f"CNN, batch {args.batch}, BLAS: {'; '.join(blas)}, median of {args.repeat}")
        for name in args.dtypes:
            dtype = np.dtype(name)
            net = time_network(args.batch, dtype, args.repeat)
            print(
                f"\n{name}: forward {net['forward']:.3f} s, backward {net['backward']:.3f} s,"
                f" training step {net['step']:.3f} s"
            )
            entry: dict = {"network_seconds": net}
            if not args.no_kernels:
                rows = time_kernels(args.batch, dtype, args.repeat)
                print(
                    f"  {'kernel':<12} {'layer':>5} {'cython ms':>10} {'numpy ms':>10} {'ratio':>7}"
                )
                for r in rows:
                    print(
                        f"  {r['kernel']:<12} {r['layer']:>5} {r['cython'] * 1e3:>10.1f}"
                        f" {r['numpy'] * 1e3:>10.1f} {r['ratio']:>6.1f}x"
                    )
                entry["kernels_seconds"] = rows
            results["dtypes"][name] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
