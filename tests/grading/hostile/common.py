"""Helpers the payloads share; the test inlines this file where a payload says `from common
import ...`, so that each hostile student file stands alone.

An attacker finds the grader as any local user can: /autograder, the absolute paths in
other processes' command lines (the grader's names ROOT/submission and ROOT/results), their
working directories where readable, and the /tmp directories that hold a results/ or
source/ directory.
"""

import errno
import glob
import json
import os


def grader_roots() -> list[str]:
    """Every directory that may be the autograder's ROOT."""
    roots = {"/autograder"}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        words = []
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                words = f.read().decode(errors="replace").split("\0")
            words.append(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            pass
        for w in words:
            for part in ("/source", "/results", "/submission", "/venv/"):
                if w.startswith("/") and part in w:
                    roots.add(w.split(part)[0])
    for d in glob.glob("/tmp/*"):
        if os.path.isdir(f"{d}/results") or os.path.isdir(f"{d}/source"):
            roots.add(d)
    return sorted(r for r in roots if r not in ("", "/"))


def attempt(fn, *args) -> str:
    """'ok', or the errno name of what fn(*args) raised."""
    try:
        fn(*args)
    except OSError as e:
        return errno.errorcode.get(e.errno or 0, type(e).__name__)
    return "ok"


def write_file(path: str, text: str, mode: str = "w") -> None:
    with open(path, mode) as f:
        f.write(text)


def report(case: str, **found) -> None:
    """One line the test finds in the check's output: HOSTILE <case>: {json}."""
    print(f"HOSTILE {case}: {json.dumps(found, sort_keys=True)}", flush=True)
