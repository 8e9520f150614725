"""Errors in Spark tasks: one short message with the student's file, line and source text,
the chunk and the Python error; the executor's traceback kept on the exception; failing
tasks named without re-running the job where Spark tells the partition."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException

from spark import __main__ as spark_main
from spark.classifier import DIAGNOSIS_GROUP, FULL_TRACEBACK, SparkTaskError, spark_class
from spark.errors import job_error_text, task_failure
from spark.session import SparkSetupError, with_task_attempts
from util import models

NN_FILE = models.get("nn").student_file  # "spark/nn.py"
LINEAR_FILE = models.get("linear").student_file

# a student's file: the wrong unpack of issue 17 in a backward step, a step that fails on
# one chunk only, and a chained exception
STUDENT = """\
def backward_step(record):
    scores, (c1, c2), y = record[1]
    return 0.0, len(y), {}


def failing_at(offset):
    def check(record):
        if record[0] == offset:
            raise ValueError(f"injected failure at {offset}")
        return record

    return check


def chained(record):
    try:
        return {}[record[0]]
    except KeyError as e:
        raise RuntimeError("no such chunk") from e
"""


@pytest.fixture
def student(tmp_path: Path) -> dict:
    """The functions of STUDENT, compiled from a file whose path ends in spark/nn.py (and
    spark/linear.py), so their frames are in a student file. The module name is unknown
    to the executors, so Spark ships the functions by value."""
    scopes = {}
    for rel in (NN_FILE, LINEAR_FILE):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STUDENT)
        scope = {"__name__": "sparknet_test_student"}
        exec(compile(STUDENT, str(path), "exec"), scope)
        scopes[rel] = scope
    return scopes


def line_of(text: str) -> int:
    """The line number of `text` in STUDENT."""
    return next(i for i, ln in enumerate(STUDENT.splitlines(), 1) if text in ln)


def probe_jobs(spark) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(DIAGNOSIS_GROUP))


def failed_job_text(spark, fn) -> str:
    """The text of the Spark job that maps `fn` over 4 records, which must fail."""
    try:
        spark.sparkContext.parallelize([(k, (k,)) for k in range(4)], 2).map(fn).collect()
    except (Py4JJavaError, CapturedException) as e:
        return job_error_text(e)
    raise AssertionError("the job did not fail")


# ----------------------------------------------------------------- reading a job's text


def test_task_failure_finds_the_student_frame(spark, student):
    def run(record):
        return student[NN_FILE]["backward_step"]((record[0], ([], [1, 2, 3], [0])))

    f = task_failure(failed_job_text(spark, run))
    assert f.error == "ValueError: too many values to unpack (expected 2)"
    frame = f.student_frame
    assert (frame.file, frame.line, frame.function) == (
        NN_FILE,
        line_of("(c1, c2)"),
        "backward_step",
    )
    assert frame.source == "scores, (c1, c2), y = record[1]"
    assert f.raised_at == frame
    assert f.location == f"at {NN_FILE}:{frame.line} in backward_step: {frame.source}"
    # the executor's traceback, from its pyspark frames to the error, without Java's lines
    assert f.traceback.startswith("Traceback (most recent call last):")
    assert f.traceback.endswith(f.error)
    assert "pyspark" in f.traceback and "\tat " not in f.traceback


def test_task_failure_of_chained_exceptions(spark, student):
    f = task_failure(failed_job_text(spark, student[NN_FILE]["chained"]))
    assert f.error == "RuntimeError: no such chunk"
    assert f.student_frame.line == line_of('raise RuntimeError("no such chunk")')
    assert "KeyError" in f.traceback and "direct cause" in f.traceback


def test_task_failure_outside_student_files(spark):
    from util import layer

    def run(record):
        return layer.relu_forward(np.arange(3))  # integers: util.layer refuses them

    f = task_failure(failed_job_text(spark, run))
    assert f.error.startswith("TypeError: relu_forward")
    assert f.student_frame is None
    assert f.raised_at.file == "util/layer.py" and f.raised_at.source.startswith("raise TypeError")
    assert (
        f.location.startswith("raised at util/layer.py:") and "not in a student file" in f.location
    )


def test_task_failure_without_traceback():
    f = task_failure("org.apache.spark.SparkException: Python worker exited unexpectedly (crashed)")
    assert f.error.startswith("org.apache.spark.SparkException: Python worker exited")
    assert (f.student_frame, f.raised_at, f.traceback, f.location) == (None, None, "", "")
    assert f.summary() == f.error


# ----------------------------------------------------------------- the classifier's error


def no_gradients(record):
    return 0.0, len(record[1][-1]), {}


def failing(model: str, forward_step=None, backward_step=no_gradients):
    """A Spark classifier of `model` whose forward() maps `forward_step` over the chunks and
    whose backward() maps `backward_step` and keeps one result: a job that can fail where
    the test says, without the students' code (which the starter leaves out)."""

    class Failing(spark_class(model)):
        def forward(self, data, params):
            return data.map(forward_step) if forward_step else data

        def backward(self, forwarded, params):
            return forwarded.map(backward_step).reduce(lambda a, b: a)

    return Failing


def test_error_names_student_line_and_chunk(spark, sample32, student, tmp_path):
    X, y, _, _ = sample32
    model = failing("linear", student[LINEAR_FILE]["failing_at"](120))(
        spark=spark, partitions=2, chunks=[60, 60, 80]
    )
    before = probe_jobs(spark)
    with pytest.raises(SparkTaskError) as info:
        model.train(X[:200], y[:200], 1)
    e = info.value
    line = line_of('raise ValueError(f"injected failure at {offset}")')
    assert str(e) == (
        "linear: iteration 1: a Spark task failed in the chunk at row offset 120: "
        "ValueError: injected failure at 120\n"
        f'  at {LINEAR_FILE}:{line} in check: raise ValueError(f"injected failure at {{offset}}")'
    )
    assert e.offset == 120
    assert "Traceback (most recent call last):" in e.traceback
    assert str(tmp_path / LINEAR_FILE) in e.traceback and "pyspark" in e.traceback
    # the failed partition holds the chunks 60 and 120: at most those two are re-run
    assert probe_jobs(spark) - before <= 2


def test_partition_of_one_chunk_is_named_without_rerunning(spark, sample32, student):
    X, y, _, _ = sample32
    model = failing("linear", student[LINEAR_FILE]["failing_at"](0))(
        spark=spark, partitions=2, chunks=[60, 60, 80]
    )
    before = probe_jobs(spark)
    with pytest.raises(SparkTaskError, match="in the chunk at row offset 0: ValueError") as info:
        model.train(X[:200], y[:200], 1)
    assert info.value.offset == 0
    assert probe_jobs(spark) == before


def test_wrong_unpack_in_backward(spark, sample32, student):
    def forward_step(record):  # a record as forward() makes it: three caches
        offset, (X, y) = record
        return offset, (X, ["cache 1", "cache 2", "cache 3"], y)

    WrongUnpack = failing("nn", forward_step, student[NN_FILE]["backward_step"])
    X, y, _, _ = sample32
    with pytest.raises(SparkTaskError) as info:
        WrongUnpack(spark=spark, partitions=2).train(X[:100], y[:100], 1)
    assert str(info.value) == (
        "nn: iteration 1: a Spark task failed in the chunk at row offset 0: "
        "ValueError: too many values to unpack (expected 2)\n"
        f"  at {NN_FILE}:{line_of('(c1, c2)')} in backward_step: scores, (c1, c2), y = record[1]"
    )


def test_error_in_project_code_has_no_student_frame(spark, sample32):
    from util import layer

    def forward_step(record):
        offset, (X, y) = record
        W, b = np.zeros((X[0].size, 3)), np.zeros(3)  # float64, X float32
        return offset, (layer.linear_forward(X, W, b), y)

    WrongDtype = failing("linear", forward_step)
    X, y, _, _ = sample32
    with pytest.raises(SparkTaskError) as info:
        WrongDtype(spark=spark, partitions=2).train(X[:100], y[:100], 1)
    e = info.value
    first, where = str(e).splitlines()
    assert first.startswith("linear: iteration 1: a Spark task failed in the chunk at row offset ")
    assert ": TypeError: linear_forward: all arrays must share one dtype" in first
    assert where.startswith("  raised at util/layer.py:") and "(not in a student file)" in where
    assert e.failure.student_frame is None
    assert "tests/test_task_errors.py" in e.traceback


def test_full_traceback_on_request_and_in_the_debug_log(
    spark, sample32, student, monkeypatch, caplog
):
    X, y, _, _ = sample32
    model = failing("linear", student[LINEAR_FILE]["failing_at"](0))(spark=spark, partitions=2)
    monkeypatch.setenv(FULL_TRACEBACK, "1")
    with caplog.at_level(logging.DEBUG, logger="spark.classifier"):
        with pytest.raises(SparkTaskError) as info:
            model.train(X[:100], y[:100], 1)
    text = str(info.value)
    assert text.startswith("linear: iteration 1: a Spark task failed in the chunk at row offset 0")
    assert info.value.traceback in text and "Traceback (most recent call last):" in text
    assert "injected failure at 0" in caplog.text and "Traceback" in caplog.text


# ----------------------------------------------------------------- task attempts


def test_with_task_attempts():
    assert with_task_attempts("local[2]", 1) == ("local[2,1]", {})
    assert with_task_attempts("local[2,4]", 1) == ("local[2,1]", {})
    assert with_task_attempts("local[*]", 3) == ("local[*,3]", {})
    assert with_task_attempts("local", 2) == ("local[1,2]", {})
    assert with_task_attempts("spark://127.0.0.1:7077", 1) == (
        "spark://127.0.0.1:7077",
        {"spark.task.maxFailures": "1"},
    )
    with pytest.raises(ValueError, match="task attempts must be >= 1, got 0"):
        with_task_attempts("local[2]", 0)


def test_spark_command_tries_tasks_once_unless_told(monkeypatch, run_main):
    asked = []

    def no_spark(*args, **kwargs):
        asked.append(kwargs.get("task_attempts"))
        raise SparkSetupError("no Spark in this test")

    monkeypatch.setattr(spark_main, "get_session", no_spark)
    for argv in (["linear"], ["linear", "--task-attempts", "4"]):
        ran = run_main(spark_main.main, *argv, "--iters", "1")
        assert ran.returncode == 2 and "no Spark in this test" in ran.stderr
    assert asked == [1, 4]
