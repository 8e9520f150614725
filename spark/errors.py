"""What a failed Spark job says, reduced to the Python error that caused it and where.

A task's exception reaches the driver as text: the executor's Python traceback inside
Java's exception. `task_failure` reads that text back into the error, the deepest
frame in a student's file (or, when there is none, where the error was raised) and
the traceback itself, for a short message with the full story kept aside.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from util import models

# a line of a Python traceback that names the exception: "ValueError: ...", "SystemExit: 3"
_PYTHON_ERROR = re.compile(r"^\s*(\w*(?:Error|Exception|Exit)\w*\b.*)$", re.M)
_HEADER = "Traceback (most recent call last):"
# Python's lines between the tracebacks of chained exceptions
_CHAINS = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>.+)$')
_CARETS = re.compile(r"^\s*[\^~]+\s*$")  # Python 3.11+'s markers under a frame's source line
# where the Python part of a job's text ends and Java's resumes
_JAVA = re.compile(r"^(\s*SQLSTATE:|\tat |Driver stacktrace:|Caused by: )")

# the files students write ("spark/linear.py", ...), from the registry
STUDENT_FILES: tuple[str, ...] = tuple(spec.student_file for spec in models.STEPS)


def job_error_text(e: Exception) -> str:
    """The text of a failed Spark job: the Java exception followed by the Python one.
    pyspark 4 converts job failures into its own exceptions and keeps the Java throwable in
    `_origin`; for an error in a task's Python code that is the executor's PythonException
    (its traceback, not which task failed: Spark's "Task N in stage S failed" text comes
    only with other failures, such as a crashed worker, and with pyspark 3.5)."""
    java = getattr(e, "java_exception", None) or getattr(e, "_origin", None)
    return "\n".join(str(x) for x in (java.toString() if java is not None else "", e) if x)


def python_error(text: str) -> str:
    """The last Python exception line in a failed job's text (a task's traceback), or the
    text's first line when there is none."""
    errors = _PYTHON_ERROR.findall(text)
    return errors[-1].strip() if errors else (text.splitlines() or [""])[0]


@dataclass(frozen=True)
class Frame:
    """One frame of a traceback; `file` as shown: a student file by its registry name
    ("spark/nn.py"), a project file relative to the repository, anything else in full."""

    file: str
    line: int
    function: str
    source: str  # the line's text, stripped; "" where the traceback shows none

    def __str__(self) -> str:
        where = f"{self.file}:{self.line} in {self.function}"
        return f"{where}: {self.source}" if self.source else where


@dataclass(frozen=True)
class TaskFailure:
    """A failed task, as its job's text tells it."""

    error: str  # the Python exception line: "ValueError: too many values to unpack ..."
    traceback: str  # the executor's Python traceback, chained ones included ("" if none)
    student_frame: Frame | None  # the deepest frame in a student file
    raised_at: Frame | None  # the deepest frame of all: where the error was raised

    @property
    def location(self) -> str:
        """ "at spark/nn.py:41 in chunk_backward: <source>", where the error was raised when
        no frame is in a student file, or "" when the text holds no traceback."""
        if self.student_frame is not None:
            return f"at {self.student_frame}"
        if self.raised_at is not None:
            return f"raised at {self.raised_at} (not in a student file)"
        return ""

    def summary(self) -> str:
        """The error, and on a second indented line its location (when known)."""
        return self.error + (f"\n  {self.location}" if self.location else "")


def _shown(path: str, student_files: Sequence[str]) -> tuple[str, bool]:
    """(the name a frame's file is shown by, whether it is a student file)."""
    posix = path.replace("\\", "/")
    for rel in student_files:
        if posix == rel or posix.endswith("/" + rel):
            return rel, True
    p = Path(path)
    if p.is_absolute() and p.is_relative_to(models.REPO):
        return p.relative_to(models.REPO).as_posix(), False
    return path, False


def task_failure(text: str, student_files: Sequence[str] = STUDENT_FILES) -> TaskFailure:
    """Reads a failed job's text (`job_error_text`): the Python error of the executor's
    traceback, that traceback (the last one in the text, with the exceptions chained to
    it) and its deepest frames, in a student file (matched by path suffix) and overall."""
    lines = text.splitlines()
    # pyspark 3.5 puts the header at the end of Java's "...: PythonException: " line
    headers = [i for i, ln in enumerate(lines) if ln.strip().endswith(_HEADER)]
    if not headers:
        return TaskFailure(python_error(text), "", None, None)
    k = len(headers) - 1
    # walk back over chained exceptions: "During handling of the above exception, ..."
    while k > 0 and any(ln.strip() in _CHAINS for ln in lines[headers[k - 1] : headers[k]][-3:]):
        k -= 1
    start, end = headers[k], len(lines)
    for i in range(headers[-1] + 1, len(lines)):
        if _JAVA.match(lines[i]):
            end = i
            break
    block = [_HEADER, *lines[start + 1 : end]]

    frames: list[tuple[Frame, bool]] = []
    for i, ln in enumerate(block):
        m = _FRAME.match(ln)
        if not m:
            continue
        nxt = block[i + 1] if i + 1 < len(block) else ""
        indented = nxt.startswith("    ") and not _FRAME.match(nxt) and not _CARETS.match(nxt)
        file, student = _shown(m["path"], student_files)
        frames.append(
            (Frame(file, int(m["line"]), m["function"], nxt.strip() if indented else ""), student)
        )
    student_frames = [f for f, student in frames if student]
    return TaskFailure(
        python_error("\n".join(block)),
        "\n".join(block).rstrip(),
        student_frames[-1] if student_frames else None,
        frames[-1][0] if frames else None,
    )
