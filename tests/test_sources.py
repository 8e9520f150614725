"""Data read where it lives (trainer.sources, trainer.convert): the same images give the same
blocks, statistics and parameters whether the driver loads them, Spark reads them from
Parquet, or Spark's binaryFile source reads the image folders; bad data gives one clear
error. Real local Spark, the shipped sample."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer import convert, distributed, sources
from trainer.settings import Settings
from util import data
from util.data import DataError
from util.data.dataset import split_indices
from util.data.normalize import pixel_counts

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SAMPLE = data.SAMPLE


@pytest.fixture(scope="module")
def sample_parquet(tmp_path_factory) -> Path:
    """The shipped sample converted by trainer.convert (JPEG bytes as they are)."""
    out = tmp_path_factory.mktemp("parquet") / "sample.parquet"
    for split in ("train", "test"):
        convert.convert_split(SAMPLE, out, split, progress=False)
    return out


def settings(where: Path, data_arg: str, **kw) -> Settings:
    """A short float64 run of the two-layer network (4 steps of 200 images, 2 partitions: few
    blocks, so that laying them out takes few tasks)."""
    base = dict(model="nn", data=data_arg, dtype="float64", batch=200, partitions=2, epochs=1,
                lr=0.01, out=str(where / "run"), checkpoint_every=0, max_steps=4)  # fmt: skip
    return Settings(**{**base, **kw})


def train(spark, s: Settings):
    """(params, velocity, validation accuracy, normalizer, classes) after the run."""
    from trainer.train import Trainer

    t = Trainer(s, spark)
    try:
        t.run(quiet=True)
        acc = t.accuracy()
    finally:
        t.close()
    return t.model.params, t.model.velocity, acc, t.norm, t.classes


def equal(a, b) -> bool:
    """Bit-for-bit equality of two runs' parameters, velocities, accuracy and statistics."""
    return (
        a[0].keys() == b[0].keys()
        and all(np.array_equal(a[0][k], b[0][k]) for k in a[0])
        and all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
        and a[2] == b[2]
        and np.array_equal(a[3].mean, b[3].mean)
        and np.array_equal(a[3].std, b[3].std)
        and a[4] == b[4]
    )


# ---------------------------------------------------------------------- without Spark


def test_parse_data_picks_the_source(sample_parquet):
    assert sources.parse_data(str(SAMPLE)) == sources.DataSpec("memory", str(SAMPLE))
    assert sources.parse_data(str(sample_parquet)).kind == "parquet"  # local Parquet: detected
    assert sources.parse_data("hdfs://nn:8020/cifar").kind == "parquet"
    assert sources.parse_data("file:///data/cifar.parquet").kind == "parquet"
    assert sources.parse_data("parquet:/x") == sources.DataSpec("parquet", "/x")
    assert sources.parse_data("binaryFile:hdfs://nn/x") == sources.DataSpec(
        "binaryfile", "hdfs://nn/x"
    )
    with pytest.raises(DataError, match="no path after binaryfile"):
        sources.parse_data("binaryfile:")


def test_layout_codes_place_every_image_where_blocks_does(sample):
    """train_codes/val_codes (what executors use) against distributed.blocks and the
    in-memory validation chunks (what trainer.data.distribute makes), for uneven sizes."""
    train = sample[0]
    n = len(train)
    tr_idx, va_idx = split_indices(train.y, 10, 333, seed=3)
    layout = distributed.Layout(len(tr_idx), 60, 3, 4)
    perm = np.random.default_rng(3).permutation(len(tr_idx))
    codes = sources.train_codes(n, tr_idx, layout, perm)
    sub = train.subset(tr_idx)
    stride = layout.avg_every * layout.chunk
    for key, chunks in distributed.blocks(sub.X, sub.y, layout, perm):
        for k, (X, y) in enumerate(chunks):
            for slot in range(layout.chunk):
                (i,) = np.flatnonzero(codes == key * stride + k * layout.chunk + slot)
                assert np.array_equal(train.X[i], X[slot]) and train.y[i] == y[slot]
    assert (codes == sources.DROPPED).sum() == layout.dropped
    assert set(np.flatnonzero(codes == sources.NOT_HERE)) == set(va_idx)
    vcodes, vstride = sources.val_codes(n, va_idx, 3)
    for part, rows in enumerate(np.array_split(np.arange(len(va_idx)), 3)):
        assert list(vcodes[va_idx[rows]]) == [part * vstride + j for j in range(len(rows))]


def test_statistics_and_split_from_parts_equal_the_whole(sample):
    train = sample[0]
    whole = data.Normalizer.fit(train.X)
    parts = sum(pixel_counts(train.X[i : i + 317]) for i in range(0, len(train), 317))
    again = data.Normalizer.from_counts(parts)
    assert np.array_equal(whole.mean, again.mean) and np.array_equal(whole.std, again.std)
    a_tr, a_va = data.train_val_split(train, 250, seed=5)
    tr, va = split_indices(train.y, len(train.classes), 250, seed=5)
    assert np.array_equal(a_tr.y, train.y[tr]) and np.array_equal(a_va.X, train.X[va])
    assert not np.array_equal(split_indices(train.y, 10, 250, seed=6)[1], va)


def test_conversion_round_trip(sample, sample_parquet, tmp_path, run_main):
    """Rows in load order with their labels and class names; the image bytes decode to the
    loader's pixels; --format raw stores exactly those pixels."""
    for split, ds in zip(("train", "test"), sample, strict=True):
        t = pq.read_table(sample_parquet / split).to_pydict()
        assert t["index"] == list(range(len(ds)))
        assert t["label"] == ds.y.tolist()
        assert t["class"] == [ds.classes[i] for i in ds.y]
        got = np.stack(
            [np.frombuffer(sources.decode(b, "image", "x"), np.uint8) for b in t["image"]]
        )
        assert np.array_equal(got.reshape(ds.X.shape), ds.X)
    r = run_main(convert.main, str(SAMPLE), str(tmp_path / "raw"), "--format", "raw", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "train: 2000 images, 10 classes" in r.stdout and "test: 500 images" in r.stdout
    raw = pq.read_table(tmp_path / "raw" / "train").to_pydict()
    pixels = np.frombuffer(b"".join(raw["pixels"]), np.uint8).reshape(sample[0].X.shape)
    assert np.array_equal(pixels, sample[0].X)
    again = run_main(convert.main, str(SAMPLE), str(tmp_path / "raw"), "--quiet")
    assert again.returncode == 2 and "exists (use --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_conversion_errors_name_the_file(tmp_path, run_main):
    (tmp_path / "src" / "cat").mkdir(parents=True)
    bad = tmp_path / "src" / "cat" / "0001.jpg"
    bad.write_bytes(b"not a jpeg")
    r = run_main(convert.main, str(tmp_path / "src"), str(tmp_path / "out"), "--quiet")
    assert r.returncode == 2 and f"{bad}: unreadable or corrupt image" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "out" / "train").exists()
    r = run_main(convert.main, str(tmp_path / "nope"), str(tmp_path / "out"))
    assert r.returncode == 2 and "nope: no such file or directory" in r.stderr
    r = run_main(convert.main, str(SAMPLE), str(tmp_path / "o"), "--rows-per-group", "0")
    assert r.returncode == 2 and "--rows-per-group must be >= 1" in r.stderr


# ---------------------------------------------------------------------- the same results


@pytest.mark.parametrize(
    "kw", [dict(), dict(mode="avg", avg_every=2, val_split=500)], ids=["sync", "avg-K2-val"]
)
def test_parquet_equals_in_memory(spark, sample_parquet, tmp_path, kw):
    """Parameters, velocities, validation accuracy and statistics equal bit for bit."""
    memory = train(spark, settings(tmp_path, str(SAMPLE), **kw))
    parquet = train(spark, settings(tmp_path, str(sample_parquet), **kw))
    assert equal(memory, parquet)
    if not kw:  # the same trainer with another permutation: the comparison can fail
        other = train(spark, settings(tmp_path, str(sample_parquet), seed=1))
        assert not equal(memory, other)
    # executors did not need pyarrow (not in cluster/pack_env.py's EXECUTOR_REQUIREMENTS)
    used = spark.sparkContext.parallelize(range(2), 2).map(lambda _: "pyarrow" in sys.modules)
    assert not any(used.collect())


@pytest.mark.slow  # binaryFile opens every file, in many small tasks: a minute or two
@pytest.mark.parametrize("kw", [dict(), dict(mode="avg", avg_every=2, val_split=500)],
                         ids=["sync", "avg-K2-val"])  # fmt: skip
def test_binaryfile_equals_in_memory(spark, tmp_path, kw):
    memory = train(spark, settings(tmp_path, str(SAMPLE), **kw))
    folders = train(spark, settings(tmp_path, f"binaryfile:{SAMPLE}", **kw))
    assert equal(memory, folders)


def test_parquet_without_index_or_classes_trains(spark, sample, sample_parquet, tmp_path):
    """Only label and pixels: rows numbered in reading order, classes named "0".."9"."""
    t = pq.read_table(sample_parquet / "train").drop(["index", "class"])
    (tmp_path / "bare").mkdir()
    pq.write_table(t, tmp_path / "bare" / "x.parquet")
    s = settings(tmp_path, f"parquet:{tmp_path / 'bare'}", val_split=200)
    d = sources.load(spark, s, sources.parse_data(s.data))
    try:
        assert d.classes == [str(i) for i in range(10)]
        assert d.layout.n_images == 1800 and d.rdd.getNumPartitions() == 18
        whole = data.Normalizer.fit(sample[0].X[split_indices(sample[0].y, 10, 200)[0]])
        assert np.array_equal(d.norm.mean, whole.mean)  # row order is the file's here
    finally:
        d.rdd.unpersist()
        d.val_rdd.unpersist()


# ---------------------------------------------------------------------- bad input


def write(path: Path, **columns) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path / "part-0.parquet")
    return path


def load_error(spark, tmp_path, data_arg: str, **kw) -> str:
    s = settings(tmp_path, data_arg, **kw)
    with pytest.raises(DataError) as e:
        d = sources.load(spark, s, sources.parse_data(s.data))
        d.rdd.unpersist()
        d.val_rdd.unpersist()
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_missing_columns(spark, tmp_path):
    url = write(tmp_path / "d", foo=[1, 2], label=[0, 1])
    msg = load_error(spark, tmp_path, f"parquet:{url}", val_split=1)
    assert f"{url}: the Parquet data set has ['foo', 'label'], lacks exactly one of" in msg
    url = write(tmp_path / "e", image=[b"x"], labels=[0])
    assert "lacks a label column" in load_error(spark, tmp_path, f"parquet:{url}")
    url = write(tmp_path / "f", image=[b"x"], label=["cat"])
    assert "column 'label' is string, expected integers" in load_error(
        spark, tmp_path, f"parquet:{url}"
    )


def test_not_parquet_and_missing(spark, tmp_path):
    assert "not a readable Parquet data set" in load_error(spark, tmp_path, f"parquet:{SAMPLE}")
    assert "no such file or directory" in load_error(spark, tmp_path, f"parquet:{tmp_path}/x")
    msg = load_error(spark, tmp_path, f"parquet:{write(tmp_path / 'g', image=[b'x'], label=[0])}")
    assert "has no test split" in msg


def test_labels_out_of_range(spark, sample_parquet, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(sample_parquet, root)
    t = pq.read_table(root / "test" / "part-00000.parquet")
    labels = t.column("label").to_numpy().copy()
    labels[7] = 10
    i = t.schema.get_field_index("label")
    pq.write_table(t.set_column(i, "label", [labels]), root / "test" / "part-00000.parquet")
    msg = load_error(spark, tmp_path, str(root))
    assert msg.startswith(f"{root}/test: label 10 is out of range 0..9 (10 classes:")


def test_undecodable_image_names_file_and_row(spark, sample_parquet, tmp_path):
    root = tmp_path / "corrupt"
    shutil.copytree(sample_parquet / "train", root / "train")
    t = pq.read_table(root / "train" / "part-00000.parquet")
    images = t.column("image").to_pylist()
    images[5] = b"\xff\xd8 not really a jpeg"
    i = t.schema.get_field_index("image")
    pq.write_table(t.set_column(i, "image", [images]), root / "train" / "part-00000.parquet")
    msg = load_error(spark, tmp_path, str(root), val_split=100)
    assert f"{root}/train/part-00000.parquet: row index 5: unreadable or corrupt image" in msg


def test_duplicate_index(spark, tmp_path):
    px = bytes(3072)
    url = write(tmp_path / "dup", index=[0, 1, 1], label=[0, 1, 0], pixels=[px, px, px])
    msg = load_error(spark, tmp_path, f"parquet:{url}", val_split=1, batch=3, partitions=1)
    assert "column 'index' must hold 0..2 once each; around position 2 it has 1" in msg


def test_empty_folders(spark, tmp_path):
    (tmp_path / "none").mkdir()
    assert "no class folders" in load_error(spark, tmp_path, f"binaryfile:{tmp_path / 'none'}")
    tree = tmp_path / "tree"
    for c in ("cat", "dog"):
        (tree / c).mkdir(parents=True)
    shutil.copy(next((SAMPLE / "train" / "cat").iterdir()), tree / "cat" / "a.jpg")
    msg = load_error(spark, tmp_path, f"binaryfile:{tree}", val_split=1, batch=1, partitions=1)
    assert msg == f"{tree}/dog: empty class folder"
    (tree / "dog" / "notes.txt").write_text("hello")
    msg = load_error(spark, tmp_path, f"binaryfile:{tree}", val_split=1, batch=1, partitions=1)
    assert "notes.txt: not an image file" in msg


@pytest.mark.slow
def test_the_command_line_reports_bad_data_in_one_line(run_module, tmp_path):
    url = write(tmp_path / "d", foo=[1, 2], label=[0, 1])
    r = run_module("trainer", "nn", "--data", f"parquet:{url}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"python -m trainer: error: {url}: the Parquet data set has ['foo', 'label']")
    )
    assert "Traceback" not in r.stderr
