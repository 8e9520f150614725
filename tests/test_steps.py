"""The checks of each assignment step, selected by marker: `make test-linear` runs
`pytest -m step1 tests/test_steps.py`, `make test-nn` step2, `make test-cnn` step3.

Per step these are the grader's checks on the student's file, through the same functions
(spark/contract.py, spark/rules.py) with the same data (64 images of the shipped sample,
float64) and parameters: the submission rules, forward()'s record contract and scores, the
matrix-vs-Spark tester (uneven chunks over 3 partitions, one partition, mini-batches), a
lazy forward(), one Spark job per iteration and nothing collected to the driver. Passing
them here means passing them in the grade.

The last section (no step marker) shows that each check can fail.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from matrix.classifier import classifier_class
from spark import contract, rules
from spark.classifier import spark_class
from spark.tester import run_tester
from util import models

STEPS = [
    pytest.param(spec.name, marks=getattr(pytest.mark, f"step{spec.step}"), id=spec.name)
    for spec in models.STEPS
]


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """The grader's images: X (64, 3, 32, 32) float64, y (64,) int."""
    return contract.check_images()


@pytest.fixture(scope="module")
def usage(spark, images):
    """usage(model) -> (classifier, cached data RDD) of the Spark-usage checks, made once per
    step for this module."""
    made = {}

    def get(model: str):
        if model not in made:
            made[model] = contract.usage_model(spark_class(model), spark, *images)
        return made[model]

    yield get
    for m, data in made.values():
        m.release(data)


# --------------------------------------------------------------------------- the steps


@pytest.mark.parametrize("model", STEPS)
def test_rules(model):
    rel = models.get(model).student_file
    problems = rules.check_rules(model, (models.REPO / rel).read_text(encoding="utf-8"))
    assert not problems, (
        f"{rel} breaks the submission rules (the grader gives 0 for the step):\n"
        + "\n".join(problems)
    )


@pytest.mark.parametrize("model", STEPS)
def test_forward_record_contract_and_scores(model, spark, images):
    assert "match the matrix version" in contract.check(
        "forward", spark_class(model), spark, *images
    )


@pytest.mark.parametrize("model", STEPS)
def test_tester_uneven_chunks_three_partitions(model, spark, images):
    """3 iterations, 5 chunks of very different sizes (one of 1 image) over 3 partitions."""
    assert contract.check("tester_uneven_chunks", spark_class(model), spark, *images)


@pytest.mark.parametrize("model", STEPS)
def test_tester_one_partition(model, spark, images):
    assert contract.check("tester_one_partition", spark_class(model), spark, *images)


@pytest.mark.parametrize("model", STEPS)
def test_tester_mini_batches(model, spark, images):
    """Mini-batch iterations pick the same rows in both versions."""
    assert contract.check("tester_mini_batches", spark_class(model), spark, *images)


@pytest.mark.parametrize("model", STEPS)
def test_lazy_forward(model, usage):
    contract.check_lazy_forward(contract.forward_jobs(*usage(model)))


@pytest.mark.parametrize("model", STEPS)
def test_one_job_per_iteration(model, usage):
    jobs, errors = contract.iteration_jobs(*usage(model))
    assert not errors
    contract.check_one_job_per_iteration(jobs)


@pytest.mark.parametrize("model", STEPS)
def test_nothing_collected_to_the_driver(model):
    contract.check_nothing_collected(*contract.student_source(spark_class(model)))


# --------------------------------------------------------------------------- the checks can fail


def _record(n_layers: int = 1, **change):
    """A record of forward()'s RDD for a chunk of 2 images at row 4 (K = 3), with `change`
    applied: key=..., caches=..., or layout="no key"."""
    scores, y = np.zeros((2, 3)), np.array([1, 2])
    caches = change.get("caches", [()] * n_layers)
    if change.get("layout") == "no key":
        return (scores, caches, y)
    return (change.get("key", 4), (scores, caches, y))


@pytest.mark.parametrize(
    "record,message",
    [
        (_record(layout="no key"), "forward() returned records without the offset key: "),
        (_record(key=np.zeros(2)), "records keyed by an array of shape (2,)"),
        (_record(caches=((), (), ())), "one cache per layer (1 layer), got a tuple of 3"),
        (_record(caches=[(), ()]), "one cache per layer (1 layer), got a list of 2"),
        ((4, (np.zeros((2, 3)), [()])), "value must be (scores, caches, y), got a tuple of 2"),
        ((4, ([[0.0]], [()], np.array([1]))), "scores must be a numpy array, got a list of 1"),
        ("not a record", "must return records (offset, (scores, caches, y)), got a str"),
    ],
)
def test_record_problems_are_named(record, message):
    problem = contract.record_problem(record, 1)
    assert problem is not None and message in problem, problem
    assert contract.record_problem(_record(), 1) is None
    assert contract.record_problem(_record(3), 3) is None


class FakeScores(spark_class("linear")):
    """forward() makes zero scores with one empty cache (or `caches`); no backward()."""

    caches: object = [()]

    def forward(self, data, params):
        caches, k = self.caches, self.num_classes  # the closure must not capture self
        return data.mapValues(lambda v: (np.zeros((len(v[1]), k)), caches, v[1]))


class CachesTuple(FakeScores):
    caches = ((),)


class NoKey(FakeScores):
    def forward(self, data, params):
        return super().forward(data, params).values()


class ActionInForward(FakeScores):
    def forward(self, data, params):
        data.count()
        return super().forward(data, params)


class TwoJobsPerIteration(FakeScores):
    def backward(self, forwarded, params):
        forwarded.count()
        return forwarded.count()  # not a result: the job count is what is checked


@pytest.mark.parametrize(
    "defect,message",
    [
        (NoKey, "forward() returned records without the offset key: expected (offset, ("),
        (CachesTuple, "the caches must be a list with one cache per layer (1 layer), got a tuple"),
    ],
)
def test_tester_names_a_wrong_record_layout(defect, message, spark, images):
    X, y = images
    with pytest.raises(contract.ContractError, match=re.escape(message)):
        run_tester(classifier_class("linear"), defect, spark, X, y, iters=1, chunks=[30, 34])


def test_forward_check_names_wrong_keys_and_scores(spark, images):
    with pytest.raises(contract.ContractError, match=r"without the offset key"):
        contract.check("forward", NoKey, spark, *images)
    with pytest.raises(contract.ContractError, match=r"scores differ from the matrix forward"):
        contract.check("forward", FakeScores, spark, *images)


def test_spark_usage_checks_fail(spark, images):
    m, data = contract.usage_model(ActionInForward, spark, *images)
    try:
        with pytest.raises(contract.ContractError, match=r"forward\(\) started 1 Spark job"):
            contract.check_lazy_forward(contract.forward_jobs(m, data))
    finally:
        m.release(data)
    m, data = contract.usage_model(TwoJobsPerIteration, spark, *images)
    try:
        with pytest.raises(contract.ContractError, match="2 training iterations ran 4 Spark jobs"):
            contract.check_one_job_per_iteration(contract.iteration_jobs(m, data)[0])
    finally:
        m.release(data)
    source = "def backward(self, rdd):\n    return rdd.map(f).collect()\n"
    with pytest.raises(contract.ContractError, match=r"at spark/nn.py:2: \.collect\(\)"):
        contract.check_nothing_collected(source, "spark/nn.py")


def test_step_targets_and_markers_follow_the_registry():
    """Each step of util/models.py has its marker in pyproject.toml and its target in the
    Makefile (make test-<model> runs pytest -m step<N>)."""
    pyproject = (models.REPO / "pyproject.toml").read_text()
    makefile = (models.REPO / "Makefile").read_text()
    for spec in models.STEPS:
        assert f'"step{spec.step}: ' in pyproject, spec.name
        assert re.search(rf"^STEP\.{spec.name}\s*:?=\s*{spec.step}$", makefile, re.M), spec.name


def test_check_submission_prints_a_line_per_check(run_module, run_main):
    """make check-submission (python -m spark.contract, its own SparkSession: a process of its
    own) on the solution's step 1: the rules and the five checks pass, exit status 0."""
    out = run_module("spark.contract", "linear")
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("✓", "✗"))]
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert [ln.split(":")[0] for ln in lines] == [
        f"✓ step 1 linear {kind}" for kind in ("rules", *contract.CHECKS)
    ]
    assert out.stdout.splitlines()[-1] == "6 of 6 checks passed"
    bad = run_main(contract.main, "nosuch")
    assert bad.returncode == 2 and "unknown step 'nosuch'" in bad.stderr
