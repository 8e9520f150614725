"""Tests of util.data: the shipped sample, batch and image-folder loaders, split, normaliser.

Everything runs on the shipped sample (data/cifar10-sample) and on files the
tests write themselves; the one test that reads ../shared/data skips when it
is absent (and is marked slow).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from util import data
from util.data import SAMPLE, DataError
from util.data import sample as make_sample
from util.models import REPO

FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# --------------------------------------------------------------------------- helpers


def tiny(n: int = 12, k: int = 3, seed: int = 0) -> data.Dataset:
    """n random 32x32 images in k classes (labels cycle 0..k-1)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return data.Dataset(X, np.arange(n, dtype=np.int64) % k, [f"c{i}" for i in range(k)])


def write_batch(directory: Path, obj, name: str = "test_batch", classes=("a", "b", "c")) -> Path:
    """A batches.meta for `classes` plus `obj` pickled as `name`; returns the batch's path."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in classes]}, f)
    path = directory / name
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    return path


def good_batch(n: int = 4) -> dict:
    return {
        b"data": np.zeros((n, 3072), dtype=np.uint8),
        b"labels": [i % 3 for i in range(n)],
        b"batch_label": b"testing batch 1 of 1",
    }


def py2_pickle(d: dict[bytes, object]) -> bytes:
    """A protocol-2 pickle as Python 2's cPickle writes the official batches.

    Strings are py2 `str` (SHORT_BINSTRING / BINSTRING opcodes) and arrays
    refer to numpy.core.multiarray._reconstruct, which Python 3 writers never
    produce. Values: uint8 2-d arrays, ints, bytes and lists of them.
    """

    def string(b: bytes) -> bytes:
        if len(b) < 256:
            return b"U" + bytes([len(b)]) + b
        return b"T" + struct.pack("<i", len(b)) + b

    def integer(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    def value(v) -> bytes:
        if isinstance(v, bytes):
            return string(v)
        if isinstance(v, int):
            return integer(v)
        if isinstance(v, list):
            return b"](" + b"".join(value(i) for i in v) + b"e"
        assert isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 2
        dtype = (
            b"cnumpy\ndtype\n" + string(b"u1") + b"K\x00K\x01\x87R"
            b"(K\x03" + string(b"|") + b"NNN" + integer(-1) + integer(-1) + b"K\x00tb"
        )
        return (
            b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
            + string(b"b")
            + b"\x87R(K\x01"
            + integer(v.shape[0])
            + integer(v.shape[1])
            + b"\x86"
            + dtype
            + b"\x89"
            + string(v.tobytes())
            + b"tb"
        )

    body = b"".join(string(k) + value(v) for k, v in d.items())
    return b"\x80\x02}(" + body + b"u."  # EMPTY_DICT MARK ... SETITEMS STOP


# --------------------------------------------------------------------------- the package


# Python source: the heavy top-level packages the running interpreter has imported
_IMPORTED_HEAVY = "sorted({m.split('.')[0] for m in sys.modules} & {'tqdm', 'PIL', 'matplotlib'})"


def test_unpickling_a_normalizer_imports_neither_pillow_nor_tqdm():
    """Spark executors import util.data to unpickle a Normalizer: that must stay light.

    A fresh interpreter imports the package, unpickles a Normalizer and lists the heavy
    modules it holds; then it reads an image folder, which must bring Pillow in."""
    code = (
        "import pickle, sys, util.data, util.data.normalize\n"
        "norm = pickle.loads(sys.stdin.buffer.read())\n"
        f"print(type(norm).__name__, {_IMPORTED_HEAVY})\n"
        "util.data.load_image_folder\n"
        f"print({_IMPORTED_HEAVY})\n"
    )
    norm = data.Normalizer(np.full(3, 0.5), np.full(3, 0.25))
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        input=pickle.dumps(norm),
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()
    after_import, after_folders = run.stdout.decode().splitlines()
    assert after_import == "Normalizer []"
    assert "PIL" in after_folders and "tqdm" in after_folders  # the check can see them


def test_public_names_are_exported():
    for name in data.__all__:
        assert getattr(data, name) is not None, name
    assert set(data.__all__) <= set(dir(data))
    assert data.Normalizer.__module__ == "util.data.normalize"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        data.nonexistent  # noqa: B018


# --------------------------------------------------------------------------- the shipped sample


def test_shipped_sample_shapes_labels_and_counts(sample):
    train, test = sample
    for ds, n, per_class in ((train, 2000, 200), (test, 500, 50)):
        assert len(ds) == n
        assert ds.X.shape == (n, 3, 32, 32) and ds.X.dtype == np.uint8
        assert ds.y.shape == (n,) and ds.y.dtype == np.int64
        assert ds.classes == list(data.CIFAR10_CLASSES)
        assert np.array_equal(np.bincount(ds.y, minlength=10), np.full(10, per_class))
    # real images, not blanks: every channel varies
    assert train.X.std(axis=(0, 2, 3)).min() > 40


def test_image_folder_pixels_and_order_match_pillow(sample):
    train, _ = sample
    files = sorted((SAMPLE / "train" / "cat").glob("*.jpg"))
    first_cat = int(np.flatnonzero(train.y == data.CIFAR10_CLASSES.index("cat"))[0])
    with Image.open(files[0]) as img:
        expected = np.asarray(img.convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(train.X[first_cat], expected)
    # labels are grouped by class in the official order, files in name order
    assert np.all(np.diff(train.y) >= 0)


def test_shipped_sample_is_reproduced_by_make_sample(tmp_path, full_cifar):
    """Lists the 60,000 files of the full tree and copies 2,500 (about 2 s)."""
    out = tmp_path / "sample"
    assert make_sample.main(["--source", str(full_cifar), "--out", str(out)]) == 0
    shipped = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*.jpg"))
    redrawn = sorted(p.relative_to(out) for p in out.rglob("*.jpg"))
    assert shipped == redrawn and len(shipped) == 2500
    for rel in shipped:
        assert (SAMPLE / rel).read_bytes() == (full_cifar / rel).read_bytes()


def test_make_sample_draws_deterministically_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 30), ("test", 10)):
        for c in ("x", "y"):
            (src / split / c).mkdir(parents=True)
            for i in range(n):
                (src / split / c / f"{i:04d}.jpg").write_bytes(f"{split}{c}{i}".encode())
    args = ["--source", str(src), "--train-per-class", "5", "--test-per-class", "2"]
    make_sample.main([*args, "--out", str(tmp_path / "a")])
    make_sample.main([*args, "--out", str(tmp_path / "b")])
    make_sample.main([*args, "--out", str(tmp_path / "c"), "--seed", "1"])

    def listing(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))

    assert listing(tmp_path / "a") == listing(tmp_path / "b")
    assert listing(tmp_path / "a") != listing(tmp_path / "c")
    assert len(listing(tmp_path / "a")) == 2 * 5 + 2 * 2
    copied = tmp_path / "a" / "train" / "x"
    assert all(
        p.read_bytes() == (src / "train" / "x" / p.name).read_bytes() for p in copied.iterdir()
    )
    with pytest.raises(SystemExit):
        make_sample.main([*args, "--out", str(tmp_path / "a")])
    make_sample.main([*args, "--out", str(tmp_path / "a"), "--force", "--seed", "1"])
    assert listing(tmp_path / "a") == listing(tmp_path / "c")


# --------------------------------------------------------------------------- pickled batches


@pytest.fixture(scope="module")
def sample_batches(tmp_path_factory):
    """The shipped sample written as CIFAR-10 python batches."""
    train, test = data.load(SAMPLE, "train"), data.load(SAMPLE, "test")
    directory = tmp_path_factory.mktemp("batches") / data.BATCHES_DIR
    data.write_cifar_batches(directory, train, test)
    return directory, train, test


def test_batches_round_trip_bit_identical(sample_batches):
    directory, train, test = sample_batches
    assert sorted(p.name for p in directory.iterdir()) == [
        "batches.meta",
        *(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
    ]
    for split, ds in (("train", train), ("test", test)):
        loaded = data.load_cifar_batches(directory, split)
        assert loaded.X.dtype == np.uint8 and loaded.y.dtype == np.int64
        assert np.array_equal(loaded.X, ds.X) and np.array_equal(loaded.y, ds.y)
        assert loaded.classes == ds.classes
        # auto-detection: the batch folder itself, or the folder the tarball extracts into
        for path in (directory, directory.parent):
            assert np.array_equal(data.load(path, split).X, ds.X)


def test_batch_files_have_the_official_layout(sample_batches):
    directory, train, _ = sample_batches
    with open(directory / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")  # the way CIFAR-10's own page loads them
    assert d[b"data"].shape == (400, 3072) and d[b"data"].dtype == np.uint8
    assert d[b"labels"] == [int(v) for v in train.y[:400]]
    # a row is the R plane, then G, then B, each 32x32 row-major
    assert np.array_equal(d[b"data"][0, :1024].reshape(32, 32), train.X[0, 0])
    assert np.array_equal(d[b"data"][0, 2048:].reshape(32, 32), train.X[0, 2])
    with open(directory / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"label_names"][0] == b"airplane" and meta[b"num_vis"] == 3072


def test_uneven_number_of_training_batches(tmp_path):
    ds = tiny(10)
    data.write_cifar_batches(tmp_path, ds, tiny(3, seed=1), n_train_batches=3)
    assert len(list(tmp_path.glob("data_batch_*"))) == 3
    loaded = data.load_cifar_batches(tmp_path, "train")
    assert np.array_equal(loaded.X, ds.X) and np.array_equal(loaded.y, ds.y)
    with pytest.raises(ValueError, match="already holds"):
        data.write_cifar_batches(tmp_path, ds, tiny(3, seed=1), n_train_batches=2)
    data.write_cifar_batches(tmp_path, ds, tiny(3, seed=1), n_train_batches=3)  # overwrite


def test_loads_python2_style_pickles(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [2, 0, 1], b"data": X}
    (tmp_path / "test_batch").write_bytes(py2_pickle(batch))
    meta = {b"num_cases_per_batch": 3, b"label_names": [b"a", b"b", b"c"], b"num_vis": 3072}
    (tmp_path / "batches.meta").write_bytes(py2_pickle(meta))
    ds = data.load_cifar_batches(tmp_path, "test")
    assert np.array_equal(ds.X.reshape(3, -1), X)
    assert ds.y.tolist() == [2, 0, 1] and ds.classes == ["a", "b", "c"]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_and_numpy_labels_load(tmp_path, protocol):
    X = np.random.default_rng(protocol).integers(0, 256, (3, 3072), dtype=np.uint8)
    for labels in ([2, 0, 1], list(np.array([2, 0, 1])), np.array([2, 0, 1], dtype=np.int32)):
        path = write_batch(tmp_path, None)
        path.write_bytes(pickle.dumps({b"data": X, b"labels": labels}, protocol=protocol))
        ds = data.load_cifar_batches(tmp_path, "test")
        assert np.array_equal(ds.X.reshape(3, -1), X) and ds.y.tolist() == [2, 0, 1]
    fortran = np.asfortranarray(X)
    path.write_bytes(pickle.dumps({b"data": fortran, b"labels": [0, 0, 0]}, protocol=protocol))
    assert np.array_equal(data.load_cifar_batches(tmp_path, "test").X.reshape(3, -1), X)


def test_str_keys_and_missing_meta_are_accepted(tmp_path, caplog):
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 9]}
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    with caplog.at_level(logging.WARNING):
        ds = data.load_cifar_batches(tmp_path, "test")
    assert ds.classes == list(data.CIFAR10_CLASSES) and ds.y.tolist() == [0, 9]
    assert "batches.meta" in caplog.text


class _Evil:
    """Unpickling this calls os.remove(victim) - unless the unpickler refuses."""

    def __init__(self, victim: Path) -> None:
        self.victim = victim

    def __reduce__(self):
        return (os.remove, (str(self.victim),))


def test_unpickling_refuses_foreign_globals(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("still here")
    path = write_batch(tmp_path, {b"data": _Evil(victim), b"labels": []})
    with pytest.raises(DataError, match="refusing to load global") as err:
        data.load_cifar_batches(tmp_path, "test")
    assert victim.exists()
    assert str(path) in str(err.value)


def _batch_case(name: str, tmp_path: Path) -> Path:
    """Writes one broken batch setup; returns the file the error must name."""
    if name == "truncated":
        path = write_batch(tmp_path, good_batch(100))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif name == "random bytes":
        path = write_batch(tmp_path, None)
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif name == "empty file":
        path = write_batch(tmp_path, None)
        path.write_bytes(b"")
    elif name == "huge memo index":  # would make a plain unpickler allocate ~16 GB
        path = write_batch(tmp_path, None)
        path.write_bytes(b"\x80\x02Nr\xff\xff\xff\x7f.")
    elif name == "list":
        path = write_batch(tmp_path, [1, 2, 3])
    elif name == "missing labels":
        path = write_batch(tmp_path, {b"data": np.zeros((2, 3072), np.uint8)})
    elif name == "wrong data length":
        path = write_batch(tmp_path, {**good_batch(), b"data": np.zeros((4, 3071), np.uint8)})
    elif name == "float data":
        path = write_batch(tmp_path, {**good_batch(), b"data": np.zeros((4, 3072), np.float32)})
    elif name == "data not an array":
        path = write_batch(tmp_path, {**good_batch(), b"data": b"\x00" * 3072 * 4})
    elif name == "no images":
        path = write_batch(tmp_path, {b"data": np.zeros((0, 3072), np.uint8), b"labels": []})
    elif name == "label count":
        path = write_batch(tmp_path, {**good_batch(), b"labels": [0, 1, 2]})
    elif name == "label out of range":
        path = write_batch(tmp_path, {**good_batch(), b"labels": [0, 1, 3, 0]})
    elif name == "negative label":
        path = write_batch(tmp_path, {**good_batch(), b"labels": [0, -1, 2, 0]})
    elif name == "labels not ints":
        path = write_batch(tmp_path, {**good_batch(), b"labels": ["a", "b", "c", "d"]})
    elif name == "meta not a dict":
        write_batch(tmp_path, good_batch())
        path = tmp_path / "batches.meta"
        path.write_bytes(pickle.dumps([b"a"]))
    elif name == "missing test_batch":
        write_batch(tmp_path, good_batch(), name="data_batch_1")
        path = tmp_path / "test_batch"
    else:
        raise AssertionError(name)
    return path


BATCH_CASES = [
    ("truncated", "corrupt, truncated"),
    ("random bytes", "corrupt, truncated"),
    ("empty file", "empty file"),
    ("huge memo index", "memo index 2147483647 out of range"),
    ("list", "expected a pickled dict, got list"),
    ("missing labels", "lacks the key"),
    ("wrong data length", "3071 values, expected 3072"),
    ("float data", "uint8"),
    ("data not an array", "2-d uint8 array, got bytes"),
    ("no images", "no images"),
    ("label count", "4 images but 3 labels"),
    ("label out of range", "label 3 at position 2 is out of range 0..2"),
    ("negative label", "label -1"),
    ("labels not ints", "list of integers"),
    ("meta not a dict", "expected a pickled dict"),
    ("missing test_batch", "missing CIFAR-10 batch file"),
]


@pytest.mark.parametrize("case,message", BATCH_CASES, ids=[c for c, _ in BATCH_CASES])
def test_broken_batches_raise_data_error_naming_the_file(tmp_path, case, message):
    path = _batch_case(case, tmp_path)
    with pytest.raises(DataError) as err:
        data.load_cifar_batches(tmp_path, "test")
    assert str(path) in str(err.value)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_gap_in_training_batches_is_an_error(tmp_path):
    data.write_cifar_batches(tmp_path, tiny(9), tiny(3), n_train_batches=3)
    (tmp_path / "data_batch_2").unlink()
    with pytest.raises(DataError, match=r"without gaps, found numbers \[1, 3\]"):
        data.load_cifar_batches(tmp_path, "train")


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _load_or_data_error(directory: Path) -> None:
    """The only acceptable outcomes: DataError, or a consistent Dataset."""
    try:
        ds = data.load_cifar_batches(directory, "test")
    except DataError:
        return
    assert ds.X.dtype == np.uint8 and ds.X.shape[1:] == (3, 32, 32)
    assert len(ds.y) == len(ds.X) > 0 and 0 <= ds.y.min() and ds.y.max() < len(ds.classes)


PREFIXES = [b"", b"\x80\x02", b"\x80\x04\x95", b"\x80\x02}q\x00(", b"\x80\x02]q\x00(N"]


@FUZZ
@given(prefix=st.sampled_from(PREFIXES), raw=st.binary(max_size=300))
def test_fuzz_random_bytes(fuzz_dir, prefix, raw):
    write_batch(fuzz_dir, None).write_bytes(prefix + raw)
    _load_or_data_error(fuzz_dir)


leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.binary(max_size=16)
    | st.text(max_size=8)
    | hnp.arrays(
        st.sampled_from([np.uint8, np.int64, np.float32, np.bool_]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    )
    | hnp.arrays(np.uint8, st.tuples(st.integers(0, 3), st.sampled_from([3071, 3072])))
)
garbage = st.recursive(
    leaves,
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids, kids)
        | st.dictionaries(st.sampled_from([b"data", b"labels", "data", b"x", 3]), kids, max_size=3)
    ),
    max_leaves=8,
)
batches = st.fixed_dictionaries(
    {b"data": garbage, b"labels": garbage | st.lists(st.integers(-2, 4), max_size=4)}
)


@FUZZ
@given(obj=garbage | batches, protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_fuzz_garbage_pickles(fuzz_dir, obj, protocol):
    path = write_batch(fuzz_dir, None)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    _load_or_data_error(fuzz_dir)


# --------------------------------------------------------------------------- download


def _tarball(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_from_file_url_with_md5_check(tmp_path):
    batches = tmp_path / "written"
    data.write_cifar_batches(batches, tiny(6), tiny(3, seed=1), n_train_batches=2)
    members = {f"{data.BATCHES_DIR}/{p.name}": p.read_bytes() for p in batches.iterdir()}
    (tmp_path / "server").mkdir()
    src = _tarball(tmp_path / "server", members)
    dest = tmp_path / "cache"

    out = data.download_cifar10(dest, url=src.as_uri(), md5=_md5(src))
    assert out == dest / data.BATCHES_DIR
    assert np.array_equal(data.load(dest, "train").X, tiny(6).X)
    src.unlink()  # a second call finds the batches and does not fetch again
    assert data.download_cifar10(dest, url=src.as_uri(), md5="0" * 32) == out


def test_download_with_wrong_md5_deletes_the_file(tmp_path):
    (tmp_path / "server").mkdir()
    src = _tarball(tmp_path / "server", {f"{data.BATCHES_DIR}/test_batch": b"x"})
    with pytest.raises(DataError, match="does not match the expected") as err:
        data.download_cifar10(tmp_path / "cache", url=src.as_uri(), md5="0" * 32)
    assert "cifar-10-python.tar.gz" in str(err.value)
    assert not (tmp_path / "cache" / "cifar-10-python.tar.gz").exists()


def test_download_without_network_says_where_to_put_the_batches(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    with pytest.raises(DataError, match="cannot download") as err:
        data.download_cifar10(tmp_path / "cache", url=url, timeout=5)
    assert str(tmp_path / "cache" / data.BATCHES_DIR) in str(err.value)
    assert not list((tmp_path / "cache").iterdir())  # no partial file left behind


@pytest.mark.parametrize("member", ["../evil", "/tmp/evil", "elsewhere/test_batch"])
def test_download_refuses_unsafe_tar_members(tmp_path, member):
    (tmp_path / "server").mkdir()
    src = _tarball(tmp_path / "server", {member: b"x"})
    with pytest.raises(DataError, match="refusing to extract"):
        data.download_cifar10(tmp_path / "cache", url=src.as_uri(), md5=_md5(src))
    assert not (tmp_path / "evil").exists()


# --------------------------------------------------------------------------- image folders


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path)


def test_image_folder_classes_modes_and_order(tmp_path, caplog):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    _png(tmp_path / "zebra" / "b.png", rgb)
    _png(tmp_path / "zebra" / "a.png", gray)  # mode L -> RGB by replication
    _png(tmp_path / "apple" / "x.png", rgb, "RGBA")  # alpha dropped
    _png(tmp_path / "apple" / "y.png", rgb, "P")
    (tmp_path / "apple" / ".DS_Store").write_bytes(b"junk")  # hidden: skipped
    (tmp_path / "LICENSE").write_text("not a class")  # logged, not a class
    with caplog.at_level(logging.WARNING):
        ds = data.load_image_folder(tmp_path)
    assert "LICENSE" in caplog.text
    assert ds.classes == ["apple", "zebra"] and ds.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(ds.X[0], rgb.transpose(2, 0, 1))  # x.png
    assert np.array_equal(ds.X[2], np.stack([gray] * 3))  # a.png sorts before b.png
    assert np.array_equal(ds.X[3], rgb.transpose(2, 0, 1))

    flipped = data.load_image_folder(tmp_path, classes=["zebra", "apple"])
    assert flipped.y.tolist() == [0, 0, 1, 1] and np.array_equal(flipped.X[0], ds.X[2])
    with pytest.raises(DataError, match="do not match the expected classes"):
        data.load_image_folder(tmp_path, classes=["apple", "pear"])


def test_cifar_class_folders_get_the_official_order(tmp_path):
    for name in sorted(data.CIFAR10_CLASSES):
        _png(tmp_path / name / "0.png", np.zeros((32, 32, 3), np.uint8))
    ds = data.load_image_folder(tmp_path)
    assert ds.classes == list(data.CIFAR10_CLASSES) and ds.y.tolist() == list(range(10))


def test_load_detects_layouts(tmp_path, sample):
    train, test = sample
    plain = tmp_path / "plain"
    shutil.copytree(SAMPLE / "test", plain)
    ds = data.load(plain)
    assert np.array_equal(ds.X, test.X) and np.array_equal(ds.y, test.y)
    with pytest.raises(DataError, match="has no test split"):
        data.load(plain, "test")
    with pytest.raises(ValueError, match="split must be"):
        data.load(SAMPLE, "val")

    mismatch = tmp_path / "mismatch"
    shutil.copytree(SAMPLE / "test", mismatch / "test")
    shutil.copytree(SAMPLE / "test", mismatch / "train")
    shutil.rmtree(mismatch / "test" / "frog")
    assert len(data.load(mismatch, "train")) == 500
    with pytest.raises(DataError, match="do not match"):
        data.load(mismatch, "test")

    only_train = tmp_path / "only_train"
    shutil.copytree(SAMPLE / "test", only_train / "train")
    with pytest.raises(DataError, match="has no test/ folder"):
        data.load(only_train, "test")


def _image_case(name: str, root: Path) -> Path:
    """Builds a class tree under root with one defect; returns the path the error must name."""
    good = next((SAMPLE / "train" / "cat").glob("*.jpg"))
    (root / "cat").mkdir(parents=True)
    shutil.copyfile(good, root / "cat" / "0000.jpg")
    bad = root / "cat" / "0001.jpg"
    if name == "non-image file":
        bad = root / "cat" / "notes.txt"
        bad.write_text("hello")
    elif name == "garbage with .jpg name":
        bad.write_bytes(b"not a jpeg at all" * 10)
    elif name == "truncated jpeg":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif name == "31x32 image":
        _png(bad.with_suffix(".png"), np.zeros((32, 31, 3), np.uint8))
        bad = bad.with_suffix(".png")
    elif name == "16-bit image":
        bad = bad.with_suffix(".png")
        Image.fromarray(np.zeros((32, 32), np.uint16)).convert("I;16").save(bad)
    elif name == "subfolder in class":
        bad = root / "cat" / "nested"
        bad.mkdir()
    elif name == "empty class folder":
        bad = root / "dog"
        bad.mkdir()
    elif name == "no class folders":
        shutil.rmtree(root / "cat")
        bad = root
    else:
        raise AssertionError(name)
    return bad


IMAGE_CASES = [
    ("non-image file", "not an image file"),
    ("garbage with .jpg name", "unreadable or corrupt image"),
    ("truncated jpeg", "unreadable or corrupt image"),
    ("31x32 image", "image is 31x32, expected 32x32"),
    ("16-bit image", "unsupported image mode"),
    ("subfolder in class", "not an image file"),
    ("empty class folder", "empty class folder"),
    ("no class folders", "nor class folders of images"),
]


@pytest.mark.parametrize("case,message", IMAGE_CASES, ids=[c for c, _ in IMAGE_CASES])
def test_broken_image_folders_raise_data_error_naming_the_file(tmp_path, case, message):
    bad = _image_case(case, tmp_path / "root")
    with pytest.raises(DataError) as err:
        data.load(tmp_path / "root")
    assert str(bad) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("make", ["missing", "file", "empty dir", "files only"])
def test_load_of_something_else_is_a_data_error(tmp_path, make):
    path = tmp_path / "thing"
    if make == "file":
        path.write_text("x")
    elif make == "empty dir":
        path.mkdir()
    elif make == "files only":
        path.mkdir()
        (path / "README").write_text("x")
    with pytest.raises(DataError) as err:
        data.load(path)
    assert str(path) in str(err.value)
    if make != "missing":
        with pytest.raises(DataError, match="no such directory|no class folders"):
            data.load_image_folder(path)


# --------------------------------------------------------------------------- split


def test_split_is_deterministic_disjoint_and_stratified(sample):
    train, _ = sample
    # write each image's index into its first two pixels, to follow images through the split
    tagged = data.Dataset(train.X.copy(), train.y, train.classes)
    index = np.arange(len(tagged))
    tagged.X[:, 0, 0, :2] = np.stack([index // 256, index % 256], axis=1)

    def tags(ds: data.Dataset) -> np.ndarray:
        return ds.X[:, 0, 0, 0].astype(np.int64) * 256 + ds.X[:, 0, 0, 1]

    a_train, a_val = data.train_val_split(tagged, 500, seed=3)
    b_train, b_val = data.train_val_split(tagged, 500, seed=3)
    c_train, c_val = data.train_val_split(tagged, 500, seed=4)
    assert np.array_equal(tags(a_val), tags(b_val)) and np.array_equal(a_val.X, b_val.X)
    assert not np.array_equal(tags(a_val), tags(c_val))
    assert len(a_train) == 1500 and len(a_val) == 500
    assert np.array_equal(np.sort(np.concatenate([tags(a_train), tags(a_val)])), np.arange(2000))
    assert np.all(np.diff(tags(a_val)) > 0)  # original order kept
    assert np.array_equal(np.bincount(a_val.y, minlength=10), np.full(10, 50))
    assert np.array_equal(a_val.y, train.y[tags(a_val)])
    # any size stays within one image of the class's share
    _, small = data.train_val_split(tagged, 37, seed=0)
    assert np.abs(np.bincount(small.y, minlength=10) - 3.7).max() < 1


@pytest.mark.parametrize("n_val", [-1, 12, 2.5])
def test_split_rejects_bad_sizes(n_val):
    with pytest.raises((ValueError, TypeError), match="n_val"):
        data.train_val_split(tiny(12), n_val)


# --------------------------------------------------------------------------- normaliser


def test_normalizer_uses_training_statistics_only(sample):
    train_all, test = sample
    train, val = data.train_val_split(train_all, 400)
    norm = data.Normalizer.fit(train.X)
    pixels = train.X.astype(np.float64) / 255
    np.testing.assert_allclose(norm.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(norm.std, pixels.std(axis=(0, 2, 3)), rtol=1e-12)
    assert norm.mean.dtype == norm.std.dtype == np.float64 and norm.mean.shape == (3,)
    both = data.Normalizer.fit(np.concatenate([train.X, val.X, test.X]))
    assert not np.allclose(norm.mean, both.mean, rtol=0, atol=1e-6)

    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        Z = norm.apply(train.X, dtype)
        assert Z.dtype == dtype and Z.shape == train.X.shape
        np.testing.assert_allclose(Z.mean(axis=(0, 2, 3), dtype=np.float64), 0, atol=tol)
        np.testing.assert_allclose(Z.std(axis=(0, 2, 3), dtype=np.float64), 1, rtol=tol)
        expected = (pixels[:5] - norm.mean[:, None, None]) / norm.std[:, None, None]
        np.testing.assert_allclose(Z[:5], expected, rtol=tol, atol=tol)
    # validation data is transformed with the training statistics, so it is not exactly 0/1
    Zv = norm.apply(val.X, np.float64)
    assert abs(Zv.mean()) > 1e-6
    assert not np.shares_memory(Z, train.X)


def test_normalizer_metadata_round_trip_and_checks():
    X = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    X[:, 1] = 7  # constant channel: std 1 keeps the result finite
    norm = data.Normalizer.fit(X)
    assert norm.std[1] == 1.0 and np.isfinite(norm.apply(X)).all()
    back = data.Normalizer.from_meta(json.loads(json.dumps(norm.to_meta())))
    assert np.array_equal(back.mean, norm.mean) and np.array_equal(back.std, norm.std)
    assert np.array_equal(back.apply(X), norm.apply(X))
    with pytest.raises(ValueError, match="from_meta"):
        data.Normalizer.from_meta({"kind": "per-channel", "mean": [0.5]})
    with pytest.raises(ValueError, match="from_meta"):
        data.Normalizer.from_meta({"mean": [0.5], "std": [0.2]})
    with pytest.raises(TypeError, match="uint8"):
        norm.apply(X.astype(np.float32))
    with pytest.raises(TypeError, match="dtype"):
        norm.apply(X, np.int32)
    with pytest.raises(ValueError, match="channels"):
        norm.apply(X[:, :2])
    with pytest.raises(ValueError, match="std > 0"):
        data.Normalizer(np.zeros(3), np.zeros(3))


def test_dataset_checks_its_invariants():
    X = np.zeros((2, 3, 32, 32), np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        data.Dataset(X.astype(np.float32), np.zeros(2, np.int64), ["a"])
    with pytest.raises(TypeError, match="int64"):
        data.Dataset(X, np.zeros(2, np.int32), ["a"])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        data.Dataset(X, np.zeros(3, np.int64), ["a"])
    with pytest.raises(ValueError, match="labels span"):
        data.Dataset(X, np.array([0, 1]), ["a"])
    assert len(data.Dataset(X, np.array([0, 0]), ["a"])) == 2
