"""Runs one step in a fresh sandboxed process and reports what arrived for each check.

The step's process (`python -m grading.runner MODEL`, in the grading tree, through
grading/sandbox.py) gets its own Spark session and JVM, so whatever one step's file does
at import cannot touch another step. The supervisor reads its frames (grading/channel.py)
and its output from pipes it owns, and enforces, on its own clock:

  - start-up: Spark up within `startup_limit` s;
  - each check within its time limit, counted from the previous frame's arrival; on expiry
    the step stops: that check is "timeout", the rest "not run";
  - the memory of all the step's processes together (Sandbox.resident), checked 4 times a
    second: above the limit every process is killed and the check is "memory";
  - the grading budget's deadline, whatever the limits say.

A frame out of order, unreadable or too big ends the step like a crash. When the step ends
for any reason every process of the sandbox is killed, and the supervisor waits until none
is left before it returns.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from grading.channel import ChannelError, Reader
from grading.leaderboard import BENCH_ITERS
from grading.sandbox import Sandbox
from spark.contract import Observed

OUTPUT_TAIL = 4000  # characters of the step's output kept per check
NOISE = (
    " WARN ",
    "log4j",
    "Setting default log level",
    "To adjust logging level",
    "NativeCodeLoader",
)


@dataclass
class Report:
    """What one check of a step produced: the raw outputs, or why there are none."""

    kind: str
    observed: Observed | None = None
    status: str = "ran"  # ran | timeout | crash | memory | not_run | grader_error
    text: str = ""  # why nothing was observed (the student sees it)
    seconds: float = 0.0
    printed: str = ""  # the step process's output during the check, without Spark's noise


@dataclass
class Bench:
    """The leaderboard benchmark's frames: their arrival times (the grader's clock), losses."""

    seed: int
    arrivals: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)


@dataclass
class StepEnd:
    """How a step ended: the benchmark's frames (if it ran), the step's peak memory (bytes,
    processes and their files in shared memory)."""

    bench: Bench | None
    peak_memory: int
    survivors: list[int]  # processes still alive after the kill (none, unless the kernel balks)


@dataclass
class StepRun:
    """One step to run: its model, its number, the check kinds and their time limits."""

    model: str
    step: int
    kinds: list[str]
    limits: dict[str, float]
    startup_limit: float
    deadline: float  # time.monotonic() by which everything must be over
    bench_seed: Callable[[], int | None] | None = None  # asked once the checks are in


def _clean(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    lines = [ln for ln in text.splitlines() if not any(n in ln for n in NOISE)]
    return "\n".join(lines)[-OUTPUT_TAIL:]


def run_step(
    run: StepRun,
    sandbox: Sandbox,
    tree: Path,
    scratch: Path,
    env: dict[str, str],
    master: str,
    on_report: Callable[[Report], None],
) -> StepEnd:
    """Runs the step; calls on_report once per kind of run.kinds, in order, as each is known."""
    sandbox.prepare_dir(scratch)
    chan_r, chan_w = os.pipe()
    out_r, out_w = os.pipe()
    in_r, in_w = os.pipe()
    argv = [sys.executable, "-m", "grading.runner", f"--channel={chan_w}", f"--master={master}"]
    argv += [f"--kinds={','.join(run.kinds)}", *(["--bench"] if run.bench_seed else [])]
    proc = subprocess.Popen(
        sandbox.command([*argv, run.model], scratch),
        cwd=scratch,
        env={**env, "HOME": str(scratch), "TMPDIR": str(scratch)},
        stdin=in_r,
        stdout=out_w,
        stderr=subprocess.STDOUT,
        pass_fds=(chan_w,),
        start_new_session=True,
    )
    for fd in (chan_w, out_w, in_r):
        os.close(fd)
    sel = selectors.DefaultSelector()
    sel.register(chan_r, selectors.EVENT_READ, "chan")
    sel.register(out_r, selectors.EVENT_READ, "out")
    reader = Reader()
    output = bytearray()
    pending = list(run.kinds)
    bench: Bench | None = None
    phase = "startup"  # startup | checks | bench-wait | bench | done
    since = time.monotonic()  # the current phase's clock
    next_memory_check, peak = 0.0, 0
    ended: tuple[str, str] | None = None  # (status, text) when the step stopped early

    def limit() -> float:
        if phase == "startup":
            return run.startup_limit
        if phase == "checks":
            return run.limits[pending[0]]
        return run.startup_limit  # the benchmark: a few iterations

    def report(kind: str, **kw) -> None:
        on_report(Report(kind, printed=_clean(bytes(output)), **kw))
        output.clear()

    try:
        while phase != "done":
            now = time.monotonic()
            if now - since > limit() or now > run.deadline:
                budget = now > run.deadline
                ended = ("timeout", "the grading time budget" if budget else f"{limit():g} s")
                break
            if now >= next_memory_check:
                next_memory_check = now + 0.25
                used = sandbox.resident(proc.pid)
                peak = max(peak, used)
                if used > sandbox.memory_limit:
                    ended = ("memory", f"{sandbox.memory_limit / 2**30:.1f} GB")
                    break
            for key, _ in sel.select(timeout=0.1):
                data = os.read(key.fd, 1 << 20)
                if key.data == "out":
                    output.extend(data)
                    del output[: -16 * OUTPUT_TAIL]
                    if not data:
                        sel.unregister(out_r)
                    continue
                if not data:
                    sel.unregister(chan_r)
                    if phase != "done":
                        ended = ("crash", "")
                    break
                bad = None  # why the step ends after the good frames of this read
                try:
                    frames = reader.feed(data)
                except ChannelError as e:
                    frames, bad = e.frames, ("crash", f"it sent the grader {e}")
                except Exception as e:  # noqa: BLE001 - never the grader's end
                    frames = []
                    bad = ("crash", f"it sent the grader an unreadable frame ({type(e).__name__})")
                for meta, arrays in frames:
                    event = meta.get("event")
                    arrived = time.monotonic()
                    if phase == "startup" and event == "ready":
                        phase, since = "checks", arrived
                        output.clear()
                    elif phase == "checks" and event == "check" and meta.get("kind") == pending[0]:
                        obs_meta = meta.get("meta")
                        if not isinstance(obs_meta, dict):
                            ended = ("crash", "it sent the grader a check without its results")
                            break
                        report(
                            pending.pop(0),
                            observed=Observed(obs_meta, arrays),
                            seconds=round(arrived - since, 2),
                        )
                        since = arrived
                        if not pending:
                            phase = "bench-wait" if run.bench_seed else "done"
                    elif phase == "bench-wait" and event == "bench-ready":
                        seed = run.bench_seed() if run.bench_seed else None
                        if seed is None:
                            phase = "done"
                        else:
                            bench, phase, since = Bench(seed), "bench", arrived
                            try:
                                os.write(in_w, f"{seed}\n".encode())
                            except OSError:  # the process closed its input: no benchmark
                                phase = "done"
                    elif phase == "bench" and event == "bench" and bench is not None:
                        loss = meta.get("loss")
                        if not isinstance(loss, (int, float)):
                            ended = (
                                "crash",
                                "it sent the grader a benchmark loss that is no number",
                            )
                            break
                        bench.arrivals.append(arrived)
                        bench.losses.append(float(loss))
                        since = arrived
                        if len(bench.losses) >= 1 + BENCH_ITERS:
                            phase = "done"
                    else:
                        ended = ("crash", f"it sent the grader an unexpected frame ({event!r})")
                        break
                ended = ended or bad
                if ended:
                    break
            if ended:
                break
            if proc.poll() is not None and chan_r not in sel.get_map():
                break
    finally:
        survivors = sandbox.kill_all(proc.pid)
        sandbox.remove_files()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (chan_r, out_r, in_w):
            try:
                os.close(fd)
            except OSError:
                pass
        sel.close()
    if phase not in ("bench", "bench-wait"):  # else: the checks are all in
        _end_step(run, pending, phase, ended, proc.returncode, report, time.monotonic() - since)
    return StepEnd(bench, peak, survivors)


def _end_step(run, pending, phase, ended, returncode, report, seconds) -> None:
    """Reports the checks the step did not deliver: the current one with the reason, the
    others as not run."""
    if not pending:
        return
    status, detail = ended or ("crash", "")
    current = pending[0]
    step = f"step {run.step} ({run.model})"
    if phase == "startup" and status != "memory":
        if status == "timeout":
            text = f"GRADER ERROR: Spark did not start within {detail} (please tell the staff)"
        else:
            text = (
                f"GRADER ERROR: the step's process ended (status {returncode}) before Spark was up"
            )
        for kind in pending:
            report(kind, status="grader_error", text=text)
        return
    if status == "timeout":
        text = (
            f"TIMEOUT: did not finish within {detail} (an endless loop, or far too slow); "
            f"the grader stopped {step} here"
        )
    elif status == "memory":
        text = (
            f"MEMORY: your code used more than {detail} of memory (all its processes together); "
            f"the grader stopped {step} here"
        )
    else:
        why = detail or f"exit status {returncode}: e.g. os._exit, a segfault or a kill"
        text = f"CRASH: the step's process ended in this check ({why})"
    report(current, status=status, text=text, seconds=round(seconds, 1))
    for kind in pending[1:]:
        report(
            kind, status="not_run", text=f"not run: {step} stopped in check {current} ({status})"
        )
