"""The results of a grading run: Gradescope's results.json (score, one entry per check, the
leaderboard) and summary.txt, the same for people to read. Written atomically after every
check, so that a run the platform cuts short still leaves the checks that finished."""

from __future__ import annotations

import json
import os
from pathlib import Path

from grading.config import TestSpec
from grading.judge import Outcome

GRADER_ERROR_NOTE = (
    "The grader could not run some checks (not your fault): please tell the course staff."
)
CUT_SHORT_NOTE = (
    "Grading was cut short (the platform stopped it): the checks marked 'not run yet' did not "
    "run; please resubmit or tell the course staff."
)
PENDING = Outcome(False, "not run yet: grading was cut short before this check", status="pending")


def make_results(
    tests: list[TestSpec],
    outcomes: dict[str, Outcome],
    notes: list[str],
    grader_error: bool,
    execution_time: float,
    final: bool = True,
    leaderboard: list[dict] | None = None,
) -> dict:
    """Gradescope's results.json content: points from the weights, one entry per test; not
    final: the checks without an outcome are "not run yet" and a note says so."""
    results_tests = []
    for t in tests:
        o = outcomes.get(t.id, PENDING)
        results_tests.append(
            {
                "name": t.name,
                "number": t.number,
                "score": t.weight if o.passed else 0.0,
                "max_score": t.weight,
                "status": "passed" if o.passed else "failed",
                "output": o.output
                + (f"\n[{o.seconds:.1f} s]" if o.status in ("ran", "timeout", "memory") else ""),
                "visibility": t.visibility,
                "tags": [t.id, t.model, o.status],
                "extra_data": {"seconds": o.seconds, "time_limit": t.time_limit},
            }
        )
    score = sum(r["score"] for r in results_tests)
    max_score = sum(r["max_score"] for r in results_tests)
    notes = (
        ([GRADER_ERROR_NOTE] if grader_error else [])
        + ([] if final else [CUT_SHORT_NOTE])
        + list(notes)
    )
    results = {
        "score": score,
        "execution_time": execution_time,
        "output": "\n".join(notes) if notes else f"Score {score:g} / {max_score:g}.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": results_tests,
    }
    if leaderboard:
        results["leaderboard"] = leaderboard
    return results


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_results(out_dir: Path, results: dict) -> None:
    """out_dir/results.json and out_dir/summary.txt, each replaced atomically."""
    _write_atomic(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    max_score = sum(t["max_score"] for t in results["tests"])
    _write_atomic(out_dir / "summary.txt", format_summary(results, max_score))


def format_summary(results: dict, max_score: float) -> str:
    """summary.txt: the score, one line per check, the output of the failed ones, the notes."""
    lines = [f"Score: {results['score']:g} / {max_score:g}   ({results['execution_time']:g} s)", ""]
    width = max((len(t["name"]) for t in results["tests"]), default=10)
    for t in results["tests"]:
        mark = "ok  " if t["status"] == "passed" else "FAIL"
        lines.append(f"  {mark} {t['score']:>4g}/{t['max_score']:<4g} {t['name']:<{width}}")
        if t["status"] != "passed":
            for ln in t["output"].splitlines()[:12]:
                lines.append(f"         {ln}")
    for entry in results.get("leaderboard", []):
        lines += ["", f"Leaderboard: {entry['name']}: {entry['value']}"]
    if results["output"] and not results["output"].startswith("Score "):
        lines += ["", "Notes:"] + [f"  {ln}" for ln in results["output"].splitlines()]
    return "\n".join(lines) + "\n"
