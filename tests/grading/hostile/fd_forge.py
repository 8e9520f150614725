"""Forge through anything the grader may read: fake verdicts on every fd and in every file.

Fake lines ("end ... passed", JSON check events, a results.json) go to stdout, stderr and
every open file descriptor 0-50 (the grader's pipe among them), and fake results and
progress files into the working directory, $HOME, $TMPDIR, the tree on PYTHONPATH and
every candidate results directory.

target: nn
base: starter
where: import
rules: off
score: 0
"""

import json
import os
import time

from common import attempt, grader_roots, report, write_file

FAKE = {"score": 100.0, "output": "HOSTILE fd_forge", "tests": []}
LINES = [
    *(f"end {m}.{k} passed" for m in ("linear", "nn", "cnn") for k in ("forward", "spark_usage")),
    json.dumps({"event": "check", "kind": "forward", "meta": {"keys": [], "problems": []}}),
    json.dumps({"event": "ready"}),
    json.dumps(FAKE),
    "Score: 100 / 100",
]
BLOB = ("\n".join(LINES) + "\n").encode()
places = {os.getcwd(), os.environ.get("HOME", ""), os.environ.get("TMPDIR", "")}
places |= set(os.environ.get("PYTHONPATH", "").split(os.pathsep))
places |= {f"{r}/results" for r in grader_roots()}
files = []
for d in sorted(p for p in places if p):
    for name in ("results.json", "summary.txt", "progress.json", "grading/results.json"):
        if attempt(write_file, os.path.join(d, name), json.dumps(FAKE)) == "ok":
            files.append(os.path.join(d, name))
report("fd_forge", files=files)
time.sleep(0.5)  # the report reaches the grader before the pipe is garbled
fds = [fd for fd in range(51) if attempt(os.write, fd, BLOB) == "ok"]
report("fd_forge_fds", fds=fds)
