"""Shared fixtures: one local[2] SparkSession per test session, the shipped sample."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from util import data

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "cifar10-sample"
# the full CIFAR-10 tree for development; tests that read it skip when it is absent
SHARED = REPO.parent / "shared" / "data" / "cifar10-jpeg"


@pytest.fixture(scope="session")
def spark():
    from spark.session import get_session

    # local[2] with up to 4 attempts per task, so injected faults can be retried
    session = get_session("local[2,4]", "sparknet-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample() -> tuple[data.Dataset, data.Dataset]:
    """The shipped sample: 2000 training and 500 test images (uint8)."""
    return data.load(SAMPLE, "train"), data.load(SAMPLE, "test")


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


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root, output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def accuracy_line(stdout: str) -> float:
    """The accuracy in `python -m matrix|spark`'s "validation accuracy X% on N images" line."""
    m = re.search(r"validation accuracy (\d+\.\d+)% on (\d+) images", stdout)
    assert m, stdout
    return float(m.group(1)) / 100
