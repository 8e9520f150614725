"""Forge the step's outputs: send the grader, on its own pipe, frames holding the numbers it
expects, computed in the student's process, then exit before the runner sends its own.

The pipe is the runner's --channel=FD; the expected numbers are the assignment's reference
functions (spark/contract.py, in the tree for students' own checks) run on the checks'
images; the Spark-usage check gets job counts made up outright. The starter's forward() and
backward() are never run, so the step deserves 0. The rules refuse the file (it imports
grading and spark.contract, and os); with the rules off the frames would pass, since their
numbers are right (STAFF.md, "Limits").

target: linear
base: starter
where: import
rules: on
score: 0
"""

import os
import sys

from common import report

from grading import channel
from spark.classifier import chunk_bounds
from spark.contract import CHECKS, UNEVEN, check_images

args = dict(a[2:].split("=", 1) for a in sys.argv if a.startswith("--") and "=" in a)
fd, model, kinds = int(args["channel"]), sys.argv[-1], args["kinds"].split(",")
X, y = check_images()
for kind in kinds:
    ref = CHECKS[kind].reference(model, X, y)
    if kind == "forward":
        bounds = chunk_bounds(len(y), UNEVEN)
        meta = {"keys": [a for a, _ in bounds], "problems": []}
        arrays = {f"scores.{a}": ref.arrays[f"scores.{a}"] for a, _ in bounds}
        arrays |= {f"y.{a}": y[a:b] for a, b in bounds}
    elif kind == "spark_usage":
        meta, arrays = {"forward_jobs": 0, "iteration_jobs": 2, "errors": []}, {}
    else:
        meta, arrays = ref.meta, ref.arrays
    channel.send(fd, {"event": "check", "kind": kind, "meta": meta}, arrays)
report("forged_frames", channel=fd, kinds=kinds)
os._exit(0)
