"""Reliability: task failures are retried with identical results, failures that persist stop
cleanly with the checkpoint intact, runs are deterministic, checkpoints survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_train import settings as train_settings
from tests.test_train import train as run
from trainer import checkpoint, distributed
from trainer.train import Settings, TrainingFailed


def settings(where: Path, **kw) -> Settings:
    """Fault runs: 2 partitions of 100 images per step, checkpoints every 2 steps, augmented."""
    base = {"batch": 200, "partitions": 2, "checkpoint_every": 2, "augment": True}
    return train_settings(where, **{**base, **kw})


def faulty_sync_task(marker: Path, fault: str, at_step: int, worker: int, always: bool = False):
    """A sync_task that fails (once, unless `always`) in one worker's chunk of one step
    (2 partitions per step: the chunk with key % 2 == worker).

    fault "raise": an exception in the task; "kill": the Python worker process dies.
    The marker file records that the fault happened, across processes and retries.
    """
    real = distributed.sync_task

    def make(recipe, params_bc, step):
        inner = real(recipe, params_bc, step)

        def run(records):
            records = list(records)
            if step == at_step and records and records[0][0] % 2 == worker:
                if always or not marker.exists():
                    marker.write_text("fault injected\n")
                    if fault == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    raise RuntimeError(f"injected fault at step {step}, chunk {records[0][0]}")
            return inner(iter(records))

        return run

    return make


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    """The parameters of a run without faults."""
    return run(spark, settings(tmp_path_factory.mktemp("ref"))).model.params


@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_task_fault_is_retried_with_identical_result(
    fault, spark, tmp_path, monkeypatch, reference
):
    marker = tmp_path / "fault"
    monkeypatch.setattr(distributed, "sync_task", faulty_sync_task(marker, fault, 3, 1))
    t = run(spark, settings(tmp_path))
    assert marker.exists(), "the fault was not injected"
    for k, v in reference.items():
        np.testing.assert_array_equal(t.model.params[k], v)


def test_persistent_fault_stops_with_checkpoint_intact(spark, tmp_path, monkeypatch):
    marker = tmp_path / "fault"
    monkeypatch.setattr(distributed, "sync_task", faulty_sync_task(marker, "raise", 4, 1, True))
    with pytest.raises(
        TrainingFailed,
        match=r"step 5: .*failed after Spark's retries: "
        r"RuntimeError: injected fault.*resume from .*checkpoint.npz",
    ):
        run(spark, settings(tmp_path))
    assert checkpoint.load(tmp_path / "run" / "checkpoint.npz").step == 4


def test_same_settings_same_parameters(spark, tmp_path, reference):
    again = run(spark, settings(tmp_path / "again")).model.params
    for k, v in reference.items():
        np.testing.assert_array_equal(again[k], v)


WRITER = """
import sys, numpy as np
from trainer import checkpoint
rng = np.random.default_rng(0)
i = 0
while True:
    i += 1
    p = {"W1": np.full((800, 1000), float(i)), "b1": np.zeros(3)}
    checkpoint.save(sys.argv[1], checkpoint.Checkpoint(p, p, i, {"seed": 0}, {}))
    print(i, flush=True)
"""


def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    """SIGKILL at random moments of a write loop: the checkpoint always loads, whole."""
    path = tmp_path / "checkpoint.npz"
    rng = np.random.default_rng(1)
    last_step = 0
    for _ in range(4):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip()  # at least one checkpoint written
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        proc.wait()
        ckpt = checkpoint.load(path)
        assert ckpt.params["W1"].shape == (800, 1000)
        assert np.all(ckpt.params["W1"] == ckpt.step)  # the arrays belong to that step
        assert ckpt.step >= 1
        last_step = ckpt.step
    assert last_step >= 1
