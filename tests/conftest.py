"""Shared fixtures: one local[2] SparkSession per test session, the shipped sample, the
full CIFAR-10 tree (skips when absent), and running the project's commands.

Test modules never import each other or this file: what they share is a fixture here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from util import data
from util.models import REPO

SAMPLE = data.SAMPLE
# the full CIFAR-10 tree for development; tests that read it skip when it is absent
SHARED = REPO.parent / "shared" / "data" / "cifar10-jpeg"


# the tests' Spark master: by default local[2] with up to 4 attempts per task, so injected
# faults can be retried; the step targets (make test-linear, ...) set local[2], one attempt,
# so that a failing task in a student's code fails at once
MASTER_VARIABLE = "SPARKNET_TEST_MASTER"


@pytest.fixture(scope="session")
def spark():
    from spark.session import get_session

    session = get_session(os.environ.get(MASTER_VARIABLE, "local[2,4]"), "sparknet-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample() -> tuple[data.Dataset, data.Dataset]:
    """The shipped sample: 2000 training and 500 test images (uint8)."""
    return data.load(SAMPLE, "train"), data.load(SAMPLE, "test")


@pytest.fixture
def full_cifar() -> Path:
    """The full CIFAR-10 image-folder tree in ../shared (the test skips when it is absent)."""
    if not SHARED.is_dir():
        pytest.skip(f"the full CIFAR-10 tree {SHARED} is not here")
    return SHARED


def preprocess(sample, dtype, n_train=None, n_val=None):
    """(X, y, X_val, y_val) of the sample, normalised with training statistics."""
    train, test = sample
    norm = data.Normalizer.fit(train.X)
    # the folders list images class by class: shuffle so that any prefix mixes the classes
    order = np.random.default_rng(0).permutation(len(train))[:n_train]
    X, y = norm.apply(train.X[order], dtype), train.y[order]
    return X, y, norm.apply(test.X[:n_val], dtype), test.y[:n_val]


@pytest.fixture(scope="session")
def sample64(sample):
    return preprocess(sample, np.float64)


@pytest.fixture(scope="session")
def sample32(sample):
    return preprocess(sample, np.float32)


@pytest.fixture(scope="session")
def train_settings() -> Callable[..., object]:
    """train_settings(out_dir, **overrides) -> trainer Settings: a short float64 run of the
    two-layer network on the sample (6 steps of 60 images over 3 partitions)."""
    from trainer.settings import Settings

    def make(where: Path, **kw) -> Settings:
        base = dict(
            model="nn",
            data=str(SAMPLE),
            dtype="float64",
            batch=60,
            partitions=3,
            epochs=1,
            lr=0.01,
            lr_schedule="cosine",
            out=str(where / "run"),
            checkpoint_every=0,
            max_steps=6,
        )
        return Settings(**{**base, **kw})

    return make


@pytest.fixture(scope="session")
def run_training(spark) -> Callable[..., object]:
    """run_training(settings) -> the Trainer after a whole run on the tests' SparkSession."""
    from trainer.train import Trainer

    def run(s) -> Trainer:
        t = Trainer(s, spark)
        try:
            t.run(quiet=True)
        finally:
            t.close()
        return t

    return run


@dataclass
class Ran:
    """What a command did: exit status and its output."""

    returncode: int
    stdout: str
    stderr: str


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(name="run_module")
def run_module_fixture() -> Callable[..., subprocess.CompletedProcess]:
    """Runs `python -m module args...` in its own process: for commands that start their
    own SparkSession (which must not be the tests' shared one)."""
    return run_module


@pytest.fixture
def run_main(capsys) -> Callable[..., Ran]:
    """Runs a command's `main(argv)` in this process: run_main(main, "arg", ...) -> Ran.
    argparse errors (SystemExit) become their exit status, as from a shell."""

    def run(main: Callable[[list[str]], int], *args: str) -> Ran:
        capsys.readouterr()  # drop what came before
        try:
            code = main(list(args))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        out = capsys.readouterr()
        return Ran(code or 0, out.out, out.err)

    return run


def accuracy_line(stdout: str) -> float:
    """The accuracy in `python -m matrix|spark`'s "validation accuracy X% on N images" line."""
    m = re.search(r"validation accuracy (\d+\.\d+)% on (\d+) images", stdout)
    assert m, stdout
    return float(m.group(1)) / 100


@pytest.fixture(name="accuracy_line")
def accuracy_line_fixture() -> Callable[[str], float]:
    """Parses the "validation accuracy X% on N images" line of a classifier command."""
    return accuracy_line
