"""The driver's peak memory when training reads its data in memory or where it lives.

    python -m bench.driver_memory data/cifar10-sample runs/sample.parquet --steps 5
    python -m bench.driver_memory --repeat runs/cifar10.parquet runs/cifar10-x10.parquet --times 10

Each DATA (any `--data` value of `python -m trainer`) is trained for --steps SGD steps in a
fresh process (so each peak is its own), with `trainer.monitor.MemoryWatch` running from
before the data is read until the steps are done: the driver's Python process (its
lifetime peak RSS), the JVM (in local mode the Spark driver and its executor) and the
largest Python worker. Prints one table row per DATA (markdown) and, with --json, writes
the figures. docs/data.md has the measured table.

--repeat SRC OUT --times T writes a synthetic Parquet data set of T copies of SRC's
training rows (indices renumbered, row group by row group, test split copied), for
measuring data sets larger than CIFAR-10.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def measure(data: str, args: argparse.Namespace) -> dict:
    """In this process: load `data`, train args.steps steps, return the peaks (bytes)."""
    from spark.session import get_session
    from trainer import monitor
    from trainer.settings import Settings
    from trainer.train import Trainer

    spark = get_session(args.master, "sparknet-driver-memory")
    try:
        with tempfile.TemporaryDirectory() as out, monitor.MemoryWatch(interval=0.05) as watch:
            s = Settings(
                model=args.model,
                data=data,
                batch=args.batch,
                partitions=args.partitions,
                val_split=args.val_split,
                max_steps=args.steps,
                checkpoint_every=0,
                out=out,
            )
            t0 = time.perf_counter()
            trainer = Trainer(s, spark)
            loaded = time.perf_counter() - t0
            try:
                trainer.run(quiet=True)
            finally:
                trainer.close()
            total = time.perf_counter() - t0
            images = trainer.layout.n_images
    finally:
        spark.stop()
    return {
        "data": data,
        "images": images,
        "load_s": loaded,
        "total_s": total,
        "peaks": watch.peaks,
        "start": watch.start,
    }


def repeat(src: str, out: str, times: int) -> None:
    """OUT/train: `times` copies of SRC/train's rows, indices renumbered; OUT/test: SRC/test."""
    import pyarrow.parquet as pq

    src_p, out_p = Path(src), Path(out)
    files = sorted((src_p / "train").glob("*.parquet"))
    if not files:
        raise SystemExit(f"{src}/train: no Parquet files")
    n = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    (out_p / "train").mkdir(parents=True, exist_ok=True)
    schema = pq.ParquetFile(files[0]).schema_arrow
    with pq.ParquetWriter(out_p / "train" / "part-00000.parquet", schema) as writer:
        for copy in range(times):
            for f in files:
                pf = pq.ParquetFile(f)
                for g in range(pf.num_row_groups):
                    table = pf.read_row_group(g)
                    index = table.column("index").to_numpy() + copy * n
                    i = table.schema.get_field_index("index")
                    writer.write_table(table.set_column(i, "index", [index]))
            print(f"copy {copy + 1}/{times}: {(copy + 1) * n} rows", flush=True)
    if (src_p / "test").is_dir():
        shutil.copytree(src_p / "test", out_p / "test", dirs_exist_ok=True)
    print(f"wrote {times * n} training rows to {out_p / 'train'}")


def table(rows: list[dict]) -> str:
    mb = 2**20
    lines = [
        "| --data | images | driver peak (MB) | JVM peak (MB) | largest worker (MB) "
        "| load (s) | load + steps (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        p = r["peaks"]
        lines.append(
            f"| {r['data']} | {r['images']:,} | {p['driver'] / mb:.0f} | {p['jvm'] / mb:.0f} "
            f"| {p['worker'] / mb:.0f} | {r['load_s']:.0f} | {r['total_s']:.0f} |"
        )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.driver_memory",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("data", nargs="*", metavar="DATA", help="--data values to measure")
    p.add_argument("--model", default="cnn", help="classifier (default: cnn)")
    p.add_argument("--steps", type=int, default=5, help="SGD steps per run (default: 5)")
    p.add_argument("--batch", type=int, default=100, help="images per step (default: 100)")
    p.add_argument("--partitions", type=int, default=2, help="partitions (default: 2)")
    p.add_argument(
        "--val-split", type=int, default=0, help="validation images held out (default: 0)"
    )
    p.add_argument("--master", default="local[2]", help="Spark master (default: local[2])")
    p.add_argument("--json", metavar="PATH", help="also write the figures here (default: none)")
    p.add_argument(
        "--repeat",
        nargs=2,
        metavar=("SRC", "OUT"),
        help="write a synthetic Parquet set of --times copies of SRC to OUT, then stop",
    )
    p.add_argument("--times", type=int, default=10, help="copies for --repeat (default: 10)")
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    if a.repeat:
        repeat(*a.repeat, a.times)
        return 0
    if not a.data:
        parser().error("give at least one DATA (or --repeat)")
    if a.one:
        print("RESULT " + json.dumps(measure(a.data[0], a)), flush=True)
        return 0
    rows = []
    passed = [
        f"--{k.replace('_', '-')}={v}"
        for k, v in vars(a).items()
        if k in ("model", "steps", "batch", "partitions", "val_split", "master")
    ]
    for data in a.data:
        print(f"measuring {data} ...", file=sys.stderr, flush=True)
        run = subprocess.run(
            [sys.executable, "-m", "bench.driver_memory", "--one", data, *passed],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        found = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode or not found:
            print(f"{data}: failed (exit {run.returncode}):\n{run.stderr[-3000:]}", file=sys.stderr)
            return 1
        rows.append(json.loads(found[-1][len("RESULT ") :]))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
