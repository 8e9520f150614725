"""Crash the grader's reader: a well-formed frame whose JSON meta is nested 100000 deep
(json.loads raises RecursionError, not a decoding error).

A frame the grader cannot read ends the step like a crash (grading/channel.py); the other
steps are still graded.

target: cnn
base: solution
where: import
rules: off
score: 0
"""

import io
import os
import sys

import numpy as np

from grading import channel

fd = int(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--channel=")))
buf = io.BytesIO()
np.savez(buf, __meta__=np.array("[" * 100_000 + "]" * 100_000))
os.write(fd, channel.HEADER.pack(len(buf.getvalue())) + buf.getvalue())
