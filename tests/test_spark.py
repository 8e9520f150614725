"""The Spark classifiers against the matrix versions, on the shipped sample, on local[2]."""

from __future__ import annotations

import time

import pytest

from matrix.classifier import classifier_class
from spark import session as spark_session
from spark.classifier import SparkTaskError, chunk_bounds, spark_class
from util import models

# the tester's runs (uneven chunks, one partition, mini-batches) are tests/test_steps.py


# --------------------------------------------------------------------------- behaviour


def test_one_job_per_iteration(spark, sample32):
    X, y, _, _ = sample32
    model = spark_class("nn")(spark=spark, partitions=2)
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("one-job-test", "count jobs")
    try:
        model.train(X[:200], y[:200], 4)
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    jobs = tracker.getJobIdsForGroup("one-job-test")
    assert len(jobs) == 2 + 4  # caching the data (count, layout) + one per iteration


def test_validate_matches_matrix(spark, sample32):
    X, y, Xv, yv = sample32
    sm = spark_class("nn")(spark=spark, partitions=3, seed=5)
    mm = classifier_class("nn")(seed=5)
    assert sm.validate(Xv, yv) == mm.validate(Xv, yv)
    assert sm.validate(Xv, yv, tta=True) == mm.validate(Xv, yv, tta=True)


def test_failed_task_names_classifier_iteration_and_chunk(spark, sample32):
    class Broken(spark_class("linear")):
        def forward(self, data, params):
            def check(record):
                if record[0] == 120:
                    raise ValueError("injected failure")
                return record

            return super().forward(data.map(check), params)

    X, y, _, _ = sample32
    model = Broken(spark=spark, partitions=2, chunks=[60, 60, 80])
    with pytest.raises(
        SparkTaskError,
        match=r"linear: iteration 1: .*chunk at row offset 120: ValueError: injected failure",
    ):
        model.train(X[:200], y[:200], 1)


def test_more_partitions_than_images(spark, sample32):
    X, y, _, _ = sample32
    with pytest.raises(ValueError, match="8 partitions for only 5 images"):
        spark_class("linear")(spark=spark, partitions=8).train(X[:5], y[:5], 1)


def test_chunk_bounds():
    assert chunk_bounds(10, [3, 7]) == [(0, 3), (3, 10)]
    assert chunk_bounds(5, 2) == [(0, 3), (3, 5)]
    with pytest.raises(ValueError, match="add up"):
        chunk_bounds(10, [3, 3])


def test_missing_or_old_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(spark_session.SparkSetupError, match="Java 17\\+ is required"):
        spark_session.java_version()
    fake = tmp_path / "bin" / "java"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'openjdk version \"1.8.0_392\"' >&2\n")
    fake.chmod(0o755)
    with pytest.raises(spark_session.SparkSetupError, match="is Java 8"):
        spark_session.java_version()


def test_unreachable_master_fails_fast():
    t0 = time.perf_counter()
    with pytest.raises(spark_session.SparkSetupError, match="cannot reach the Spark master"):
        spark_session.check_master_reachable("spark://127.0.0.1:9", timeout=2)
    assert time.perf_counter() - t0 < 10


@pytest.fixture
def run_spark_cli(run_module):
    """`python -m spark ARGS` in its own process: the command starts and stops its own
    SparkSession, which must not be the tests' shared one."""
    return lambda *args: run_module("spark", *args)


def test_spark_cli_trains_and_reports(run_spark_cli):
    out = run_spark_cli("linear", "--iters", "2", "--master", "local[2]")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("iter")]
    assert len(lines) == 2 and "time" in lines[0]


def test_spark_cli_bad_master(run_spark_cli):
    out = run_spark_cli("linear", "--iters", "1", "--master", "spark://127.0.0.1:9")
    assert out.returncode == 2
    assert "cannot reach the Spark master spark://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(
    not models.get("cnn").pretrained_path.is_file(), reason="no shipped pre-trained CNN"
)
def test_spark_cli_validates_the_shipped_model_like_the_matrix_version(
    run_spark_cli, run_module, accuracy_line
):
    out = run_spark_cli("cnn", "--master", "local[2]")
    assert out.returncode == 0, out.stderr[-2000:]
    ref = run_module("matrix", "cnn")
    assert accuracy_line(out.stdout) == accuracy_line(ref.stdout) >= 0.77
