"""trainer.executors: the start-up check that every executor runs the driver's versions.

A real mismatch (a packed environment with another numpy on a standalone cluster) is in
tests/test_cluster.py; here: the fingerprint is real, the comparison names what differs,
the check passes where driver and executors share one installation, and the trainer's
tasks check their executor (against a forged driver fingerprint)."""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest
from pyspark import TaskContext

from cluster.pack_env import EXECUTOR_IMPORTS
from trainer import executors
from util import _kernels
from util.models import REPO


def test_the_fingerprint_is_this_installation():
    fp = executors.fingerprint()
    kernels_source = (REPO / "util" / "_kernels.pyx").read_bytes()
    assert fp["kernels"] == hashlib.sha256(kernels_source).hexdigest()[:12] == _kernels.BUILD
    assert fp["numpy"] == np.__version__ and fp["python"] == platform.python_version()
    assert fp["project"] == "0.1.0" and len(fp["sources"]) == 12


def test_the_sources_hash_sees_an_edit(tmp_path):
    copies = []
    for pkg in executors.PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.so", "*.c"))
        copies.append(tmp_path / pkg)
    assert executors.sources_hash(copies) == executors.sources_hash()
    (tmp_path / "trainer" / "train.py").write_text("# an edit the workers never got\n")
    assert executors.sources_hash(copies) != executors.sources_hash()


def test_the_check_passes_on_one_installation(spark):
    (line,) = executors.check(spark.sparkContext)
    assert line.startswith("executors: 1 checked, all run project 0.1.0, sources ")
    assert f"numpy {np.__version__}" in line


def test_tasks_check_their_executor_once_per_worker(spark):
    """`checked` tasks run where the executor matches the driver, taking each worker's
    fingerprint once, and fail with the mismatch message where it does not (what an
    executor that joined after the start-up check meets at its first task)."""
    sc = spark.sparkContext
    driver = executors.fingerprint()

    def sums(records):
        return [(sum(records), executors.own_fingerprint.cache_info().misses)]

    for _ in range(3):  # three jobs on the same (reused) Python workers
        out = sc.parallelize(range(10), 2).mapPartitions(executors.checked(sums, driver))
        results = out.collect()
        assert [r[0] for r in results] == [10, 35]
        assert {r[1] for r in results} == {1}  # each worker hashed its sources once
    forged = {**driver, "numpy": "0.0"}
    with pytest.raises(Exception) as e:
        sc.parallelize(range(10), 2).mapPartitions(executors.checked(sums, forged)).collect()
    assert "ValueError: executors differ from the driver: executor on " in str(e.value)
    assert f"numpy {np.__version__} (driver 0.0)" in str(e.value)


def test_a_trainer_stops_at_a_task_whose_executor_differs(spark, tmp_path, train_settings):
    """Training rounds and validations are checked: a driver fingerprint the executors do
    not match stops the run at its first step with the mismatch, and a validation too."""
    from trainer.train import Trainer, TrainingFailed

    t = Trainer(train_settings(tmp_path), spark)
    try:
        t.driver_fingerprint = {**t.driver_fingerprint, "sources": "0" * 12}
        with pytest.raises(TrainingFailed, match=r"step 1: a task on partitions .*sources "):
            t.run(quiet=True)
        with pytest.raises(TrainingFailed, match=r"a validation task .* \(driver 000000000000\)"):
            t.accuracy()
    finally:
        t.close()


def test_a_difference_names_the_host_and_what_differs():
    driver = executors.fingerprint()
    worker = {**driver, "host": "worker-7", "where": "/work/app-1/0", "numpy": "1.26.4"}
    same = {**driver, "host": "worker-8", "where": "/work/app-1/1"}
    message = executors.mismatch_message(driver, [same, worker])
    assert message.startswith(
        "executors differ from the driver: executor on worker-7 (in /work/app-1/0): "
        f"numpy 1.26.4 (driver {np.__version__}). "
    )
    assert "worker-8" not in message and "python -m cluster.pack_env" in message
    assert executors.mismatch_message(driver, [same]) is None
    broken = {**driver, "kernels": "cannot import util._kernels (ImportError: ...)"}
    assert "kernels cannot import util._kernels" in executors.mismatch_message(driver, [broken])


@pytest.mark.parametrize("key", executors.COMPARED)
def test_every_compared_item_is_checked(key):
    driver = executors.fingerprint()
    assert executors.differences(driver, {**driver, key: "other"}) == [
        f"{key} other (driver {driver[key]})"
    ]


def test_executors_that_cannot_run_the_check_are_named(spark, monkeypatch):
    real = executors.fingerprint

    def broken(_=None):
        if TaskContext.get() is None:  # the driver's own fingerprint
            return real()
        raise ModuleNotFoundError("No module named 'util'")  # an executor without the project

    monkeypatch.setattr(executors, "fingerprint", broken)
    with pytest.raises(executors.ExecutorMismatch) as e:
        executors.check(spark.sparkContext)
    assert str(e.value).startswith("the executors cannot run the project's start-up check: ")
    assert "No module named 'util'" in str(e.value) and "--archives" in str(e.value)


def test_what_executors_import_needs_no_driver_only_package():
    """The packed env holds no tqdm, matplotlib or pyspark: the modules executors import
    must import without them (cluster.pack_env checks the same in the env it builds)."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("tqdm", "matplotlib", "pyspark"))
    code = f"import sys; {blocked}; import {', '.join(EXECUTOR_IMPORTS)}"
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
