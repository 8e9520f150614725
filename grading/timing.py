"""Grading times on a small machine: grades a submission with the whole grader inside a
cgroup that caps its CPU and memory, as Gradescope's machine sizes do (staff-only; root and
cgroups v1 or v2 needed).

    python -m grading.timing SUBMISSION [--cpus 0.5] [--memory-gb 1.5] [--config FILE]

Prints the run's wall time and every check's seconds, status and time limit, so that the
limits in grading/grading.toml can be set from measurements (STAFF.md, "Time limits").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from grading.config import CONFIG

REPO = Path(__file__).resolve().parent.parent
PERIOD_US = 100_000


def _cgroup(name: str, cpus: float, memory: int) -> list[Path]:
    """Creates the cgroup(s) with the limits; returns their cgroup.procs files."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers")
    if v2.exists():
        d = Path("/sys/fs/cgroup") / name
        d.mkdir(exist_ok=True)
        (d / "cpu.max").write_text(f"{int(cpus * PERIOD_US)} {PERIOD_US}")
        (d / "memory.max").write_text(str(memory))
        return [d / "cgroup.procs"]
    cpu, mem = Path("/sys/fs/cgroup/cpu") / name, Path("/sys/fs/cgroup/memory") / name
    for d in (cpu, mem):
        d.mkdir(exist_ok=True)
    (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (cpu / "cpu.cfs_quota_us").write_text(str(int(cpus * PERIOD_US)))
    (mem / "memory.limit_in_bytes").write_text(str(memory))
    return [cpu / "cgroup.procs", mem / "cgroup.procs"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grading.timing", description=__doc__.split("\n")[0])
    p.add_argument("submission", type=Path)
    p.add_argument("--cpus", type=float, default=0.5, help="CPU share (default 0.5 vCPU)")
    p.add_argument("--memory-gb", type=float, default=1.5, help="memory (default 1.5 GB)")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--out", type=Path, default=REPO / "build" / "timing")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("needs root (it creates a cgroup)")
    name = f"sparknet-timing-{os.getpid()}"
    try:
        procs = _cgroup(name, args.cpus, int(args.memory_gb * 2**30))
    except OSError as e:
        p.error(f"cannot create a cgroup here ({e})")

    def enter() -> None:
        for f in procs:
            f.write_text(str(os.getpid()))

    cmd = [sys.executable, "-m", "grading.grade", str(args.submission), "--out", str(args.out)]
    cmd += ["--config", str(args.config), "--gradescope"]
    t0 = time.monotonic()
    run = subprocess.run(cmd, cwd=REPO, preexec_fn=enter, capture_output=True, text=True)
    wall = time.monotonic() - t0
    for f in procs:
        try:
            f.parent.rmdir()
        except OSError:
            pass
    results_file = args.out / "results.json"
    if not results_file.is_file():
        print(run.stderr[-3000:], file=sys.stderr)
        return 1
    results = json.loads(results_file.read_text())
    print(
        f"{args.submission}: score {results['score']:g}, wall {wall:.1f} s at {args.cpus:g} vCPU, "
        f"{args.memory_gb:g} GB (exit {run.returncode})"
    )
    for line in run.stderr.splitlines():
        if line.startswith("grade: ") and ("peak memory" in line or "runs as" in line):
            print(f"  {line}")
    print(f"  {'check':32} {'status':8} {'seconds':>8} {'limit':>6}")
    for t in results["tests"]:
        extra = t.get("extra_data", {})
        print(
            f"  {t['tags'][0]:32} {t['tags'][2]:8} {extra.get('seconds', 0):8.1f} "
            f"{extra.get('time_limit', 0):6g}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
