"""Before training: every executor must run what the driver runs.

Version skew between the driver and the workers (another numpy, an old packed
environment, another Python) otherwise shows up as an unpickling error deep in
a task, or as silently different numbers. `check` runs one small job at
start-up that takes each executor's `fingerprint()` and compares it with the
driver's; any difference stops the run with one message naming the executor's
host and what differs. The trainer's tasks are also `checked`: an executor that
joins later fails its first task with the same message.

A fingerprint holds the project's version and a hash of its Python sources (an
environment packed before the last edit differs), the kernels' build (a hash of
the `.pyx` source compiled into the extension, see setup.py), numpy's version
and the Python version. This module imports only the standard library at its
top, so that an executor that lacks the project's dependencies still answers.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import platform
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

PACKAGES = ("util", "matrix", "spark", "trainer")  # what pyproject.toml installs
COMPARED = ("project", "sources", "kernels", "numpy", "python")
MAX_ROUNDS = 3  # jobs tried until every registered executor has answered


class ExecutorMismatch(ValueError):
    """An executor runs other versions than the driver (or cannot import the project)."""


def sources_hash(roots: list[Path] | None = None) -> str:
    """sha256 (first 12 hex digits) of the project's Python files, by path within the
    packages: the same for the repository and for an environment packed from it.

    roots: the package directories (default: where PACKAGES are imported from)."""
    if roots is None:
        roots = [Path(importlib.import_module(p).__file__).parent for p in PACKAGES]
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root.parent)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def _version(what: str, get) -> str:
    try:
        return str(get())
    except Exception as e:  # noqa: BLE001 - whatever fails is reported as the value
        return f"cannot import {what} ({type(e).__name__}: {e})"


def fingerprint(_: Any = None) -> dict[str, str]:
    """What this process runs; also where (host, working directory): one per executor."""

    def kernels() -> str:
        from util import _kernels

        return _kernels.BUILD

    def numpy() -> str:
        import numpy

        return numpy.__version__

    return {
        "host": socket.gethostname(),
        "where": os.getcwd(),
        "project": _version("the project", lambda: importlib.metadata.version("sparknet")),
        "sources": _version("the project", sources_hash),
        "kernels": _version("util._kernels", kernels),
        "numpy": _version("numpy", numpy),
        "python": platform.python_version(),
    }


@functools.cache
def own_fingerprint() -> dict[str, str]:
    """This process's `fingerprint()`, taken once: the driver's (for `check` and the
    trainer's tasks), or a Python worker's at its first `checked` task."""
    return fingerprint()


def checked(task: Callable, driver: dict[str, str]) -> Callable:
    """`task` (a function of a partition's records, for mapPartitions) that first compares
    the executor running it with the driver's `fingerprint()`, raising the mismatch message,
    so that an executor that joined after `check` (dynamic allocation, a restarted worker)
    fails its first task with a message naming it instead of computing with other
    versions. Each Python worker takes its own fingerprint once."""
    return functools.partial(_run_checked, task, driver)


def _run_checked(task: Callable, driver: dict[str, str], records):
    problem = mismatch_message(driver, [own_fingerprint()])
    if problem:  # a builtin type: the driver shows a task's last "...Error: message" line
        raise ValueError(problem)
    return task(records)


def differences(driver: dict[str, str], executor: dict[str, str]) -> list[str]:
    """`what executor-value (driver driver-value)` for every compared item that differs."""
    return [
        f"{k} {executor.get(k)} (driver {driver.get(k)})"
        for k in COMPARED
        if executor.get(k) != driver.get(k)
    ]


def mismatch_message(driver: dict[str, str], seen: list[dict[str, str]]) -> str | None:
    """One message naming every executor that differs from the driver, or None."""
    bad = [
        f"executor on {fp['host']} (in {fp['where']}): " + "; ".join(diff)
        for fp in seen
        if (diff := differences(driver, fp))
    ]
    if not bad:
        return None
    return (
        "executors differ from the driver: "
        + " | ".join(bad)
        + ". Give the workers the driver's environment: pack it again "
        "(python -m cluster.pack_env) and ship it with --archives (docs/cluster.md)"
    )


def registered_executors(sc) -> int:
    """Executors registered with the driver now (local mode: 1, the driver itself)."""
    block_managers = sc._jsc.sc().getExecutorMemoryStatus().size()  # includes the driver's
    return max(1, block_managers - 1)


def _fingerprints(sc, tasks: int) -> list[dict[str, str]]:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors.exceptions.captured import CapturedException

    from spark.errors import job_error_text, python_error

    try:
        return sc.parallelize(range(tasks), tasks).map(fingerprint).collect()
    except (Py4JJavaError, CapturedException) as e:
        raise ExecutorMismatch(
            "the executors cannot run the project's start-up check: "
            f"{python_error(job_error_text(e))}. Ship the driver's environment with "
            "--archives (python -m cluster.pack_env; docs/cluster.md)"
        ) from None


def check(sc) -> list[str]:
    """Takes every registered executor's fingerprint (a small job, repeated up to
    MAX_ROUNDS times until each has answered) and compares it with the driver's.

    Returns report lines; raises ExecutorMismatch naming the executor and what differs.
    Executors added later (dynamic allocation) are not seen here: the trainer's tasks are
    `checked`, so such an executor fails its first task."""
    driver = own_fingerprint()
    seen: dict[tuple[str, str], dict[str, str]] = {}
    expected = registered_executors(sc)
    tasks = max(4, 2 * sc.defaultParallelism, 2 * expected)
    for _ in range(MAX_ROUNDS):
        for fp in _fingerprints(sc, tasks):
            seen[fp["host"], fp["where"]] = fp
        if len(seen) >= expected:
            break
        tasks *= 2
    problem = mismatch_message(driver, list(seen.values()))
    if problem:
        raise ExecutorMismatch(problem)
    versions = ", ".join(f"{k} {driver[k]}" for k in COMPARED)
    lines = [f"executors: {len(seen)} checked, all run {versions}"]
    if len(seen) < expected:
        lines.append(f"executors: only {len(seen)} of {expected} registered executors answered")
    return lines
