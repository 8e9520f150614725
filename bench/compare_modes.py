"""`make compare-modes`: sync training against parameter averaging (avg, K local steps).

    python -m bench.compare_modes [--data DIR] [--epochs 3] [--batch 128]
                                  [--partitions 2] [--ks 1 5 20] [--out runs/compare-modes]

Trains the CNN once in sync mode and once in avg mode per K, on the same
data, partitions, batch, learning-rate schedule and seed, all on one Spark
session (the data is loaded once). Validation accuracy is measured every
--eval-every steps. Writes each run's metrics.jsonl under --out, a summary
table (summary.txt, summary.json) and modes.png: validation accuracy against
training wall time and against the number of synchronisations (jobs whose
results the driver combined: one per step in sync, one per K steps in avg).
Each run's peak memory (driver, JVM, largest Python worker) goes into the summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.steps import MEASURE_DATA
from spark.session import get_session
from trainer import monitor
from trainer.data import distribute
from trainer.settings import Settings
from trainer.train import Trainer
from util import data, models


def plot(runs: dict[str, list[dict]], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, records in runs.items():
        evals = sorted(
            (r for r in records if r.get("kind") in ("epoch", "eval")), key=lambda r: r["step"]
        )
        acc = [100 * r["val_accuracy"] for r in evals]
        axes[0].plot([r["time"] for r in evals], acc, "o-", ms=3, label=name)
        axes[1].plot([r["syncs"] for r in evals], acc, "o-", ms=3, label=name)
    axes[0].set_xlabel("training wall time (s)")
    axes[1].set_xlabel("synchronisations (jobs combined by the driver)")
    axes[1].set_xscale("log")
    for ax in axes:
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compare_modes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        default=str(MEASURE_DATA),
        help="training images (default: full CIFAR-10 in ../shared if present, else the sample)",
    )
    p.add_argument("--model", choices=sorted(models.MODELS), default="cnn")
    p.add_argument("--val-split", type=int, default=5000, help="held-out validation images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128, help="images per SGD step, all partitions")
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5, 20], help="K values for avg")
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--eval-every", type=int, default=100, help="steps between validations")
    p.add_argument("--augment", action="store_true", help="random flips and shifts")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--out", default="runs/compare-modes")
    args = p.parse_args(argv)

    train = data.load(args.data, "train")
    if args.val_split >= len(train):
        p.error(f"--val-split must be below the {len(train)} training images")
    train, val = data.train_val_split(train, args.val_split, seed=0)
    out = Path(args.out)
    spark = get_session(args.master, "sparknet-compare-modes")
    configs = [("sync", 1)] + [("avg", k) for k in args.ks]
    runs, summary = {}, []
    td = None
    try:
        for mode, k in configs:
            name = "sync" if mode == "sync" else f"avg K={k}"
            s = Settings(
                args.model,
                data=args.data,
                val_split=args.val_split,
                batch=args.batch,
                partitions=args.partitions,
                mode=mode,
                avg_every=k,
                epochs=args.epochs,
                lr=args.lr,
                augment=args.augment,
                out=str(out / name.replace(" ", "").replace("=", "")),
                checkpoint_every=0,
                eval_every=args.eval_every,
            )
            if td is None or td.layout.avg_every != k:  # sync and avg K=1 share a layout
                if td is not None:
                    td.release()
                td = distribute(spark.sparkContext, s, train, val)
                td.rdd.count()
            trainer = Trainer(s, spark, td)
            print(f"{name}: {trainer.layout.rounds * args.epochs} jobs", flush=True)
            with monitor.MemoryWatch(interval=0.05) as memory:
                acc = trainer.run()
            print(memory.summary(), flush=True)
            runs[name] = monitor.read(Path(s.out) / "metrics.jsonl")
            summary.append(
                {
                    "run": name,
                    "val_accuracy": acc,
                    "seconds": trainer.elapsed,
                    "syncs": trainer.syncs,
                    "steps": trainer.step,
                    "peak_memory_bytes": memory.peaks,
                }
            )
    finally:
        if td is not None:
            td.release()
        spark.stop()
    title = (
        f"{args.model}: sync vs avg, {args.partitions} partitions, batch {args.batch}, "
        f"{args.epochs} epochs, {len(train)} training images"
    )
    plot(runs, out / "modes.png", title)
    lines = [
        title,
        f"{'run':<10}{'val acc':>9}{'seconds':>9}{'syncs':>7}{'steps':>7}"
        f"{'driver MB':>11}{'JVM MB':>8}{'worker MB':>11}",
    ]
    for r in summary:
        mb = {k: v / 2**20 for k, v in r["peak_memory_bytes"].items()}
        lines.append(
            f"{r['run']:<10}{r['val_accuracy']:>8.2%}{r['seconds']:>9.0f}{r['syncs']:>7}"
            f"{r['steps']:>7}{mb['driver']:>11.0f}{mb['jvm']:>8.0f}{mb['worker']:>11.0f}"
        )
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}/modes.png, summary.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
