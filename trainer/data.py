"""The training data on Spark: laid out in batches (`distributed.Layout`), cached, exported.

`load_training_data` reads the data named by the settings (`--data`, or a
`--from-export` written earlier); `distribute` lays out data sets the caller
loaded itself (the benchmarks share one layout between runs).

`--data` is one of three sources (`trainer.sources.parse_data`, docs/data.md): a local
folder that the driver loads and distributes (`distribute`: the default, for small
data), or a Parquet data set or an image-folder tree (`binaryfile:URL`) that Spark's
executors read, decode and lay out themselves (`trainer.sources.load`), so the driver
never holds the images. All three give the same blocks for the same images and seed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from trainer import distributed, sources
from trainer.evaluate import load_model
from trainer.settings import Settings
from util import network
from util.data import Dataset, Normalizer, load, train_val_split


@dataclass
class TrainingData:
    """The cached training blocks, laid out for one (batch, partitions, K), and validation data.

    rdd: one partition per block of `layout` (uint8 images); val_rdd: a few
    partitions of [(X uint8, y)] chunks. Several runs with the same layout can
    share one (the benchmark and the mode comparison do); `release()` unpersists.
    """

    rdd: Any
    val_rdd: Any
    layout: distributed.Layout
    norm: Normalizer
    classes: list[str]

    def release(self) -> None:
        self.rdd.unpersist()
        self.val_rdd.unpersist()


def check_layout(layout: distributed.Layout, s: Settings, what: str) -> None:
    """ValueError unless `layout` is the one the settings ask for; `what` begins the message."""
    if (s.batch, s.partitions, s.avg_every) != (layout.batch, layout.workers, layout.avg_every):
        raise ValueError(
            f"{what} for batch {layout.batch}, {layout.workers} partitions, avg-every "
            f"{layout.avg_every}; the run asks for {s.batch}, {s.partitions}, {s.avg_every}"
        )


def distribute(
    sc, s: Settings, train: Dataset, val: Dataset, targets: np.ndarray | None = None
) -> TrainingData:
    """Lays out `train` for s.batch/s.partitions/s.avg_every and caches it (and `val`) on Spark;
    targets: (N, K) soft targets to train on instead of the labels (`soft_targets`)."""
    layout = distributed.Layout(len(train), s.batch, s.partitions, s.avg_every)
    perm = np.random.default_rng(s.seed).permutation(len(train))
    y = train.y if targets is None else targets
    records = list(distributed.blocks(train.X, y, layout, perm))
    rdd = sc.parallelize(records, len(records)).cache()
    n = min(s.partitions, len(val))
    parts = np.array_split(np.arange(len(val)), n)
    val_records = [(i, [(val.X[p], val.y[p])]) for i, p in enumerate(parts)]
    val_rdd = sc.parallelize(val_records, n).cache()
    return TrainingData(rdd, val_rdd, layout, Normalizer.fit(train.X), train.classes)


def check_targets_source(s: Settings) -> None:
    """ValueError if --teacher or --label-smoothing come with data they cannot use (their
    targets are made on the driver, from images it holds)."""
    if not (s.teacher or s.label_smoothing):
        return
    if s.from_export or s.export or sources.parse_data(s.data).kind != "memory":
        other = "--from-export" if s.from_export else "--export" if s.export else s.data
        raise ValueError(
            f"--teacher and --label-smoothing need --data in memory (a local folder), not {other}"
        )


def soft_targets(s: Settings, train: Dataset) -> np.ndarray | None:
    """The (N, K) float32 targets of --teacher and --label-smoothing (None: the labels):
    (1 - w) * one-hot label + w * the teachers' mean test-time-augmented probabilities,
    then (1 - eps) * that + eps / K."""
    if not (s.teacher or s.label_smoothing):
        return None
    K = len(train.classes)
    q = np.eye(K)[train.y]
    if s.teachers:
        probs = np.mean([teacher_probabilities(path, train) for path in s.teachers], axis=0)
        q = (1 - s.teacher_weight) * q + s.teacher_weight * probs
    return ((1 - s.label_smoothing) * q + s.label_smoothing / K).astype(np.float32)


def teacher_probabilities(path: str, train: Dataset) -> np.ndarray:
    """(N, K) test-time-augmented probabilities of the model at `path` (any of the networks:
    a wider one distils into this) for the training images, normalised its own way."""
    teacher = load_model(path)
    if teacher.metadata.get("classes", train.classes) != train.classes:
        raise ValueError(f"{path}: the teacher was trained on other classes")
    norm = Normalizer.from_meta(teacher.metadata["normalizer"])
    probs = np.zeros((len(train), len(train.classes)))
    step = 1000
    for i in tqdm(range(0, len(train), step), desc=f"teacher {path}", unit="kimg"):
        X = norm.apply(train.X[i : i + step], teacher.dtype)
        probs[i : i + step] = network.probabilities(teacher.layers, teacher.params, X, True)
    return probs


def load_training_data(sc, s: Settings) -> TrainingData:
    """The training data named by the settings: --from-export, or --data (+ --export);
    --data in memory (a local folder) or read by Spark (see `trainer.sources`)."""
    check_targets_source(s)
    spec = sources.parse_data(s.data)
    if s.from_export:
        return read_export(sc, s.from_export, s)
    if spec.kind == "memory":
        train = load(s.data, "train")
        if s.val_split:
            train, val = train_val_split(train, s.val_split, seed=s.seed)
        else:
            val = load(s.data, "test")
        td = distribute(sc, s, train, val, soft_targets(s, train))
        td.rdd.count()
    else:  # (laid out and cached by the time it returns)
        from pyspark.sql import SparkSession

        spark = SparkSession.builder.getOrCreate()  # the session of `sc`
        d = sources.load(spark, s, spec)
        td = TrainingData(d.rdd, d.val_rdd, d.layout, d.norm, d.classes)
    if s.export:
        write_export(sc, td, s.export, s)
    return td


def write_export(sc, td: TrainingData, path: str, s: Settings) -> None:
    """Saves the batched partitions and what is needed to read them back."""
    td.rdd.saveAsPickleFile(f"{path}/train")
    td.val_rdd.saveAsPickleFile(f"{path}/val")
    info = {
        "layout": asdict(td.layout),
        "normalizer": td.norm.to_meta(),
        "classes": td.classes,
        "settings": {
            k: v
            for k, v in s.trajectory().items()
            if k in ("data", "val_split", "seed", "batch", "partitions", "avg_every")
        },
    }
    sc.parallelize([json.dumps(info)], 1).saveAsTextFile(f"{path}/info")


def read_export(sc, path: str, s: Settings) -> TrainingData:
    """The batched partitions written by `write_export`, checked against the run's layout."""
    try:
        info = json.loads(sc.textFile(f"{path}/info").collect()[0])
    except Exception as e:  # noqa: BLE001 - any Hadoop read failure means the same thing
        raise ValueError(f"{path}: not a training export written by --export ({e})") from e
    layout = distributed.Layout(**info["layout"])
    check_layout(layout, s, f"{path}: exported")
    n = layout.rounds * layout.workers
    # one block per partition, partition index = block key, as the layout requires
    rdd = sc.pickleFile(f"{path}/train").partitionBy(n, lambda k: k).cache()
    val_rdd = sc.pickleFile(f"{path}/val").cache()
    rdd.count()
    norm = Normalizer.from_meta(info["normalizer"])
    return TrainingData(rdd, val_rdd, layout, norm, info["classes"])
