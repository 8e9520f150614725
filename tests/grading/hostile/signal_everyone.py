"""Stop and kill the grader: SIGSTOP then SIGKILL every process of another user, open their
memory for writing, and ptrace-attach the step's parent (the grader).

The step's own processes (its JVM and workers) are spared: killing them is no attack.

target: linear
base: starter
where: import
rules: off
score: 0
"""

import ctypes
import os
import signal

from common import attempt, report

PTRACE_ATTACH = 16
others = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            others.append(int(pid))
    except OSError:
        pass
done = []
for pid in others:
    for how, fn, args in (
        ("stop", os.kill, (pid, signal.SIGSTOP)),
        ("kill", os.kill, (pid, signal.SIGKILL)),
        ("mem", os.open, (f"/proc/{pid}/mem", os.O_RDWR)),
    ):
        if attempt(fn, *args) == "ok":
            done.append(f"{how} {pid}")
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(PTRACE_ATTACH, os.getppid(), None, None) == 0:
    done.append(f"ptrace {os.getppid()}")
report("signal_everyone", others=len(others), parent=os.getppid(), done=done)
