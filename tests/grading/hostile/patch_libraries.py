"""Patch util.layer and numpy in the student's processes, hoping the references follow.

At import: layer.linear_forward returns zero scores, layer.softmax_loss a zero loss and
gradient, np.dot/np.matmul/np.sum return zeros; util.layer is registered with Spark's
cloudpickle to travel by value, so the executors run the patched layer functions too.
Where the references ran next to the student's code this made a wrong submission agree
with them; the grader's own references are untouched, so the numbers the step sends are
the patch's: forward() and the testers fail, the Spark-usage check (job counts) passes.

target: linear
base: solution
where: import
rules: off
score: 2
"""

import numpy as np
from pyspark import cloudpickle

from util import layer

real_linear_forward = layer.linear_forward


def zero_scores(X, W, b):
    scores, cache = real_linear_forward(X, W, b)
    return np.zeros_like(scores), cache


def zero_loss(scores, y, reduction="mean"):
    return 0.0, np.zeros_like(scores)


def zeros(*args, **kwargs):
    return np.zeros(1)


layer.linear_forward, layer.softmax_loss = zero_scores, zero_loss
np.dot = np.matmul = np.sum = zeros
cloudpickle.register_pickle_by_value(layer)
