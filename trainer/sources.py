"""Training data read where it lives: Parquet data sets and image folders read by Spark.

`--data` names one of three sources (`parse_data`; docs/data.md has the details):

    data/cifar10-sample          a local folder of CIFAR-10 batches or image folders: the
                                 driver loads it (util.data.load) and distributes it (default)
    parquet:URL, or hdfs://..., file://..., s3a://... (any URL with a scheme), or a local
                                 Parquet data set (a *.parquet file, a folder of them, or
                                 train/ and test/ folders of them): read by Spark
    binaryfile:URL               an image-folder tree (URL/<class>/*.jpg, or URL/train/...
                                 and URL/test/...) read with Spark's binaryFile source

For the two Spark sources the driver never holds an image: executors read and decode
their rows and shuffle each image into the partition and slot that
`distributed.blocks` gives it in the in-memory path. The driver holds metadata only:
the labels in load order (to split off validation data), the seeded permutation and,
per image, its destination code (N int64 each: 4 MB per 500,000 images).

Equal to the in-memory path, bit for bit: every row carries `index`, its position in
the order `util.data.load` reads the same images (sorted classes, sorted files); the
split (`util.data.dataset.split_indices`), the permutation and the layout are computed
from indices and labels only, exactly as `trainer.data.distribute` does, and the
normalisation statistics are integer pixel histograms added over partitions
(`Normalizer.from_counts`).

Parquet layout (what `python -m trainer.convert` writes): one row per image,

    index  int64    position in load order, 0..N-1, each once (optional: without it
                    rows are numbered in Spark's reading order)
    label  integer  0..K-1
    class  string   the label's class name (optional: else the names are "0".."K-1")
    image  binary   encoded PNG/JPEG bytes, 32x32      } exactly one of the two
    pixels binary   3072 raw bytes, R, G, B 32x32      }
           planes (or a list of 3072 integers 0..255)  }

Errors in the data (a missing column, a label out of range, an undecodable image, an
empty folder) are `DataError`s naming the file or row, raised on the driver with one
line of text, never a Spark traceback.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from trainer import distributed
from util.data import DataError, Normalizer
from util.data.dataset import split_indices
from util.data.normalize import pixel_counts

IMAGE_SHAPE = (3, 32, 32)
PIXELS = int(np.prod(IMAGE_SHAPE))  # 3072 bytes per raw image
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # as util.data.folders (which executors do not import)
SCHEMES = ("parquet", "binaryfile")

# destination codes of rows that are not in a block: not in this part of the data, or in
# the training part but left over by the layout (dropped: they still count for the
# normalisation statistics, as in the in-memory path)
NOT_HERE, DROPPED = -1, -2


@dataclass(frozen=True)
class DataSpec:
    """Where `--data` points: kind "memory" (the driver loads a local folder), "parquet" or
    "binaryfile" (Spark reads `url`)."""

    kind: str
    url: str


def parse_data(text: str) -> DataSpec:
    """The source named by a `--data` value (see the module docstring for the rules)."""
    m = re.fullmatch(r"(?i)(parquet|binaryfile):(?!//)(.*)", text)
    if m:
        if not m.group(2):
            raise DataError(f"--data {text}: no path after {m.group(1)}:")
        return DataSpec(m.group(1).lower(), m.group(2))
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", text):
        return DataSpec("parquet", text)
    if _is_local_parquet(Path(text)):
        return DataSpec("parquet", text)
    return DataSpec("memory", text)


def _is_local_parquet(p: Path) -> bool:
    if p.is_file():
        return p.suffix == ".parquet"
    return p.is_dir() and any(any(d.glob("*.parquet")) for d in (p, p / "train", p / "test"))


# ---------------------------------------------------------------------- files through Hadoop


class Files:
    """The Hadoop file system of the session (local, HDFS, S3...), for listing folders."""

    def __init__(self, sc) -> None:
        self.jvm, self.conf = sc._jvm, sc._jsc.hadoopConfiguration()

    def _path(self, url: str):
        p = self.jvm.org.apache.hadoop.fs.Path(url)
        return p, p.getFileSystem(self.conf)

    def is_dir(self, url: str) -> bool:
        p, fs = self._path(url)
        return bool(fs.exists(p) and fs.getFileStatus(p).isDirectory())

    def exists(self, url: str) -> bool:
        p, fs = self._path(url)
        return bool(fs.exists(p))

    def qualified(self, url: str) -> str:
        p, fs = self._path(url)
        return str(fs.makeQualified(p).toString())

    def entries(self, url: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of the visible entries of a folder, in name order."""
        p, fs = self._path(url)
        found = [(str(s.getPath().getName()), bool(s.isDirectory())) for s in fs.listStatus(p)]
        return sorted(e for e in found if not e[0].startswith((".", "_")))


def split_url(files: Files, url: str, split: str, what: str) -> str:
    """The folder of `split` under `url`: url/train and url/test when either exists, else
    `url` itself as the only ("train") split, as util.data.load does."""
    if not files.exists(url):
        raise DataError(f"{url}: no such file or directory")
    if files.is_dir(url) and (files.is_dir(f"{url}/train") or files.is_dir(f"{url}/test")):
        if not files.exists(f"{url}/{split}"):
            raise DataError(f"{url}: has no {split}/ folder")
        return f"{url}/{split}"
    if split == "test":
        raise DataError(
            f"{url}: a single {what} has no test split "
            "(add train/ and test/ subfolders, or use --val-split)"
        )
    return url


@contextmanager
def job_errors(what: str) -> Iterator[None]:
    """A failed Spark job as one DataError: the executor's DataError message if it raised
    one, else the job's last Python (or Java) error line, after `what`."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    from spark.errors import job_error_text, python_error

    try:
        yield
    except (Py4JJavaError, CapturedException) as e:
        text = job_error_text(e)
        mine = re.findall(r"DataError: (.*)", text)
        raise DataError(mine[-1].strip() if mine else f"{what}: {python_error(text)}") from None


# ---------------------------------------------------------------------- one split's rows


@dataclass
class Rows:
    """One split's rows on Spark, before layout.

    meta: RDD of partition summaries (index (n,) int64, label (n,) int64, {label: class}),
    read without reading any image; rows: RDD of (index, label, payload, kind, name), where
    `decode(payload, kind, name)` gives the image's 3072 pixel bytes; url: for messages.
    """

    url: str
    meta: Any
    rows: Any
    named: bool  # whether the data names its classes
    cached: tuple = ()  # RDDs to unpersist once the layout is built
    classes: list[str] | None = None  # known from the folders, else from the data
    check: Callable | None = None  # more checks of the split's Meta


def parquet_rows(spark, url: str) -> Rows:
    """The rows of one Parquet data set (a file or a folder of them)."""
    from pyspark.errors.exceptions.captured import CapturedException
    from pyspark.sql import types as T

    try:
        df = spark.read.parquet(url)
        schema = df.schema
    except CapturedException as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"{url}: not a readable Parquet data set ({first})") from None
    cols = {f.name: f.dataType for f in schema.fields}
    expected = "index, label, image (encoded bytes) or pixels (raw), [class]; see docs/data.md"
    payload = [c for c in ("image", "pixels") if c in cols]
    if "label" not in cols or len(payload) != 1:
        lack = "a label column" if "label" not in cols else "exactly one of image, pixels"
        raise DataError(f"{url}: the Parquet data set has {sorted(cols)}, lacks {lack} "
                        f"(expected {expected})")  # fmt: skip
    integral = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)
    for c in ("index", "label"):
        if c in cols and not isinstance(cols[c], integral):
            raise DataError(f"{url}: column {c!r} is {cols[c].simpleString()}, expected integers")
    kind = payload[0]
    ok = isinstance(cols[kind], T.BinaryType) or (
        kind == "pixels"
        and isinstance(cols[kind], T.ArrayType)
        and isinstance(cols[kind].elementType, integral)
    )
    if not ok:
        raise DataError(
            f"{url}: column {kind!r} is {cols[kind].simpleString()}, expected binary"
            + (" or an array of integers" if kind == "pixels" else "")
        )
    named = "class" in cols
    if named and not isinstance(cols["class"], T.StringType):
        raise DataError(f"{url}: column 'class' is {cols['class'].simpleString()}, expected string")
    file = "_metadata.file_path"
    has_index = "index" in cols
    from pyspark.sql import functions as F

    no_class = F.lit(None).cast("string").alias("class")
    index = ["index"] if has_index else []
    small = df.select(*index, "label", "class" if named else no_class).rdd  # no image read
    picked = df.select(*index, "label", kind, file).rdd
    if not has_index:  # Spark's reading order: the same files and settings give the same one
        with job_errors(url):  # (both reads split the files alike: the same numbers)
            small = small.zipWithIndex().map(lambda t: (t[1], *t[0]))
            picked = picked.zipWithIndex().map(lambda t: (t[1], *t[0]))
    meta = small.mapPartitions(_summary(named)).cache()
    rows = picked.map(lambda r: (r[0], r[1], r[2], kind, r[3]))
    return Rows(url, meta, rows, named, (meta,))


def _summary(named: bool) -> Callable:
    def run(it):
        idx, labels, names = [], [], {}
        for r in it:
            idx.append(r[0])
            labels.append(r[1])
            if named:
                names.setdefault(r[1], set()).add(r[2])
        yield np.array(idx, dtype=np.int64), np.array(labels, dtype=np.int64), names

    return run


def folder_rows(spark, files: Files, url: str, classes: list[str]) -> Rows:
    """The rows of an image-folder tree url/<class>/*.png|jpg|jpeg read by binaryFile; index
    is the order util.data.load reads them in: classes in `classes` order, files by name."""
    root = files.qualified(url).rstrip("/") + "/"
    label_of = {c: i for i, c in enumerate(classes)}
    src = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(url)

    def where(path: str) -> tuple[int, str]:
        rel = path[len(root) :] if path.startswith(root) else unquote(path)[len(unquote(root)) :]
        parts = rel.split("/")
        if len(parts) != 2 or parts[0] not in label_of:
            raise DataError(f"{path}: not in a class folder {root}<class>/ (classes {classes})")
        if not parts[1].lower().endswith(IMAGE_SUFFIXES):
            raise DataError(f"{path}: not an image file (expected {'/'.join(IMAGE_SUFFIXES)})")
        return label_of[parts[0]], parts[1]

    def keyed(it):
        for (path,) in it:
            label, name = where(path)
            yield (label, name), path

    # binaryFile makes a task per ~32 small files: fewer, larger tasks for these passes
    wide = 4 * spark.sparkContext.defaultParallelism
    with job_errors(url):
        listed = src.select("path").rdd.coalesce(wide).mapPartitions(keyed)
        if listed.isEmpty():
            raise DataError(f"{url}: no image files in the class folders")
        ordered = listed.sortByKey(numPartitions=max(1, listed.getNumPartitions()))
        indexed = ordered.zipWithIndex().map(lambda t: (t[0][1], t[1], t[0][0][0])).cache()
    meta = indexed.map(lambda t: (t[1], t[2])).mapPartitions(_summary(False))
    table = spark.createDataFrame(indexed, "path string, index long, label long")
    joined = src.select("path", "content").join(table, "path")
    rows = (
        joined.select("index", "label", "content", "path")
        .coalesce(wide)
        .rdd.map(lambda r: (r[0], r[1], r[2], "file", r[3]))
    )
    return Rows(url, meta, rows, True, (indexed,), list(classes), _nonempty(classes, url))


def decode(payload: Any, kind: str, name: str, index: int | None = None) -> bytes:
    """One row's image as 3072 pixel bytes (C, H, W order); DataError naming the row.

    kind: "image" (encoded bytes) or "pixels" (raw) from Parquet file `name`, row `index`;
    "file": the encoded bytes of the image file `name` (binaryFile)."""
    if kind != "file" and index is not None:
        name = f"{name}: row index {index}"
    if kind in ("image", "file"):
        from util.data.decode import decode_image  # Pillow only where images are encoded

        return decode_image(payload, (IMAGE_SHAPE[2], IMAGE_SHAPE[1]), name).tobytes()
    if payload is None:
        raise DataError(f"{name}: no pixels (null)")
    if isinstance(payload, (list, tuple)):
        a = np.asarray(payload)
        if len(a) != PIXELS or (a.size and (a.min() < 0 or a.max() > 255)):
            raise DataError(f"{name}: pixels must be {PIXELS} integers in 0..255")
        return a.astype(np.uint8).tobytes()
    if len(payload) != PIXELS:
        raise DataError(f"{name}: pixels hold {len(payload)} bytes, expected {PIXELS} (3x32x32)")
    return bytes(payload)


# ---------------------------------------------------------------------- metadata on the driver


@dataclass
class Meta:
    """What the driver knows of one split: labels in index order and the class names seen."""

    labels: np.ndarray  # (N,) int64
    names: dict[int, set[str]]


def read_meta(rows: Rows) -> Meta:
    """One job over the split's small columns: labels by index, checked (0..N-1 each once)."""
    with job_errors(rows.url):
        parts = rows.meta.collect()  # one (index, label, names) summary per partition
    idx = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    labels = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    named = [p[2] for p in parts]
    del parts  # (the per-partition copies)
    if not len(idx):
        raise DataError(f"{rows.url}: no images")
    order = np.argsort(idx, kind="stable")
    if not np.array_equal(idx[order], np.arange(len(idx))):
        sorted_idx = idx[order]
        bad = np.flatnonzero(sorted_idx != np.arange(len(idx)))[0]
        raise DataError(
            f"{rows.url}: column 'index' must hold 0..{len(idx) - 1} once each; "
            f"around position {bad} it has {sorted_idx[bad]}"
        )
    names: dict[int, set[str]] = {}
    meta = Meta(labels[order], names)
    if rows.check is not None:
        rows.check(meta)
    for part in named:
        for label, ns in part.items():
            names.setdefault(int(label), set()).update(ns)
    return meta


def class_names(meta: Meta, url: str, named: bool) -> list[str]:
    """Class names in label order from the training split's labels and `class` column."""
    if meta.labels.min() < 0:
        raise DataError(f"{url}: label {meta.labels.min()} is negative")
    k = int(meta.labels.max()) + 1
    if not named:
        return [str(i) for i in range(k)]
    out = []
    for label in range(k):
        ns = meta.names.get(label, set())
        if len(ns) != 1:
            raise DataError(
                f"{url}: label {label} has class names {sorted(ns)}; each label 0..{k - 1} "
                "needs exactly one"
            )
        out.append(next(iter(ns)))
    return out


def check_labels(meta: Meta, url: str, classes: list[str]) -> None:
    """DataError unless the labels are in 0..K-1 and agree with `classes`' names."""
    lo, hi = int(meta.labels.min()), int(meta.labels.max())
    if lo < 0 or hi >= len(classes):
        bad = lo if lo < 0 else hi
        raise DataError(
            f"{url}: label {bad} is out of range 0..{len(classes) - 1} "
            f"({len(classes)} classes: {classes})"
        )
    for label, ns in meta.names.items():
        if ns != {classes[label]}:
            raise DataError(
                f"{url}: label {label} is named {sorted(ns)} here but {classes[label]!r} "
                "in the training data"
            )


# ---------------------------------------------------------------------- the layout


def train_codes(n: int, train_idx: np.ndarray, layout: distributed.Layout, perm: np.ndarray):
    """Destination of every row: partition * K * chunk + k * chunk + slot for the rows of
    training position j = perm[q] at q < steps * batch (exactly `distributed.blocks`:
    chunk_rows(perm, r*K + k, p) = perm[(r*K + k)*batch + p*chunk + slot]), DROPPED for the
    other training rows, NOT_HERE for the rest. (n,) int64."""
    codes = np.full(n, NOT_HERE, dtype=np.int64)
    codes[train_idx] = DROPPED
    L = layout
    for start in range(0, L.steps * L.batch, 1 << 16):  # a slice at a time: small temporaries
        q = np.arange(start, min(start + (1 << 16), L.steps * L.batch))
        step, within = q // L.batch, q % L.batch
        worker, slot = within // L.chunk, within % L.chunk
        rnd, k = step // L.avg_every, step % L.avg_every
        partition = rnd * L.workers + worker
        codes[train_idx[perm[q]]] = (partition * L.avg_every + k) * L.chunk + slot
    return codes


def val_codes(n: int, val_idx: np.ndarray, parts: int) -> tuple[np.ndarray, int]:
    """Destination of every row in the validation chunks of `trainer.data.distribute`
    (np.array_split of the validation images into `parts`): part * stride + slot, and the
    stride."""
    codes = np.full(n, NOT_HERE, dtype=np.int64)
    pieces = np.array_split(np.arange(len(val_idx)), parts)
    stride = max(len(p) for p in pieces)
    for i, p in enumerate(pieces):
        codes[val_idx[p]] = i * stride + np.arange(len(p))
    return codes, stride


def _placed(codes_bc, stride: int) -> Callable:
    """Row -> (partition, (slot, label, payload, kind, name, index)) for the rows with a
    destination. Images travel as they are stored (encoded ones are smaller) and are
    decoded after the shuffle, by as many tasks as there are blocks."""

    def run(it):
        codes = codes_bc.value
        for index, label, payload, kind, name in it:
            c = codes[index]
            if c >= 0:
                yield int(c // stride), (int(c % stride), label, payload, kind, name, index)

    return run


def _blocks(chunk: int, k: int) -> Callable:
    """A partition's placed rows -> its record (key, [(X uint8, y int64)] * k)."""

    def run(it):
        items = sorted(it, key=lambda t: t[1][0])
        if not items:
            return
        assert len(items) == chunk * k, (len(items), chunk, k)  # the codes fill every slot
        X = np.empty((len(items), *IMAGE_SHAPE), dtype=np.uint8)
        for i, (_, (_, _, payload, kind, name, index)) in enumerate(items):
            pixels = decode(payload, kind, name, index)
            X[i] = np.frombuffer(pixels, dtype=np.uint8).reshape(IMAGE_SHAPE)
        y = np.array([t[1][1] for t in items], dtype=np.int64)
        s = slice
        yield items[0][0], [(X[s(j * chunk, (j + 1) * chunk)], y[j * chunk : (j + 1) * chunk])
                            for j in range(k)]  # fmt: skip

    return run


def _lay_out(rows: Rows, codes: np.ndarray, stride: int, parts: int, chunk_of, k: int):
    """The rows shuffled into `parts` partitions, partition index = block key (as read_export),
    each one record like `distributed.blocks` (or the validation chunks)."""
    sc = rows.rows.context
    bc = sc.broadcast(codes)
    placed = rows.rows.mapPartitions(_placed(bc, stride))
    by_part = placed.partitionBy(parts, lambda key: key)
    if chunk_of is None:  # validation: chunks of uneven sizes, one per partition

        def run(it):
            items = list(it)
            if items:
                yield from _blocks(len(items), 1)(iter(items))

        return by_part.mapPartitions(run, preservesPartitioning=True), bc
    return by_part.mapPartitions(_blocks(chunk_of, k), preservesPartitioning=True), bc


def _counts_of_blocks(it):
    total = np.zeros((IMAGE_SHAPE[0], 256), dtype=np.int64)
    for _, chunks in it:
        for X, _ in chunks:
            total += pixel_counts(X)
    yield total


def _dropped_counts(codes_bc) -> Callable:
    def run(it):
        codes = codes_bc.value
        total = np.zeros((IMAGE_SHAPE[0], 256), dtype=np.int64)
        for index, _, payload, kind, name in it:
            if codes[index] == DROPPED:
                pixels = decode(payload, kind, name, index)
                x = np.frombuffer(pixels, np.uint8).reshape(1, *IMAGE_SHAPE)
                total += pixel_counts(x)
        yield total

    return run


@dataclass
class Distributed:
    """What `load` returns to trainer.data: cached blocks, validation chunks, and the rest."""

    rdd: Any
    val_rdd: Any
    layout: distributed.Layout
    norm: Normalizer
    classes: list[str]


def load(spark, s, spec: DataSpec) -> Distributed:
    """Reads, lays out and caches the training data of `spec` (kind parquet/binaryfile) for
    the settings `s`, as trainer.data.distribute lays out the same images in memory."""
    files = Files(spark.sparkContext)
    train_rows = split_rows(spark, files, spec, "train", None)
    release = list(train_rows.cached)
    try:
        meta = read_meta(train_rows)
        classes = train_rows.classes or class_names(meta, train_rows.url, train_rows.named)
        check_labels(meta, train_rows.url, classes)
        n = len(meta.labels)
        if s.val_split:
            train_idx, val_idx = split_indices(meta.labels, len(classes), s.val_split, s.seed)
            val_rows, n_val_rows = train_rows, n
        else:
            train_idx = np.arange(n)
            val_rows = split_rows(spark, files, spec, "test", classes)
            release += val_rows.cached
            val_meta = read_meta(val_rows)
            check_labels(val_meta, val_rows.url, classes)
            n_val_rows = len(val_meta.labels)
            val_idx = np.arange(n_val_rows)
        del meta  # the labels: only the split needed them
        layout = distributed.Layout(len(train_idx), s.batch, s.partitions, s.avg_every)
        perm = np.random.default_rng(s.seed).permutation(len(train_idx))
        codes = train_codes(n, train_idx, layout, perm)
        stride = layout.avg_every * layout.chunk
        n_blocks = layout.rounds * layout.workers
        rdd, bc = _lay_out(train_rows, codes, stride, n_blocks, layout.chunk, layout.avg_every)
        rdd = rdd.cache()
        with job_errors(train_rows.url):  # materialises the cache
            # integer histograms, added on the executors (any order gives the same sums):
            # one (C, 256) array reaches the driver, not one per block
            counts = rdd.mapPartitions(_counts_of_blocks).treeReduce(np.add)
            if np.any(codes == DROPPED):  # left over by the layout, still training images
                dropped = train_rows.rows.mapPartitions(_dropped_counts(bc))
                counts = counts + dropped.treeReduce(np.add)
        bc.destroy()
        parts = min(s.partitions, len(val_idx))
        vcodes, vstride = val_codes(n_val_rows, val_idx, parts)
        val_rdd, vbc = _lay_out(val_rows, vcodes, vstride, parts, None, 1)
        val_rdd = val_rdd.cache()
        with job_errors(val_rows.url):
            val_rdd.count()
        vbc.destroy()
    finally:
        for r in release:
            r.unpersist()
    return Distributed(rdd, val_rdd, layout, Normalizer.from_counts(counts), classes)


def split_rows(spark, files: Files, spec: DataSpec, split: str, classes: list[str] | None):
    """The rows of `split` of the source; `classes`: the training split's, for a test split."""
    if spec.kind == "parquet":
        return parquet_rows(spark, split_url(files, spec.url, split, "Parquet data set"))
    url = split_url(files, spec.url, split, "image-folder tree")
    found = _folder_classes(files, url)
    if classes is not None and sorted(found) != sorted(classes):
        raise DataError(f"{url}: class folders {sorted(found)} do not match the training "
                        f"classes {classes}")  # fmt: skip
    rows = folder_rows(spark, files, url, classes or found)
    return rows


def _folder_classes(files: Files, url: str) -> list[str]:
    """The class folders of an image-folder tree, in util.data.load's label order."""
    from util.data.folders import class_order

    if not files.is_dir(url):
        raise DataError(f"{url}: no such directory (expected an image folder tree)")
    found = [name for name, is_dir in files.entries(url) if is_dir]
    if not found:
        raise DataError(f"{url}: no class folders (expected {url}/<class>/*.jpg|png)")
    return class_order(found)


def _nonempty(classes: list[str], url: str) -> Callable:
    """A check of a folder split's Meta: DataError for a class folder without images."""

    def check(meta: Meta) -> None:
        counts = np.bincount(meta.labels, minlength=len(classes))
        empty = [c for c, m in zip(classes, counts, strict=True) if m == 0]
        if empty:
            raise DataError(f"{url}/{empty[0]}: empty class folder")

    return check
