"""`make grade SUBMISSION=path`: grades a student submission (staff-only).

    python -m grading.grade SUBMISSION [--out DIR] [--only PATTERNS] [--time-limit S] [--gradescope]
    python -m grading.grade --bundle build/autograder.zip       the Gradescope autograder zip

SUBMISSION is a directory or a .zip holding spark/linear.py, spark/nn.py and
spark/cnn.py (or the three files at any depth, e.g. flat, as Gradescope
uploads them). The grader

1. reads only those three files (anything else is ignored, with a note)
   (grading/submission.py);
2. checks each against the submission rules (RULES, grading/rules.py): a file
   that breaks them is not run, and its classifier's checks score 0 with the
   reason;
3. builds a clean tree: the starter (no solutions anywhere), the built Cython
   extension, the graded checks (grading/checks.py), and the student's
   files on top; a missing or rejected file keeps the starter's stubs
   (grading/tree.py);
4. runs the checks of grading/grading.toml (grading/config.py) in a worker
   process with one Spark session, each check under its own time limit: on
   expiry or a crash the worker's whole process group (JVM and Python workers
   included) is killed, the check scores 0 with the reason, and a new worker
   runs the rest (grading/supervisor.py);
5. writes DIR/results.json (Gradescope's format) and DIR/summary.txt, and
   prints the summary (grading/results.py).

This module is the orchestration (`grade()`) and the command line; the
autograder zip is grading/bundle.py.

Exit status: 0 when grading completed (whatever the score), 2 for a usage or
configuration error, 3 when the grader itself could not run the checks (Spark
did not start): results.json then says so and asks students to contact staff.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import sys
import tempfile
import time
from pathlib import Path

from grading import starter
from grading.bundle import write_bundle
from grading.config import CONFIG, Config, GradeError, load_config
from grading.results import make_results, write_results
from grading.rules import RULES, reject_rule_breakers
from grading.submission import read_submission
from grading.supervisor import Outcome, run_checks
from grading.tree import build_tree

REPO = Path(__file__).resolve().parent.parent


def grade(
    submission: Path,
    out_dir: Path,
    config: Config | None = None,
    only: list[str] | None = None,
    time_limit: float | None = None,
) -> dict:
    """Grades one submission; writes out_dir/results.json and summary.txt; returns the results
    (results.json's content plus "_grader_error": True when the grader itself failed)."""
    t0 = time.monotonic()
    config = config or load_config()
    tests = config.tests
    if only:
        tests = [t for t in tests if any(fnmatch.fnmatch(t.id, p) for p in only)]
        if not tests:
            raise GradeError(f"--only {only} selects none of {[t.id for t in config.tests]}")
    if time_limit:
        tests = [dataclasses.replace(t, time_limit=time_limit) for t in tests]
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "worker.log"
    log.write_text("")

    sub = read_submission(submission)
    reject_rule_breakers(sub)

    outcomes: dict[str, Outcome] = {}
    to_run = []
    for t in tests:
        if t.model in sub.problems:
            outcomes[t.id] = Outcome(False, f"0 points: {sub.problems[t.model]}", status="not_run")
        else:
            to_run.append(t)
    grader_error = False
    if to_run:
        env_extra = {}
        if not list((REPO / "util").glob("_kernels*.so")):
            env_extra["SPARKNET_KERNELS"] = "numpy"
            sub.notes.append(
                "(grader) the Cython kernels are not built here; used the numpy kernels"
            )
        with tempfile.TemporaryDirectory(prefix="sparknet-grade-") as tmp:
            tree = Path(tmp)
            build_tree(tree, sub)
            outcomes.update(run_checks(tree, to_run, config, log, env_extra))
        grader_error = any(o.status == "grader_error" for o in outcomes.values())

    results = make_results(
        tests, outcomes, sub.notes, grader_error, round(time.monotonic() - t0, 1)
    )
    write_results(out_dir, results)
    results["_grader_error"] = grader_error
    return results


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
        results = grade(args.submission, out, load_config(args.config), only, args.time_limit)
    except (GradeError, starter.MarkerError, starter.StarterError) as e:
        print(f"grade: error: {e}", file=sys.stderr)
        return 2
    print((out / "summary.txt").read_text(), end="")
    print(f"\nresults: {out / 'results.json'}")
    return 3 if results["_grader_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
