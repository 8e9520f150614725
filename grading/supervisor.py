"""The process supervisor: runs the checks in worker processes (`python -m grading.checks`),
one Spark session each, enforces every check's time limit by killing the worker's whole
process group, and restarts a worker for the checks left after a timeout or a crash.
Returns one `Outcome` per check: what its worker reported, or the timeout or crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from grading.config import Config, TestSpec


@dataclass
class Outcome:
    passed: bool
    output: str
    seconds: float = 0.0
    status: str = "ran"  # ran | timeout | crash | not_run | grader_error


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (the JVM and Python workers are in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for _ in range(100):  # the group's other members die asynchronously
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _tail(path: Path, n: int = 2500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if " WARN " not in ln and "log4j" not in ln]
    return "\n".join(lines)[-n:]


def run_checks(
    tree: Path, tests: list[TestSpec], config: Config, log: Path, env_extra: dict[str, str]
) -> dict[str, Outcome]:
    """Runs the checks in worker processes, one Spark session per worker, with time limits."""
    outcomes: dict[str, Outcome] = {}
    remaining = [t for t in tests]
    limits = {t.id: t.time_limit for t in tests}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", **env_extra)
    workers = 0
    while remaining:
        if workers >= config.max_workers:
            for t in remaining:
                outcomes[t.id] = Outcome(
                    False,
                    "not run: too many timeouts/crashes in this "
                    "submission; the grader stopped starting workers",
                    status="not_run",
                )
            break
        workers += 1
        progress = tree / f".progress-{workers}.jsonl"
        progress.write_text("")
        with log.open("a") as logf:
            logf.write(f"\n===== worker {workers}: {' '.join(t.id for t in remaining)}\n")
            logf.flush()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "grading.checks",
                    "--progress",
                    str(progress),
                    "--master",
                    config.spark_master,
                    *(t.id for t in remaining),
                ],
                cwd=tree,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        spawned = time.monotonic()
        ready, current, started, seen = False, None, 0.0, 0
        killed_for: str | None = None
        while True:
            exited = proc.poll() is not None
            lines = progress.read_text().splitlines()
            for raw in lines[seen:]:
                if not raw.endswith("}"):
                    break  # a line still being written
                seen += 1
                try:
                    ev = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if ev.get("event") == "ready":
                    ready = True
                elif ev.get("event") == "start":
                    current, started = ev.get("id"), time.monotonic()
                elif ev.get("event") == "end" and ev.get("id") == current:
                    outcomes[current] = Outcome(
                        bool(ev.get("passed")),
                        str(ev.get("output", "")),
                        float(ev.get("seconds", 0.0)),
                    )
                    remaining = [t for t in remaining if t.id != current]
                    current = None
            if exited:
                break
            now = time.monotonic()
            if current is not None and now - started > limits[current]:
                killed_for = "timeout"
                _kill_group(proc)
                outcomes[current] = Outcome(
                    False,
                    f"TIMEOUT: did not finish within its time limit of {limits[current]:g} s "
                    "(an endless loop, or far too slow); the grader stopped it and went on",
                    round(now - started, 1),
                    status="timeout",
                )
                remaining = [t for t in remaining if t.id != current]
                current = None
                break
            if not ready and now - spawned > config.startup_time_limit:
                killed_for = "startup"
                _kill_group(proc)
                break
            time.sleep(0.1)
        if killed_for is None:
            _kill_group(proc)  # an exited worker may leave a JVM behind
        if killed_for == "timeout":
            continue
        if not ready:
            why = (
                "did not start in time"
                if killed_for == "startup"
                else f"exited with status {proc.returncode} before starting"
            )
            for t in remaining:
                outcomes[t.id] = Outcome(
                    False,
                    f"GRADER ERROR (not your fault, please tell the course staff): the "
                    f"grading worker {why}:\n{_tail(log, 1500)}",
                    status="grader_error",
                )
            break
        if current is not None:  # the worker died in the middle of a check
            outcomes[current] = Outcome(
                False,
                f"CRASH: the check ended the grading process (exit status {proc.returncode}; "
                f"e.g. os._exit, a segfault or running out of memory).\n{_tail(log, 1200)}",
                round(time.monotonic() - started, 1),
                status="crash",
            )
            remaining = [t for t in remaining if t.id != current]
        elif remaining and proc.returncode == 0:
            for t in remaining:  # should not happen: the worker skipped checks
                outcomes[t.id] = Outcome(
                    False, "GRADER ERROR: the check was skipped", status="grader_error"
                )
            break
        elif remaining:  # died between checks
            nxt = remaining[0]
            outcomes[nxt.id] = Outcome(
                False,
                f"CRASH: the grading process died (exit status {proc.returncode}).\n"
                f"{_tail(log, 1200)}",
                status="crash",
            )
            remaining = remaining[1:]
    return outcomes
