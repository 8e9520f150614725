"""`make grade SUBMISSION=path`: grades a student submission (staff-only).

    python -m grading.grade SUBMISSION [--out DIR] [--only PATTERNS] [--time-limit S] [--gradescope]
    python -m grading.grade --bundle build/autograder.zip       the Gradescope autograder zip

SUBMISSION is a directory or a .zip holding spark/linear.py, spark/nn.py and
spark/cnn.py (or the three files at any depth, e.g. flat, as Gradescope
uploads them, or inside a zip among the uploaded files). The grader

1. reads only those three files (anything else is ignored, with a note)
   (grading/submission.py);
2. checks each against the submission rules (RULES, grading/rules.py): a file
   that breaks them is not run, and its step's checks score 0 with the reason;
3. builds a clean tree, read-only for submitted code: the starter (no solutions
   anywhere), the built Cython extension, the step runner and the student's
   files on top (grading/tree.py);
4. runs each step in a fresh process of its own, sandboxed (grading/sandbox.py:
   an unprivileged user when the grader is root, limits on memory and
   processes), which sends back raw outputs only (grading/runner.py,
   grading/channel.py); the supervisor enforces the time limits and the memory
   limit and kills every process of the step when it ends (grading/supervisor.py);
5. judges every check here, against references computed in this process,
   which never imports submitted code (grading/judge.py);
6. writes DIR/results.json (Gradescope's format, with the leaderboard) and
   DIR/summary.txt atomically after every check and at the end, and prints the
   summary (grading/results.py).

Exit status: 0 when grading completed (whatever the score), 2 for a usage or
configuration error, 3 when the grader itself could not run the checks (Spark
did not start): results.json then says so and asks students to contact staff.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import os
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grading import leaderboard, runner, starter
from grading.bundle import write_bundle
from grading.config import CONFIG, KINDS, Config, GradeError, TestSpec, load_config
from grading.judge import Outcome, images, judge, references
from grading.results import make_results, write_results
from grading.rules import RULES, reject_rule_breakers
from grading.sandbox import MARKER, Sandbox, SandboxError, cpus_available, memory_available
from grading.submission import Submission, read_submission
from grading.supervisor import StepRun, run_step
from grading.tree import build_tree
from util import models

REPO = Path(__file__).resolve().parent.parent
GRADER_RESERVE = 300 << 20  # bytes of the machine kept for the grader itself


def _log(msg: str) -> None:
    print(f"grade: {msg}", file=sys.stderr, flush=True)


def student_env(tree: Path, sandbox: Sandbox) -> dict[str, str]:
    """The environment of submitted code: nothing of the grader's but what Spark needs."""
    keep = ("PATH", "LANG", "LC_ALL", "JAVA_HOME", "SPARKNET_KERNELS")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.update(
        PYTHONPATH=str(tree),
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONNOUSERSITE="1",
        PYSPARK_PYTHON=sys.executable,
        SPARK_LOCAL_IP="127.0.0.1",
        **{MARKER: sandbox.marker},
    )
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


@dataclass
class GradingRun:
    """The state of one grading: what was read, the sandbox, the outcomes so far."""

    tests: list[TestSpec]
    config: Config
    sub: Submission
    sandbox: Sandbox
    master: str
    out_dir: Path
    t0: float = field(default_factory=time.monotonic)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    board: list[dict] = field(default_factory=list)
    peak_memory: dict[str, float] = field(default_factory=dict)  # model -> GB

    @property
    def deadline(self) -> float:
        return self.t0 + self.config.time_budget

    def write(self, final: bool = False) -> dict:
        """results.json and summary.txt as they stand (atomically)."""
        grader_error = any(o.status == "grader_error" for o in self.outcomes.values())
        elapsed = round(time.monotonic() - self.t0, 1)
        results = make_results(
            self.tests, self.outcomes, self.sub.notes, grader_error, elapsed, final, self.board
        )
        write_results(self.out_dir, results)
        results["_grader_error"] = grader_error
        return results

    def not_run(self, tests: list[TestSpec], text: str, status: str) -> None:
        for t in tests:
            self.outcomes[t.id] = Outcome(False, text, status=status)
        self.write()

    def step(self, spec: models.ModelSpec, tree: Path, scratch: Path, env: dict[str, str]) -> None:
        """One step: its checks in a fresh sandboxed process, each judged as it arrives."""
        step_tests = [t for t in self.tests if t.model == spec.name]
        if not step_tests:
            return
        if spec.name in self.sub.problems:
            return self.not_run(step_tests, f"0 points: {self.sub.problems[spec.name]}", "rules")
        if time.monotonic() >= self.deadline:
            budget = self.config.time_budget
            return self.not_run(
                step_tests, f"not run: the grading time budget ({budget:g} s) was spent", "not_run"
            )
        by_kind = {t.kind: t for t in step_tests}
        kinds = [k for k in KINDS if k in by_kind]
        refs = references(spec.name, kinds)
        rel = spec.student_file
        source = (self.sub.files.get(rel) or starter.starter_text(rel), rel)

        def on_report(report) -> None:
            self.outcomes[by_kind[report.kind].id] = judge(report, refs[report.kind], source)
            self.write()

        def bench_seed() -> int | None:
            passed = all(self.outcomes[t.id].passed for t in step_tests)
            return secrets.randbelow(2**31) if passed and len(kinds) == len(KINDS) else None

        run = StepRun(
            spec.name,
            spec.step,
            kinds,
            {k: by_kind[k].time_limit for k in kinds},
            self.config.startup_time_limit,
            self.deadline,
            bench_seed if self.config.leaderboard and spec.name == "cnn" else None,
        )
        end = run_step(run, self.sandbox, tree, scratch, env, self.master, on_report)
        self.peak_memory[spec.name] = round(end.peak_memory / 2**30, 2)
        if end.survivors:
            self.sub.notes.append(
                f"(grader) processes {end.survivors} of step {spec.step} survived SIGKILL"
            )
        if end.bench is not None:
            b = end.bench
            value = leaderboard.images_per_second(b.arrivals, b.losses, b.seed)
            if isinstance(value, float):
                self.board.append(
                    {"name": leaderboard.NAME, "value": round(value, 1), "order": "desc"}
                )
            else:
                self.sub.notes.append(f"leaderboard: no value ({value})")
            self.write()


def grade(
    submission: Path,
    out_dir: Path,
    config: Config | None = None,
    only: list[str] | None = None,
    time_limit: float | None = None,
    strict: bool = False,
) -> dict:
    """Grades one submission; writes out_dir/results.json and summary.txt after every check;
    returns the results (results.json's content plus "_grader_error": True when the grader
    itself failed). strict: as root (Gradescope), submitted code must run as the student
    user, or nothing runs."""
    config = config or load_config()
    tests = config.tests
    if only:
        tests = [t for t in tests if any(fnmatch.fnmatch(t.id, p) for p in only)]
        if not tests:
            raise GradeError(f"--only {only} selects none of {[t.id for t in config.tests]}")
    if time_limit:
        tests = [dataclasses.replace(t, time_limit=time_limit) for t in tests]
    out_dir.mkdir(parents=True, exist_ok=True)
    memory = min(int(config.memory_limit_gb * 2**30), memory_available() - GRADER_RESERVE)
    try:
        sandbox = Sandbox.for_this_machine(memory, config.student_user, strict)
    except SandboxError as e:
        raise GradeError(str(e)) from None
    master = config.spark_master
    if master == "auto":
        master = "local[1]" if cpus_available() <= 1.5 else "local[2]"
    _log(f"{sandbox.describe()}; Spark master {master}")

    sub = read_submission(submission)
    if config.rules:
        reject_rule_breakers(sub)
    run = GradingRun(tests, config, sub, sandbox, master, out_dir)
    run.write()
    if not list((REPO / "util").glob("_kernels*.so")):
        os.environ["SPARKNET_KERNELS"] = "numpy"
        sub.notes.append("(grader) the Cython kernels are not built here; used the numpy kernels")
    with (
        sandbox.exclusive(_log),
        tempfile.TemporaryDirectory(prefix="sparknet-grade-", dir=sandbox.work_root) as tmp,
    ):
        base = Path(tmp)
        os.chmod(base, 0o711)  # the student user may reach the tree, not list the directory
        tree = base / "tree"
        build_tree(tree, sub)
        X, y = images()  # decoded here once, read by every step's runner
        np.savez(tree / runner.IMAGES, X=X, y=y)
        env = student_env(tree, sandbox)
        try:
            for spec in models.STEPS:
                run.step(spec, tree, base / f"scratch-{spec.name}", env)
        finally:
            left = sandbox.kill_all()
            sandbox.remove_files()
            if left:
                sub.notes.append(f"(grader) processes {left} of submitted code survived SIGKILL")
    _log(f"peak memory of submitted code per step (GB): {run.peak_memory}")
    return run.write(final=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m grading.grade",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=RULES,
    )
    p.add_argument("submission", nargs="?", type=Path, help="directory or .zip")
    p.add_argument("--out", type=Path, help="results directory (default build/grade/<name>)")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--only", help="comma-separated check ids or patterns, e.g. 'nn.*'")
    p.add_argument("--time-limit", type=float, help="override every check's time limit (s)")
    p.add_argument(
        "--gradescope",
        action="store_true",
        help="running on Gradescope: results go to /autograder/results",
    )
    p.add_argument("--bundle", type=Path, metavar="ZIP", help="write the autograder zip and exit")
    args = p.parse_args(argv)
    try:
        if args.bundle:
            files = write_bundle(args.bundle)
            print(
                f"grade: wrote {args.bundle} ({len(files)} files); upload it as the "
                "Gradescope autograder (see STAFF.md)"
            )
            return 0
        if args.submission is None:
            p.error("a SUBMISSION (directory or .zip) is required")
        if not args.submission.exists():
            raise GradeError(f"{args.submission}: no such file or directory")
        out = args.out or (
            Path("/autograder/results")
            if args.gradescope
            else REPO / "build" / "grade" / args.submission.resolve().name
        )
        only = [s.strip() for s in args.only.split(",")] if args.only else None
        results = grade(
            args.submission, out, load_config(args.config), only, args.time_limit, args.gradescope
        )
    except (GradeError, starter.MarkerError, starter.StarterError) as e:
        print(f"grade: error: {e}", file=sys.stderr)
        return 2
    print((out / "summary.txt").read_text(), end="")
    print(f"\nresults: {out / 'results.json'}")
    return 3 if results["_grader_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
