"""The autograder as Gradescope runs it: the bundle built, unpacked in an imitation of the
/autograder tree, setup.sh run once as root, uploads graded by run_autograder, and every
results.json checked against Gradescope's format (docs: "Autograder Specifications",
"Output format").

`validate` is written from Gradescope's specification, not from the grader's code, and is
itself shown to catch broken results first.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grading import starter
from grading.submission import STUDENT_FILES
from util.models import REPO

pytestmark = [pytest.mark.slow]

TOP_LEVEL = {
    "score",
    "execution_time",
    "output",
    "output_format",
    "test_output_format",
    "test_name_format",
    "visibility",
    "stdout_visibility",
    "extra_data",
    "tests",
    "leaderboard",
}
PER_TEST = {
    "score",
    "max_score",
    "status",
    "name",
    "name_format",
    "number",
    "output",
    "output_format",
    "tags",
    "visibility",
    "extra_data",
}
FORMATS = {"text", "html", "simple_format", "md", "ansi"}
VISIBILITIES = {"hidden", "after_due_date", "after_published", "visible"}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate(results: object) -> list[str]:
    """What in `results` is not Gradescope's results.json format (empty: valid)."""
    if not isinstance(results, dict):
        return ["results.json is not an object"]
    problems = [f"unknown top-level field {k!r}" for k in sorted(set(results) - TOP_LEVEL)]
    for key in ("score", "execution_time"):
        if key in results and not _number(results[key]):
            problems.append(f"{key} must be a number, got {results[key]!r}")
    for key in ("output_format", "test_output_format", "test_name_format"):
        if key in results and results[key] not in FORMATS:
            problems.append(f"{key} {results[key]!r} is not one of {sorted(FORMATS)}")
    for key in ("visibility", "stdout_visibility"):
        if key in results and results[key] not in VISIBILITIES:
            problems.append(f"{key} {results[key]!r} is not one of {sorted(VISIBILITIES)}")
    if "output" in results and not isinstance(results["output"], str):
        problems.append("output must be a string")
    if "extra_data" in results and not isinstance(results["extra_data"], dict):
        problems.append("extra_data must be an object")
    tests = results.get("tests", [])
    if not isinstance(tests, list):
        return [*problems, "tests must be a list"]
    if "score" not in results and any("score" not in t for t in tests if isinstance(t, dict)):
        problems.append("no top-level score and a test without a score")
    for i, t in enumerate(tests):
        where = f"tests[{i}]"
        if not isinstance(t, dict):
            problems.append(f"{where} is not an object")
            continue
        problems += [f"{where}: unknown field {k!r}" for k in sorted(set(t) - PER_TEST)]
        for key in ("score", "max_score"):
            if key in t and not _number(t[key]):
                problems.append(f"{where}: {key} must be a number, got {t[key]!r}")
        if "status" in t and t["status"] not in ("passed", "failed"):
            problems.append(f"{where}: status {t['status']!r} is not passed or failed")
        for key in ("name", "number", "output"):
            if key in t and not isinstance(t[key], str):
                problems.append(f"{where}: {key} must be a string")
        for key in ("name_format", "output_format"):
            if key in t and t[key] not in FORMATS:
                problems.append(f"{where}: {key} {t[key]!r} is not a format")
        if "visibility" in t and t["visibility"] not in VISIBILITIES:
            problems.append(f"{where}: visibility {t['visibility']!r}")
        if "tags" in t and not (
            isinstance(t["tags"], list) and all(isinstance(x, str) for x in t["tags"])
        ):
            problems.append(f"{where}: tags must be a list of strings")
        if "extra_data" in t and not isinstance(t["extra_data"], dict):
            problems.append(f"{where}: extra_data must be an object")
    board = results.get("leaderboard", [])
    if not isinstance(board, list):
        return [*problems, "leaderboard must be a list"]
    for i, entry in enumerate(board):
        where = f"leaderboard[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "value", "order"}:
            problems.append(f"{where} must be an object of name, value, order")
            continue
        if not isinstance(entry.get("name"), str) or "value" not in entry:
            problems.append(f"{where} needs a name (string) and a value")
        if not (_number(entry.get("value")) or isinstance(entry.get("value"), str)):
            problems.append(f"{where}: value must be a number or a string")
        if entry.get("order", "desc") not in ("asc", "desc"):
            problems.append(f"{where}: order {entry['order']!r} is not asc or desc")
    return problems


VALID = {
    "score": 4.0,
    "execution_time": 12.5,
    "output": "Score 4 / 6.",
    "visibility": "visible",
    "stdout_visibility": "hidden",
    "tests": [
        {
            "name": "a",
            "number": "1.1",
            "score": 4.0,
            "max_score": 4.0,
            "status": "passed",
            "output": "",
            "visibility": "visible",
            "tags": ["x"],
            "extra_data": {"seconds": 1.0},
        }
    ],
    "leaderboard": [{"name": "speed", "value": 1.5, "order": "desc"}],
}


def _broken(change) -> dict:
    results = json.loads(json.dumps(VALID))
    change(results)
    return results


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda r: r.update(execution_time="12 s"), "execution_time must be a number"),
        (lambda r: r.update(grade=4), "unknown top-level field 'grade'"),
        (lambda r: r["tests"][0].update(status="ok"), "status 'ok' is not passed or failed"),
        (lambda r: r["tests"][0].update(seconds=1.0), "unknown field 'seconds'"),
        (lambda r: r["tests"][0].update(visibility="later"), "visibility 'later'"),
        (lambda r: r["tests"][0].update(tags="x"), "tags must be a list of strings"),
        (lambda r: r["tests"][0].update(score="4"), "score must be a number"),
        (lambda r: r["leaderboard"][0].update(order="up"), "order 'up' is not asc or desc"),
        (lambda r: r.update(output_format="markdown"), "output_format 'markdown'"),
    ],
)
def test_validator_catches_broken_results(change, message):
    assert validate(VALID) == []
    problems = validate(_broken(change))
    assert any(message in p for p in problems), problems


# --------------------------------------------------------------------------- the imitation


def _starter_upload() -> dict[str, str]:
    """The starter's three files, flat, as a student uploads them on Gradescope."""
    return {rel.split("/")[-1]: starter.starter_text(rel) for rel in STUDENT_FILES.values()}


def _solution_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for rel in STUDENT_FILES.values():
            z.write(REPO / rel, rel)
    return buf.getvalue()


def test_setup_builds_the_bundle_and_smoke_tests(autograder):
    log = autograder.setup_log
    assert "setup: smoke test passed: the starter scores 0 on 15 checks" in log, log[-3000:]
    assert list((autograder.source / "util").glob("_kernels*.so"))
    if os.geteuid() == 0:
        assert (autograder.source.stat().st_mode & 0o777) == 0o700
        assert "no apt" in log  # this machine has the packages: apt is skipped
    # idempotent: a second run succeeds and changes nothing the grader relies on
    before = sorted(p.name for p in (autograder.root / "venv" / "bin").iterdir())
    autograder.setup()
    assert "smoke test passed" in autograder.setup_log
    assert sorted(p.name for p in (autograder.root / "venv" / "bin").iterdir()) == before


def test_starter_upload_scores_zero_in_gradescope_format(autograder, student_processes):
    graded = autograder.grade(_starter_upload())
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert validate(graded.results) == []
    assert graded.results["score"] == 0 and len(graded.results["tests"]) == 15
    for t in graded.results["tests"]:
        assert "not implemented yet" in t["output"], t
    assert "leaderboard" not in graded.results  # only a correct CNN step is timed
    assert student_processes() == []
    if os.geteuid() == 0:
        assert "submitted code runs as uid" in graded.stderr


def test_solution_in_a_zip_among_the_uploaded_files_gets_full_marks(autograder, student_processes):
    graded = autograder.grade({"submission.zip": _solution_zip(), "notes.txt": "hello"})
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert validate(graded.results) == []
    failed = {t["tags"][0]: t["output"][:300] for t in graded.results["tests"] if t["score"] == 0}
    assert failed == {} and graded.results["score"] == 100
    (entry,) = graded.results["leaderboard"]
    assert entry["order"] == "desc" and entry["value"] > 0
    assert student_processes() == []
    print(f"solution graded in {graded.seconds:.1f} s, leaderboard {entry['value']} images/s")


def test_a_run_cut_short_leaves_the_finished_checks(autograder, student_processes):
    """Gradescope kills the autograder at its time limit: results.json, written after every
    check, then holds what finished and says the rest did not run."""
    autograder.upload({rel: (REPO / rel).read_text() for rel in STUDENT_FILES.values()})
    proc = subprocess.Popen(
        [str(autograder.source / "run_autograder")],
        env=autograder.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    results_file = autograder.results / "results.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if results_file.is_file():
                results = json.loads(results_file.read_text())  # never half-written
                if any(t["status"] == "passed" for t in results["tests"]):
                    break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the platform's timeout: no clean-up at all
        proc.wait()
        subprocess.run(["pkill", "-KILL", "-u", "sparknet-student"], check=False)
    results = json.loads(results_file.read_text())
    assert validate(results) == []
    statuses = {t["tags"][2] for t in results["tests"]}
    assert "ran" in statuses and "pending" in statuses, statuses
    assert "Grading was cut short" in results["output"]
    pending = [t for t in results["tests"] if t["tags"][2] == "pending"]
    assert all(t["score"] == 0 and "not run yet" in t["output"] for t in pending)
    time.sleep(1)
    assert student_processes() == []


def test_the_grader_refuses_to_run_submissions_as_root_on_gradescope(tmp_path, student_user):
    """--gradescope as root with an interpreter the student user cannot run (a developer's
    Python under /root) stops with a clear error instead of running submissions as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if not str(Path(sys.executable).resolve()).startswith("/root"):
        pytest.skip("this interpreter is readable by all: nothing to refuse")
    out = subprocess.run(
        [sys.executable, "-m", "grading.grade", str(REPO / "spark"), "--gradescope"]
        + ["--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "grade: error: the student user cannot run" in out.stderr
