"""Rewrite the grader: its code, configuration, scripts, venv and the tree's checks.

For every candidate ROOT: grading/grade.py, grading.toml, run_autograder, setup.sh, the
shipped spark/contract.py, spark/tester.py and tests/, the venv's python and a .pth file
in its site-packages (which a root Python would run); then the grading tree on PYTHONPATH
(spark/contract.py, spark/tester.py, the runner) and the system's site-packages. Each is
written, appended to, replaced from the scratch directory, unlinked and chmod-ed.

target: linear
base: starter
where: import
rules: off
score: 0
"""

import glob
import os

from common import attempt, grader_roots, report, write_file

EVIL = "raise SystemExit('HOSTILE rewrite_files')\n"
targets = []
for root in grader_roots():
    src = f"{root}/source"
    targets += [f"{src}/grading/{n}" for n in ("grade.py", "grading.toml", "judge.py")]
    targets += [f"{src}/{n}" for n in ("run_autograder", "setup.sh")]
    targets += [f"{src}/spark/contract.py", f"{src}/spark/tester.py", f"{src}/tests/conftest.py"]
    targets += [f"{root}/venv/bin/python", f"{root}/venv/pyvenv.cfg"]
    targets += [f"{p}/hostile.pth" for p in glob.glob(f"{root}/venv/lib/python3*/site-packages")]
for tree in filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)):
    targets += [f"{tree}/{n}" for n in ("spark/contract.py", "spark/tester.py", "util/layer.py")]
    targets += [f"{tree}/grading/runner.py", f"{tree}/grading/channel.py"]
    targets += [f"{tree}/sitecustomize.py", f"{os.path.dirname(tree)}/scratch-nn"]
targets += glob.glob("/usr/lib/python3*/sitecustomize.py") + [
    "/usr/lib/python3/dist-packages/x.pth"
]

done = []
own = os.path.join(os.getcwd(), "evil.py")
for path in targets:
    write_file(own, EVIL)
    for how, fn, args in (
        ("write", write_file, (path, EVIL)),
        ("append", write_file, (path, EVIL, "a")),
        ("replace", os.replace, (own, path)),
        ("chmod", os.chmod, (path, 0o777)),
        ("unlink", os.unlink, (path,)),
        ("mkdir", os.mkdir, (path + ".d",)),
    ):
        if attempt(fn, *args) == "ok":
            done.append(f"{how} {path}")
report("rewrite_files", roots=grader_roots(), tried=len(targets), done=done)
