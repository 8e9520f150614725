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
from pathlib import Path

from grading import leaderboard, starter
from grading.bundle import write_bundle
from grading.config import CONFIG, KINDS, Config, GradeError, TestSpec, load_config
from grading.judge import Outcome, judge, references
from grading.results import make_results, write_results
from grading.rules import RULES, reject_rule_breakers
from grading.sandbox import MARKER, Sandbox, SandboxError, memory_available
from grading.submission import read_submission
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
    t0 = time.monotonic()
    config = config or load_config()
    deadline = t0 + config.time_budget
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
    _log(sandbox.describe())

    sub = read_submission(submission)
    if config.rules:
        reject_rule_breakers(sub)
    outcomes: dict[str, Outcome] = {}
    board: list[dict] = []
    notes = sub.notes

    def write(final: bool = False) -> dict:
        grader_error = any(o.status == "grader_error" for o in outcomes.values())
        results = make_results(
            tests, outcomes, notes, grader_error, round(time.monotonic() - t0, 1), final, board
        )
        write_results(out_dir, results)
        results["_grader_error"] = grader_error
        return results

    write()
    if not list((REPO / "util").glob("_kernels*.so")):
        os.environ["SPARKNET_KERNELS"] = "numpy"
        notes.append("(grader) the Cython kernels are not built here; used the numpy kernels")
    with tempfile.TemporaryDirectory(prefix="sparknet-grade-") as tmp:
        base = Path(tmp)
        os.chmod(base, 0o711)  # the student user may reach the tree, not list the directory
        tree = base / "tree"
        build_tree(tree, sub)
        env = student_env(tree, sandbox)
        try:
            for spec in models.STEPS:
                step_tests = [t for t in tests if t.model == spec.name]
                if step_tests:
                    _grade_step(
                        spec,
                        step_tests,
                        sub,
                        config,
                        sandbox,
                        tree,
                        base,
                        env,
                        deadline,
                        outcomes,
                        board,
                        write,
                    )
        finally:
            left = sandbox.kill_all()
            if left:
                notes.append(f"(grader) processes {left} of submitted code survived SIGKILL")
    return write(final=True)


def _grade_step(
    spec,
    step_tests: list[TestSpec],
    sub,
    config: Config,
    sandbox: Sandbox,
    tree: Path,
    base: Path,
    env: dict[str, str],
    deadline: float,
    outcomes: dict[str, Outcome],
    board: list[dict],
    write,
) -> None:
    """One step: its checks in a fresh sandboxed process, each judged as its outputs arrive."""
    by_kind = {t.kind: t for t in step_tests}
    if spec.name in sub.problems:
        for t in step_tests:
            outcomes[t.id] = Outcome(False, f"0 points: {sub.problems[spec.name]}", status="rules")
        write()
        return
    if time.monotonic() >= deadline:
        for t in step_tests:
            outcomes[t.id] = Outcome(
                False,
                f"not run: the grading time budget ({config.time_budget:g} s) was spent",
                status="not_run",
            )
        write()
        return
    kinds = [k for k in KINDS if k in by_kind]
    refs = references(spec.name, kinds)
    rel = spec.student_file
    source = (sub.files.get(rel) or starter.starter_text(rel), rel)

    def on_report(report) -> None:
        outcomes[by_kind[report.kind].id] = judge(report, refs[report.kind], source)
        write()

    def bench_seed() -> int | None:
        passed = all(outcomes.get(t.id, Outcome(False, "")).passed for t in step_tests)
        return secrets.randbelow(2**31) if passed and len(kinds) == len(KINDS) else None

    run = StepRun(
        spec.name,
        spec.step,
        kinds,
        {k: by_kind[k].time_limit for k in kinds},
        config.startup_time_limit,
        deadline,
        bench_seed if config.leaderboard and spec.name == "cnn" else None,
    )
    bench = run_step(
        run, sandbox, tree, base / f"scratch-{spec.name}", env, config.spark_master, on_report
    )
    if bench is not None:
        value = leaderboard.images_per_second(bench.arrivals, bench.losses, bench.seed)
        if isinstance(value, float):
            board.append({"name": leaderboard.NAME, "value": round(value, 1), "order": "desc"})
        else:
            sub.notes.append(f"leaderboard: no value ({value})")
        write()


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
