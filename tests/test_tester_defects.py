"""The tester can fail: deliberately broken Spark classifiers, each caught (staff-only).

Each defect class below is a near-solution of a student's `backward()` (the
two-layer or linear network's, or the solution's own with one gradient
changed) with exactly one defect. Shipped to students, they would be the
answer to steps 1 and 2 with a bug to remove, so this module is in
grading/starter.py's STAFF_ONLY and never reaches the starter. The students'
starter keeps the tester's own tests (the Spark version must agree with the
matrix version); this module proves that the tester rejects what is wrong.
"""

from __future__ import annotations

import numpy as np
import pytest

from matrix.classifier import classifier_class
from spark.classifier import add_results, spark_class
from spark.tester import MismatchError, run_tester
from util import layer


class NotReduced(spark_class("nn")):
    """Defect: the gradients of only one chunk reach the driver."""

    def backward(self, forwarded, params):
        loss, n, _ = super().backward(forwarded, params)
        _, _, grads = super().backward(forwarded.filter(lambda r: r[0] == 0), params)
        return loss, n, grads


class WrongCache(spark_class("nn")):
    """Defect: the ReLU backward uses the first layer's output instead of its own."""

    def backward(self, forwarded, params):
        def chunk_backward(record):
            scores, (c1, c2, c3), y = record[1]
            loss, d = layer.softmax_loss(scores, y, reduction="sum")
            d, dW3, db3 = layer.linear_backward(d, c3)
            d = layer.relu_backward(d, np.roll(c2, 1, axis=0))  # another image's mask
            _, dW1, db1 = layer.linear_backward(d, c1)
            return loss, len(y), {"W1": dW1, "b1": db1, "W3": dW3, "b3": db3}

        return forwarded.map(chunk_backward).treeReduce(add_results)


class MeanPerChunk(spark_class("linear")):
    """Defect: each chunk averages its loss, so chunks of different sizes weigh alike."""

    def backward(self, forwarded, params):
        def chunk_backward(record):
            scores, caches, y = record[1]
            loss, d = layer.softmax_loss(scores, y, reduction="mean")
            _, dW, db = layer.linear_backward(d * len(y) / 500, caches[0])
            return loss * len(y) / 500, len(y), {"W1": dW, "b1": db}

        return forwarded.map(chunk_backward).treeReduce(add_results)


class DroppedBias(spark_class("cnn")):
    """Defect: a bias gradient is dropped (b7 stays zero)."""

    def backward(self, forwarded, params):
        loss, n, grads = super().backward(forwarded, params)
        return loss, n, {**grads, "b7": np.zeros_like(grads["b7"])}


@pytest.mark.parametrize(
    "defect,name,expect",
    [
        (NotReduced, "nn", "W1"),
        (WrongCache, "nn", "W1"),
        (MeanPerChunk, "linear", "loss"),
        (DroppedBias, "cnn", "b7"),
    ],
)
def test_tester_catches_defects(defect, name, expect, spark, sample64):
    X, y, _, _ = sample64
    with pytest.raises(MismatchError, match=f"iteration 1: .*{expect}"):
        run_tester(
            classifier_class(name), defect, spark, X[:500], y[:500], iters=3, chunks=[100, 250, 150]
        )


class SwappedGradients(spark_class("nn")):
    """Defect: backward() returns the last layer's weight and bias gradients swapped."""

    def backward(self, forwarded, params):
        loss, n, grads = super().backward(forwarded, params)
        return loss, n, {**grads, "W3": grads["b3"], "b3": grads["W3"]}


def test_gradients_that_do_not_fit_the_parameters_are_named(spark, sample64):
    X, y, _, _ = sample64
    model = SwappedGradients(spark=spark, partitions=2, dtype=np.float64)
    with pytest.raises(ValueError, match=r"nn: iteration 1: backward\(\) returned gradients") as e:
        model.train(X[:40], y[:40], 1)
    assert "W3 has shape (10,), expected (100, 10); b3 has shape (100, 10), expected (10,)" in str(
        e.value
    )
