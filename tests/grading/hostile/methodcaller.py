"""Call a forbidden method by name: operator.methodcaller("loss_and_grads") in forward().

The rules refuse the file, so nothing of it runs.

target: nn
base: solution
where: forward
rules: on
score: 0
"""

import operator

operator.methodcaller("loss_and_grads")(self)  # noqa: F821 - forward()'s self
