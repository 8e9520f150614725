"""Debug dumps: write a big matrix, or an RDD of per-chunk matrices, as text files
that can be compared side by side (`diff -r`, `python -m util.dump compare A B`).

Typical use when a Spark version departs from the matrix version:

    from util import dump
    # matrix version: the first layer's output for all images, cut like the RDD's chunks
    dump.dump_array(out1, "dumps/matrix/out1", offsets=[0, 700, 813])
    # Spark version: the same quantity from every chunk of the forwarded RDD
    dump.dump_rdd(forwarded.mapValues(lambda r: r[1][0][0]), "dumps/spark/out1")
    # then: python -m util.dump compare dumps/matrix/out1 dumps/spark/out1

A dump is a directory with one file per chunk, `chunk-<offset>.txt`: a
header line with the shape and dtype, then one line per image (the image's
values flattened), so the files line up row by row.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "%.10g"


def _write_chunk(directory: Path, offset: int, A: np.ndarray) -> Path:
    A = np.asarray(A)
    rows = A.reshape(A.shape[0], -1) if A.ndim > 1 else A.reshape(-1, 1)
    path = directory / f"chunk-{offset:08d}.txt"
    header = f"shape {A.shape} dtype {A.dtype} offset {offset}"
    np.savetxt(path, rows, fmt=FORMAT, header=header)
    return path


def dump_array(A: np.ndarray, directory: str | Path, offsets: Sequence[int] = (0,)) -> list[Path]:
    """Writes A (N, ...) cut at the given row offsets (the chunks' first rows) to `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bounds = list(offsets) + [len(A)]
    return [_write_chunk(directory, a, A[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def dump_rdd(rdd: Any, directory: str | Path) -> list[Path]:
    """Writes an RDD[(offset, array)] to `directory`, one file per chunk.

    Streams the chunks to the driver one partition at a time (toLocalIterator):
    meant for debugging on small data, never in a training loop.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return [_write_chunk(directory, int(k), v) for k, v in rdd.toLocalIterator()]


def _read(directory: Path) -> dict[int, np.ndarray]:
    files = sorted(directory.glob("chunk-*.txt"))
    if not files:
        raise FileNotFoundError(f"{directory}: no chunk-*.txt dump files")
    return {int(f.stem.split("-")[1]): np.loadtxt(f, ndmin=2) for f in files}


def compare(a: str | Path, b: str | Path, tol: float = 1e-9) -> list[str]:
    """Lines describing where two dumps differ (empty when they agree within tol).

    Chunks are matched by rows, so dumps cut at different offsets still compare.
    """
    A, B = _read(Path(a)), _read(Path(b))
    rows_a = np.concatenate([A[k] for k in sorted(A)])
    rows_b = np.concatenate([B[k] for k in sorted(B)])
    if rows_a.shape != rows_b.shape:
        return [f"shapes differ: {a} has {rows_a.shape}, {b} has {rows_b.shape}"]
    scale = np.maximum(np.abs(rows_a), np.abs(rows_b)).max(initial=0) or 1.0
    bad = np.nonzero(np.abs(rows_a - rows_b).max(axis=1) > tol * scale)[0]
    return [
        f"row {i}: max difference {np.abs(rows_a[i] - rows_b[i]).max():.3g} "
        f"(first values {rows_a[i][:3]} vs {rows_b[i][:3]})"
        for i in bad[:20]
    ] + ([f"... and {len(bad) - 20} more rows"] if len(bad) > 20 else [])


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m util.dump", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmp_ = sub.add_parser("compare", help="compare two dump directories row by row")
    cmp_.add_argument("a", help="first dump directory")
    cmp_.add_argument("b", help="second dump directory")
    cmp_.add_argument("--tol", type=float, default=1e-9, help="relative tolerance")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        diffs = compare(args.a, args.b, args.tol)
    except FileNotFoundError as e:
        print(f"python -m util.dump: error: {e}", file=sys.stderr)
        return 2
    print("\n".join(diffs) if diffs else "the dumps agree")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
