"""Converts CIFAR-10 python batches or image folders to the Parquet layout the trainer reads.

    python -m trainer.convert data/cifar10-sample runs/sample.parquet
    python -m trainer cnn --data runs/sample.parquet ...      (Spark reads it; see docs/data.md)

SRC is anything `util.data.load` reads (CIFAR-10 python batches, a folder with train/ and
test/ image-folder trees, or a single tree <class>/*.jpg); OUT is a local folder that
gets OUT/train/part-00000.parquet and OUT/test/part-00000.parquet (copy it to HDFS or S3
as it is). One row per image, in the order util.data.load reads them:

    index  int64   position in load order, 0..N-1 (so every source lays out the same
                   images in the same partitions and slots)
    label  int64   0..K-1
    class  string  the class name of the label (the class names live here: the name of
                   label k is the `class` of any row with label k)
    image  binary  the encoded image (PNG/JPEG): image folders' files as they are
                   (--format auto), or re-encoded as PNG (--format png)
    pixels binary  or instead 3072 raw bytes, the R, G and B 32x32 planes (CIFAR batches
                   with --format auto, anything with --format raw)

Rows are written in row groups of --rows-per-group images, so the conversion holds one
row group (and one batch file of CIFAR batches) at a time. Each image is decoded once
here, so bad files are reported now, naming the file.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trainer.settings import OneLineParser
from util.data import DataError, locate

FORMATS = ("auto", "raw", "png")
PART = "part-00000.parquet"


@dataclass
class Source:
    """One split of SRC as a stream: class names, image count (None: not known before
    reading), kind of SRC ("batches" or "folders") and the rows (label, raw pixels or
    encoded bytes, what)."""

    classes: list[str]
    count: int | None
    kind: str
    rows: Iterator[tuple[int, np.ndarray | bytes, str]]


def open_split(src: Path, split: str) -> Source:
    """`split` of src, found the way util.data.load finds it (`util.data.locate`)."""
    from util.data.batches import iter_cifar_batches
    from util.data.folders import list_image_folder

    where = locate(src, split)
    if where.kind == "batches":
        classes, batches = iter_cifar_batches(where.root, split)
        return Source(classes, None, "batches", _batch_rows(batches))
    files, classes = list_image_folder(where.root, where.classes)
    rows = ((label, path.read_bytes(), str(path)) for path, label in files)
    return Source(classes, len(files), "folders", rows)


def _batch_rows(batches) -> Iterator[tuple[int, np.ndarray, str]]:
    for path, X, y in batches:
        for i in range(len(y)):
            yield int(y[i]), X[i], f"{path}: image {i}"


def has_test(src: Path) -> bool:
    """Whether `src` has a test split (a single image-folder tree has none)."""
    try:
        open_split(src, "test")
    except DataError:
        return False
    return True


def payload_kind(kind: str, fmt: str) -> str:
    """The Parquet column of the images: "image" (encoded) or "pixels" (raw)."""
    if fmt == "raw" or (fmt == "auto" and kind == "batches"):
        return "pixels"
    return "image"


def _encode(data: np.ndarray | bytes, what: str, column: str, fmt: str) -> bytes:
    """One row's stored bytes; encoded input is decoded here, so a bad file fails now."""
    from PIL import Image

    from util.data.decode import decode_image

    if isinstance(data, bytes):
        pixels = decode_image(data, (32, 32), what)
        if column == "image" and fmt == "auto":
            return data  # the file as it is: executors decode the very same bytes
    else:
        pixels = data
    if column == "pixels":
        return np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0))).save(out, format="PNG")
    return out.getvalue()


def schema(column: str):
    import pyarrow as pa

    return pa.schema(
        [
            ("index", pa.int64()),
            ("label", pa.int64()),
            ("class", pa.string()),
            (column, pa.binary()),
        ]
    )


def convert_split(
    src: Path, out: Path, split: str, fmt: str = "auto", rows_per_group: int = 10000,
    progress: bool = True,
) -> tuple[int, list[str], Path]:  # fmt: skip
    """Writes `split` of src to out/<split>/part-00000.parquet; returns (images, classes,
    file). Written to a temporary folder first, so a failed conversion leaves no partial
    data set where a complete one is expected."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = open_split(src, split)
    column = payload_kind(source.kind, fmt)
    target = out / split
    tmp = out / f".{split}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = 0
    try:
        with pq.ParquetWriter(tmp / PART, schema(column)) as writer:
            group: dict[str, list] = {"index": [], "label": [], "class": [], column: []}

            def flush() -> None:
                if group["index"]:
                    writer.write_table(pa.table(group, schema=schema(column)))
                for v in group.values():
                    v.clear()

            bar = tqdm(
                source.rows, total=source.count, desc=split, unit="img", disable=not progress
            )
            for label, data, what in bar:
                group["index"].append(n)
                group["label"].append(label)
                group["class"].append(source.classes[label])
                group[column].append(_encode(data, what, column, fmt))
                n += 1
                if len(group["index"]) >= rows_per_group:
                    flush()
            flush()
        if n == 0:
            raise DataError(f"{src}: the {split} split has no images")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return n, source.classes, target / PART


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m trainer.convert",
        description=__doc__.split("\n\n")[0],
        epilog="The layout: docs/data.md.",
    )
    p.add_argument("src", metavar="SRC", help="CIFAR-10 batches dir or image-folder tree")
    p.add_argument("out", metavar="OUT", help="output folder (gets OUT/train/, OUT/test/)")
    p.add_argument(
        "--split",
        choices=["train", "test", "both"],
        default="both",
        help="which split(s); both: train, and test where SRC has one (default: both)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="auto: image files as they are, CIFAR batches as raw pixels; raw: 3072 "
        "pixel bytes per image; png: PNG-encoded (default: auto)",
    )
    p.add_argument(
        "--rows-per-group",
        type=int,
        default=10000,
        metavar="N",
        help="images per Parquet row group, the most held in memory (default: 10000)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace OUT/<split> if it exists (default: off)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if a.rows_per_group < 1:
        p.error(f"--rows-per-group must be >= 1, got {a.rows_per_group}")
    src, out = Path(a.src), Path(a.out)
    if out.exists() and not out.is_dir():
        p.error(f"OUT {out}: is a file; expected a folder")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print(
            "python -m trainer.convert: error: needs pyarrow (pip install pyarrow)", file=sys.stderr
        )
        return 2
    try:
        splits = [a.split] if a.split != "both" else ["train"]
        if a.split == "both":
            if has_test(src):
                splits.append("test")
            else:
                print(f"{src}: no test split; converting train only")
        for split in splits:
            if (out / split).exists() and not a.overwrite:
                raise DataError(f"{out / split}: exists (use --overwrite to replace it)")
        for split in splits:
            n, classes, file = convert_split(src, out, split, a.format, a.rows_per_group,
                                             not a.quiet)  # fmt: skip
            size = file.stat().st_size / 2**20
            print(f"{split}: {n} images, {len(classes)} classes -> {file} ({size:.1f} MB)")
    except (DataError, OSError) as e:
        print(f"python -m trainer.convert: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
