"""What a failed Spark job says, reduced to the Python error that caused it."""

from __future__ import annotations

import re

# a line of a Python traceback that names the exception: "ValueError: ...", "SystemExit: 3"
_PYTHON_ERROR = re.compile(r"^\s*(\w*(?:Error|Exception|Exit)\w*\b.*)$", re.M)


def job_error_text(e: Exception) -> str:
    """The text of a failed Spark job: the Java exception (which names the failed task)
    followed by the Python one. pyspark 4 converts job failures into its own exceptions
    and keeps the Java throwable in `_origin`."""
    java = getattr(e, "java_exception", None) or getattr(e, "_origin", None)
    return "\n".join(str(x) for x in (java.toString() if java is not None else "", e) if x)


def python_error(text: str) -> str:
    """The last Python exception line in a failed job's text (a task's traceback), or the
    text's first line when there is none."""
    errors = _PYTHON_ERROR.findall(text)
    return errors[-1].strip() if errors else (text.splitlines() or [""])[0]
