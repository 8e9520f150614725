"""Reliability: task failures are retried with identical results, failures that persist stop
cleanly with the checkpoint intact, runs are deterministic, checkpoints survive a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer import checkpoint, distributed
from trainer.train import TrainingFailed
from util.models import REPO


@pytest.fixture(scope="session")
def settings(train_settings):
    """Fault runs: 2 partitions of 100 images per step, checkpoints every 2 steps, augmented."""
    base = {"batch": 200, "partitions": 2, "checkpoint_every": 2, "augment": True}
    return lambda where, **kw: train_settings(where, **{**base, **kw})


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
def reference(tmp_path_factory, settings, run_training):
    """The parameters of a run without faults."""
    return run_training(settings(tmp_path_factory.mktemp("ref"))).model.params


@pytest.mark.parametrize("fault", ["raise", "kill"])
def test_task_fault_is_retried_with_identical_result(
    fault, spark, tmp_path, monkeypatch, reference, settings, run_training
):
    marker = tmp_path / "fault"
    monkeypatch.setattr(distributed, "sync_task", faulty_sync_task(marker, fault, 3, 1))
    t = run_training(settings(tmp_path))
    assert marker.exists(), "the fault was not injected"
    for k, v in reference.items():
        np.testing.assert_array_equal(t.model.params[k], v)


def test_persistent_fault_stops_with_checkpoint_intact(
    spark, tmp_path, monkeypatch, settings, run_training
):
    marker = tmp_path / "fault"
    monkeypatch.setattr(distributed, "sync_task", faulty_sync_task(marker, "raise", 4, 1, True))
    with pytest.raises(
        TrainingFailed,
        match=r"step 5: .*failed after Spark's retries: "
        r"RuntimeError: injected fault.*resume from .*checkpoint.npz",
    ):
        run_training(settings(tmp_path))
    assert checkpoint.load(tmp_path / "run" / "checkpoint.npz").step == 4


def test_same_settings_same_parameters(spark, tmp_path, reference, settings, run_training):
    again = run_training(settings(tmp_path / "again")).model.params
    for k, v in reference.items():
        np.testing.assert_array_equal(again[k], v)


WRITER = """
import os, sys, time
import numpy as np
from numpy.lib import format as npy_format
from trainer import checkpoint

path, first, point = sys.argv[1], int(sys.argv[2]), sys.argv[3]
real_write_array = npy_format.write_array


def pause(*_):
    print("paused", flush=True)
    time.sleep(600)  # until the test kills this process


class StopsHalfway:
    # the zip entry of one .npy, whose bytes stop `left` bytes in
    def __init__(self, fp, left):
        self.fp, self.left = fp, left

    def write(self, b):
        b = memoryview(b).cast("B")
        if len(b) >= self.left:
            self.fp.write(b[: self.left])
            pause()
        self.left -= len(b)
        return self.fp.write(b)


def stop_in_the_data(fp, array, *args, **kw):
    if array.size > 1000:  # W1: stop halfway into its bytes
        fp = StopsHalfway(fp, array.nbytes // 2)
    return real_write_array(fp, array, *args, **kw)


for i in (first, first + 1):
    if i == first + 1:  # the second write stops inside, at `point`, for the test to kill it
        if point == "data":
            npy_format.write_array = stop_in_the_data
        else:  # "rename": the new file is written whole but not yet in the checkpoint's place
            os.replace = pause
    p = {"W1": np.full((800, 1000), float(i)), "b1": np.zeros(3)}
    checkpoint.save(sys.argv[1], checkpoint.Checkpoint(p, p, i, {"seed": 0}, {}))
    print(i, flush=True)
"""


@pytest.mark.parametrize("point", ["data", "rename"])
def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, point):
    """SIGKILL while a checkpoint is being written (the writer is stopped halfway into an
    array's bytes, or before the rename that puts the new file in place): the previous
    checkpoint always loads, whole, and the next write after the kill works."""
    path = tmp_path / "checkpoint.npz"
    partial = path.with_name(f".{path.name}.tmp")  # checkpoint.save's temporary file
    last_step = 0
    for first in (1, 3, 5, 7):  # each process writes step `first`, then is killed in the next
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(first), point],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout.readline().strip() == str(first)  # one checkpoint written
            assert proc.stdout.readline().strip() == "paused"  # stopped inside the next one
            if point == "data":  # the temporary file holds part of it
                assert 0 < partial.stat().st_size < path.stat().st_size
                with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
                    checkpoint.load(partial)
            else:  # written whole, not yet renamed
                assert checkpoint.load(partial).step == first + 1
        finally:
            proc.kill()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        ckpt = checkpoint.load(path)
        assert ckpt.params["W1"].shape == (800, 1000)
        assert np.all(ckpt.params["W1"] == ckpt.step)  # the arrays belong to that step
        assert ckpt.step >= 1
        assert ckpt.step == first  # the killed write left it as it was
        last_step = ckpt.step
    assert last_step >= 1
