"""Crash the grader's reader: a small, well-formed frame whose array header claims a shape
of 2**45 float64 (256 TiB), which numpy allocates before it reads a byte (MemoryError).

A frame the grader cannot read ends the step like a crash (grading/channel.py); the other
steps are still graded.

target: cnn
base: solution
where: import
rules: off
score: 0
"""

import io
import json
import os
import sys
import zipfile

import numpy as np

from grading import channel

fd = int(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--channel=")))
meta, header = io.BytesIO(), io.BytesIO()
np.save(meta, np.array(json.dumps({"event": "check", "kind": "forward", "meta": {}})))
np.lib.format.write_array_header_1_0(
    header, {"descr": "<f8", "fortran_order": False, "shape": (2**45,)}
)
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    z.writestr("__meta__.npy", meta.getvalue())
    z.writestr("scores.0.npy", header.getvalue() + b"\0" * 64)
os.write(fd, channel.HEADER.pack(len(buf.getvalue())) + buf.getvalue())
