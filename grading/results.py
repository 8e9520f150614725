"""The results of a grading run: Gradescope's results.json (score, one entry per check) and
summary.txt, the same for people to read."""

from __future__ import annotations

import json
from pathlib import Path

from grading.config import TestSpec
from grading.supervisor import Outcome

GRADER_ERROR_NOTE = (
    "The grader could not run some checks (not your fault): please tell the course staff."
)


def make_results(
    tests: list[TestSpec],
    outcomes: dict[str, Outcome],
    notes: list[str],
    grader_error: bool,
    execution_time: float,
) -> dict:
    """Gradescope's results.json content: points from the weights, one entry per test."""
    results_tests = []
    for t in tests:
        o = outcomes[t.id]
        results_tests.append(
            {
                "name": t.name,
                "number": t.number,
                "score": t.weight if o.passed else 0.0,
                "max_score": t.weight,
                "status": "passed" if o.passed else "failed",
                "output": o.output
                + (f"\n[{o.seconds:.1f} s]" if o.status in ("ran", "timeout") else ""),
                "visibility": t.visibility,
                "tags": [t.id, t.model, o.status],
            }
        )
    score = sum(r["score"] for r in results_tests)
    max_score = sum(r["max_score"] for r in results_tests)
    notes = ([GRADER_ERROR_NOTE] if grader_error else []) + list(notes)
    return {
        "score": score,
        "execution_time": execution_time,
        "output": "\n".join(notes) if notes else f"Score {score:g} / {max_score:g}.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": results_tests,
    }


def write_results(out_dir: Path, results: dict) -> None:
    """out_dir/results.json and out_dir/summary.txt."""
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    max_score = sum(t["max_score"] for t in results["tests"])
    (out_dir / "summary.txt").write_text(format_summary(results, max_score))


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
    if results["output"] and not results["output"].startswith("Score "):
        lines += ["", "Notes:"] + [f"  {ln}" for ln in results["output"].splitlines()]
    return "\n".join(lines) + "\n"
