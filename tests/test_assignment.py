"""The course assignment: starter generation, submission rules, grading (staff-only).

Proves that the solution gets full marks, the generated starter gets 0 but
builds and runs its matrix targets, realistic student mistakes
(tests/mistakes/*.patch) lose exactly the checks that should catch them, and a
submission that loops forever is stopped at its time limit.

Grading runs are the expensive part (a Spark worker each): they are shared
through a module-scoped cache. Mistakes in different steps are graded together
(one submission per row of COMBINED): each graded check imports only its own
step's file, which `test_checks_import_only_their_own_step` verifies, so every
mistake's lost checks can be read off its own step; one mistake is also graded
alone to show the other steps keep full marks.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from grading import bundle, grade, rules, starter, submission
from grading import checks as grade_checks
from grading import config as grade_config
from grading import tree as grade_tree
from util.models import REPO

MISTAKES = REPO / "tests" / "mistakes"
KINDS = grade_checks.KINDS
TESTERS = {"tester_uneven_chunks", "tester_one_partition", "tester_mini_batches"}


def ids(model: str, kinds) -> set[str]:
    return {f"{model}.{k}" for k in kinds}


# mistake -> the checks it must lose (all in its own step)
EXPECTED_LOSSES = {
    "linear_mean_per_chunk": ids("linear", TESTERS),
    "linear_first_chunk_only": ids("linear", {"tester_uneven_chunks", "tester_mini_batches"}),
    "nn_missing_relu": ids("nn", TESTERS | {"forward"}),
    "nn_swapped_grads": ids("nn", TESTERS),
    "nn_caches_reversed": ids("nn", TESTERS),
    "cnn_backward_in_forward_order": ids("cnn", TESTERS),
    "cnn_collect_to_driver": ids("cnn", {"spark_usage"}),
}
COMBINED = {
    "combo_a": ("linear_mean_per_chunk", "nn_missing_relu", "cnn_collect_to_driver"),
    "combo_b": ("linear_first_chunk_only", "nn_swapped_grads", "cnn_backward_in_forward_order"),
    "alone": ("nn_caches_reversed",),
}
ALL_CHECKS = set(grade_checks.CHECK_IDS)
GRADING_MODULES = tuple(
    f"grading/{m}.py"
    for m in (
        "__init__",
        "bundle",
        "checks",
        "config",
        "grade",
        "results",
        "rules",
        "starter",
        "submission",
        "supervisor",
        "tree",
    )
)


def make_submission(dest: Path, patches=(), from_dir: Path = REPO) -> Path:
    """spark/{linear,nn,cnn}.py of `from_dir`, with the mistakes' patches applied."""
    (dest / "spark").mkdir(parents=True)
    for rel in submission.STUDENT_FILES.values():
        shutil.copy(from_dir / rel, dest / rel)
    for name in patches:
        subprocess.run(
            ["git", "apply", str(MISTAKES / f"{name}.patch")],
            cwd=dest,
            check=True,
            capture_output=True,
            text=True,
        )
    return dest


def lost(results: dict) -> set[str]:
    return {t["tags"][0] for t in results["tests"] if t["score"] < t["max_score"]}


# --------------------------------------------------------------------------- markers


def test_regions_become_stubs_at_their_indentation():
    src = (
        "class A:\n"
        "    def f(self):\n"
        '        """doc"""\n'
        "        # BEGIN SOLUTION\n"
        "        return 1\n"
        "        # END SOLUTION\n"
    )
    out, regions = starter.clear_solutions(src, "spark/linear.py")
    assert [r.qualname for r in regions] == ["A.f"]
    assert "return 1" not in out and "SOLUTION" not in out
    assert (
        '        raise NotImplementedError("A.f: not implemented yet (step 1: see README)")' in out
    )
    assert "        # TODO: implement A.f." in out
    compile(out, "x", "exec")


@pytest.mark.parametrize(
    "body,line,message",
    [
        ("    # BEGIN SOLUTION\n    x = 1\n", 3, "BEGIN SOLUTION without an END"),
        ("    # END SOLUTION\n", 3, "END SOLUTION without a BEGIN"),
        ("    # BEGIN SOLUTION\n    # BEGIN SOLUTION\n    # END SOLUTION\n", 4, "cannot nest"),
        ("    # BEGIN SOLUTION\n    pass\n  # END SOLUTION\n", 5, "indented differently"),
        ("    # BEGIN SOLUTION:\n    pass\n", 3, "malformed solution marker"),
    ],
)
def test_malformed_markers_name_file_and_line(body, line, message):
    src = "def f():\n    '''doc'''\n" + body
    with pytest.raises(starter.MarkerError, match=rf"^spark/nn\.py:{line}: .*{message}"):
        starter.clear_solutions(src, "spark/nn.py")


def test_region_outside_a_function_is_an_error():
    with pytest.raises(starter.MarkerError, match=r"^x\.py:1: .*inside a function"):
        starter.clear_solutions("# BEGIN SOLUTION\nx = 1\n# END SOLUTION\n", "x.py")


def test_starter_tree_has_no_solutions_and_no_staff_files():
    files = starter.starter_files()
    for rel, data in files.items():
        assert b"BEGIN SOLUTION" not in data and b"END SOLUTION" not in data, rel
        assert not starter._excluded(rel, starter.STAFF_ONLY) or rel == "README.md", rel
    assert files["README.md"] == (REPO / starter.ASSIGNMENT).read_bytes()
    for rel, (step, _) in starter.STUDENT_FILES.items():
        text = files[rel].decode()
        assert text.count(f"not implemented yet (step {step}: see README)") == 2
        for code in ("def chunk_forward", "def chunk_backward", ".mapValues(", ".treeReduce("):
            assert code not in text, (rel, code)  # the solution is gone
    # the rest of the repository is there, unchanged
    for rel in (
        "Makefile",
        "setup.py",
        "util/layer.py",
        "spark/tester.py",
        "tests/test_spark.py",
        "matrix/cnn.py",
    ):
        assert files[rel] == (REPO / rel).read_bytes(), rel
    assert not any(
        rel.startswith(("tests/mistakes/", ".git/", ".venv/", "build/")) for rel in files
    )
    for staff in (
        "STAFF.md",
        "grading/grade.py",
        "grading/grading.toml",
        "tests/test_assignment.py",
    ):
        assert staff not in files
    assert not any(rel.startswith("grading/") for rel in files)  # none of the grader's modules


def test_write_starter_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="--force"):
        starter.write_starter(tmp_path)


# --------------------------------------------------------------------------- config and rules


def test_grading_config_is_complete():
    config = grade_config.load_config()
    assert [t.id for t in config.tests] == list(grade_checks.CHECK_IDS)
    assert sum(t.weight for t in config.tests) == 100
    for model, points in (("linear", 20), ("nn", 30), ("cnn", 50)):
        assert sum(t.weight for t in config.tests if t.model == model) == points


def test_grading_config_errors_are_clear(tmp_path):
    bad = tmp_path / "g.toml"
    text = (REPO / "grading" / "grading.toml").read_text()
    bad.write_text(
        text.replace('visibility = "hidden"', "").replace(
            '[tests."nn.forward"]\nname', '[tests."nn.forwards"]\nname'
        )
    )
    with pytest.raises(
        grade_config.GradeError, match=r"unknown: \['nn.forwards'\], missing: \['nn.forward'\]"
    ):
        grade_config.load_config(bad)
    bad.write_text(text.replace('visibility = "after_due_date"', 'visibility = "later"', 1))
    with pytest.raises(grade_config.GradeError, match="visibility must be one of"):
        grade_config.load_config(bad)


@pytest.mark.parametrize("model", ["linear", "nn", "cnn"])
def test_solution_and_starter_follow_the_rules(model):
    rel = submission.STUDENT_FILES[model]
    starter_src = starter.starter_text(rel)
    assert rules.check_rules(model, (REPO / rel).read_text(), starter_src) == []
    assert rules.check_rules(model, starter_src, starter_src) == []


def _linear_with(old: str, new: str) -> str:
    src = (REPO / "spark" / "linear.py").read_text()
    assert old in src
    return src.replace(old, new, 1)


@pytest.mark.parametrize(
    "old,new,message",
    [
        (
            "from util import layer",
            "from util import layer\nimport subprocess",
            "`import subprocess` is not an allowed import",
        ),
        (
            "from util import layer",
            "from util import layer\nfrom util.network import loss_and_grads",
            "not an allowed import",
        ),
        (
            "from util import layer",
            "from util import layer\nfrom spark.nn import NNSpark",
            "not an allowed import",
        ),
        ("from util import layer", "from util import layer, dump", "not an allowed import"),
        (
            "            p = params.value",
            "            p = getattr(params, 'value')",
            "calls getattr()",
        ),
        ("            p = params.value", "            p = params.__dict__", "dunder attribute"),
        (
            "        # BEGIN SOLUTION\n        def chunk_forward",
            "        # BEGIN SOLUTION\n        layer.softmax_loss = None\n"
            "        def chunk_forward",
            "assigns layer.softmax_loss",
        ),
        (
            "        # BEGIN SOLUTION\n        def chunk_backward",
            "        # BEGIN SOLUTION\n"
            "        return LinearClassifier.gradients(self, forwarded, None)\n"
            "        def chunk_backward",
            "uses .gradients",
        ),
        (
            "    def backward(self, forwarded: RDD, params: Broadcast)",
            "    def backward(self, forwarded: RDD)",
            "must keep the starter's parameters",
        ),
        (
            "class LinearSpark(SparkClassifier, LinearClassifier):",
            "class LinearSpark(SparkClassifier):",
            "must keep the starter's base classes",
        ),
        (
            "    def forward(self, data",
            "    def train(self, *a, **k):\n        return []\n\n    def forward(self, data",
            "may define only forward, backward; found train",
        ),
        ("from util import layer", "from util import layer\nprint('hi')", "module-level code"),
        ("    def forward(self", "    def forwrd(self", "LinearSpark.forward is missing"),
        (
            "            X, y = chunk",
            "            X, y = chunk\n            exec('1')",
            "calls exec()",
        ),
    ],
)
def test_rule_violations_are_named(old, new, message):
    problems = rules.check_rules(
        "linear", _linear_with(old, new), starter.starter_text("spark/linear.py")
    )
    assert any(message in p for p in problems), problems


def test_helpers_and_numpy_are_allowed():
    src = _linear_with(
        "from util import layer",
        "import numpy as np\nfrom functools import reduce\n\nfrom util import layer\n\n"
        "SCALE = 1.0\n\n\ndef helper(a):\n    return np.asarray(a) * SCALE",
    )
    assert rules.check_rules("linear", src, starter.starter_text("spark/linear.py")) == []


def test_syntax_error_is_a_rule_violation():
    problems = rules.check_rules("nn", "def broken(:\n", starter.starter_text("spark/nn.py"))
    assert problems and "syntax error" in problems[0]


# --------------------------------------------------------------------------- submissions


def test_zip_submission_flat_files_extra_files_and_bad_paths(tmp_path):
    z = tmp_path / "sub.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("linear.py", (REPO / "spark" / "linear.py").read_text())
        f.writestr("hw/spark/nn.py", (REPO / "spark" / "nn.py").read_text())
        f.writestr("spark/tester.py", "# my own tester that always passes\n")
        f.writestr("../../etc/evil.py", "x = 1\n")
        f.writestr("__MACOSX/._linear.py", "junk")
    sub = submission.read_submission(z)
    assert set(sub.files) == {"spark/linear.py", "spark/nn.py"}
    assert sub.problems == {"cnn": "spark/cnn.py is not in the submission"}
    notes = "\n".join(sub.notes)
    assert "ignored" in notes and "spark/tester.py" in notes and "protected" in notes
    assert "evil" not in notes


def test_unreadable_submission_is_a_result_not_a_crash(tmp_path):
    junk = tmp_path / "sub.zip"
    junk.write_bytes(b"not a zip at all")
    sub = submission.read_submission(junk)
    assert set(sub.problems) == {"linear", "nn", "cnn"}
    results = grade.grade(junk, tmp_path / "out")  # no worker starts: nothing may run
    assert results["score"] == 0 and len(results["tests"]) == len(ALL_CHECKS)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["score"] == 0


def test_rule_violation_scores_zero_for_its_step_only_without_running(tmp_path):
    sub = make_submission(tmp_path / "sub")
    path = sub / "spark" / "linear.py"
    path.write_text(
        path.read_text().replace("from util import layer", "from util import layer\nimport os")
    )
    t0 = time.monotonic()
    results = grade.grade(sub, tmp_path / "out", only=["linear.*"])
    assert time.monotonic() - t0 < 20  # nothing was run
    assert results["score"] == 0 and len(results["tests"]) == 5
    for t in results["tests"]:
        assert "breaks the submission rules" in t["output"] and "import os" in t["output"]
        assert t["status"] == "failed" and t["tags"][2] == "not_run"


def test_autograder_bundle(tmp_path):
    dest = tmp_path / "autograder.zip"
    names = bundle.write_bundle(dest)
    with zipfile.ZipFile(dest) as z:
        assert set(z.namelist()) == set(names)
        for name in ("setup.sh", "run_autograder"):
            assert (z.getinfo(name).external_attr >> 16) & 0o111
        for name in names:
            data = z.read(name)
            if name != "grading/starter.py":  # the generator itself names the markers
                assert b"BEGIN SOLUTION" not in data and b"END SOLUTION" not in data, name
        assert b"not implemented yet" in z.read("spark/cnn.py")
        assert "grading.grade /autograder/submission" in z.read("run_autograder").decode()
        assert "from grading.config import load_config" in z.read("setup.sh").decode()
    assert {
        "grading/grade.py",
        "grading/checks.py",
        "grading/grading.toml",
        "grading/starter.py",
        "setup.py",
        "util/_kernels.pyx",
    } <= set(names)
    assert not any(n.startswith("tests/mistakes") or n == "tests/test_assignment.py" for n in names)
    # the whole grading package: the grader's modules and the worker's, as they run here
    assert set(GRADING_MODULES) <= set(names)
    assert {p.relative_to(REPO).as_posix() for p in (REPO / "grading").glob("*.py")} <= set(names)


def test_grade_cli_in_process(tmp_path, capsys):
    dest = tmp_path / "ag.zip"
    assert grade.main(["--bundle", str(dest)]) == 0
    out = capsys.readouterr().out
    assert f"grade: wrote {dest}" in out and zipfile.is_zipfile(dest)
    bad = tmp_path / "g.toml"
    bad.write_text("[tests]\n")
    assert grade.main([str(REPO / "spark"), "--config", str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("grade: error: ") and "missing: ['cnn.forward', " in err
    assert grade.main([str(tmp_path / "nothing.zip")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_clean_tree_has_the_worker_files_and_only_accepted_student_files(tmp_path):
    sub = submission.Submission(
        files={rel: (REPO / rel).read_text() for rel in submission.STUDENT_FILES.values()},
        problems={"nn": "breaks the rules"},
    )
    placed = grade_tree.build_tree(tmp_path, sub)
    assert placed == {"linear": "submitted", "nn": "starter", "cnn": "submitted"}
    for rel in grade_tree.WORKER_FILES:
        assert (tmp_path / rel).read_bytes() == (REPO / rel).read_bytes(), rel
    assert sorted(p.name for p in (tmp_path / "grading").iterdir()) == ["__init__.py", "checks.py"]
    assert (tmp_path / "spark/linear.py").read_text() == (REPO / "spark/linear.py").read_text()
    assert "not implemented yet" in (tmp_path / "spark/nn.py").read_text()


@pytest.mark.slow
def test_bundle_grades_from_its_own_tree(tmp_path):
    """Unpacked like /autograder/source (no git), the bundle's own grader grades a check."""
    dest = tmp_path / "autograder.zip"
    bundle.write_bundle(dest)
    source = tmp_path / "source"
    with zipfile.ZipFile(dest) as z:
        z.extractall(source)
    for so in (REPO / "util").glob("_kernels*.so"):  # what setup.sh's build_ext makes
        shutil.copy2(so, source / "util" / so.name)
    sub = make_submission(tmp_path / "sub")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [sys.executable, "-c", "import grading.grade, util; print(grading.grade.__file__)"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(source)  # the bundle's grader, not ours
    run = subprocess.run(
        [sys.executable, "-m", "grading.grade", str(sub), "--out", str(out)]
        + ["--only", "linear.forward"],
        cwd=source,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert [t["status"] for t in results["tests"]] == ["passed"], results
    assert results["score"] == 4


def test_checks_import_only_their_own_step():
    """Each check imports spark.<its model> only (never spark.models), which makes a mistake
    in one step unable to change another step's checks."""
    tree = ast.parse((REPO / "grading" / "checks.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not {"spark.models", "spark.linear", "spark.nn", "spark.cnn"} & imported
    # and at run time: loading step 1's class imports no other step's file
    probe = (
        "import sys; from grading import checks; checks.student_class('linear'); "
        "print(sorted(m for m in sys.modules if m in ('spark.linear', 'spark.nn', 'spark.cnn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['spark.linear']"]


# --------------------------------------------------------------------------- grading runs (slow)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """name -> results of grading that submission; each run happens once per module."""
    cache: dict[str, dict] = {}
    root = tmp_path_factory.mktemp("grading")

    def run(name: str) -> dict:
        if name not in cache:
            sub = root / name / "submission"
            if name == "solution":
                make_submission(sub)
            elif name == "starter":
                tree = root / name / "starter"
                starter.write_starter(tree)
                make_submission(sub, from_dir=tree)
            else:
                make_submission(sub, COMBINED[name])
            cache[name] = grade.grade(sub, root / name / "out")
        return cache[name]

    return run


@pytest.mark.slow
def test_solution_gets_full_marks(graded):
    results = graded("solution")
    failed = {t["tags"][0]: t["output"] for t in results["tests"] if t["status"] != "passed"}
    assert failed == {}
    assert results["score"] == 100


@pytest.mark.slow
def test_results_json_is_gradescope_format(graded):
    results = graded("solution")
    assert isinstance(results["score"], float) and isinstance(results["execution_time"], float)
    assert results["visibility"] in grade_config.VISIBILITIES
    for t in results["tests"]:
        assert {"name", "score", "max_score", "output", "visibility", "status"} <= set(t)
        assert t["visibility"] in grade_config.VISIBILITIES and t["status"] in ("passed", "failed")


@pytest.mark.slow
def test_starter_gets_zero_with_clear_messages(graded):
    results = graded("starter")
    assert results["score"] == 0 and lost(results) == ALL_CHECKS
    for t in results["tests"]:
        assert "not implemented yet" in t["output"] and "NotImplementedError" in t["output"], t


@pytest.mark.slow
@pytest.mark.parametrize("combo", sorted(COMBINED))
def test_mistakes_lose_exactly_their_checks(graded, combo):
    results = graded(combo)
    outputs = {t["tags"][0]: t["output"] for t in results["tests"]}
    expected_all = set().union(*(EXPECTED_LOSSES[m] for m in COMBINED[combo]))
    assert lost(results) == expected_all, {
        k: outputs[k][:300] for k in lost(results) ^ expected_all
    }
    for mistake in COMBINED[combo]:
        model = mistake.split("_")[0]
        own = {c for c in lost(results) if c.startswith(model + ".")}
        assert own == EXPECTED_LOSSES[mistake], mistake
        for c in own:
            assert outputs[c].startswith(("FAILED", "ERROR")), outputs[c]
    if combo == "alone":  # the other steps keep full marks
        assert all(c.startswith("nn.") for c in lost(results))


def test_every_mistake_is_graded_and_patches_apply(tmp_path):
    patches = {p.stem for p in MISTAKES.glob("*.patch")}
    graded_here = set().union(*COMBINED.values())
    assert graded_here == set(EXPECTED_LOSSES) and len(graded_here) >= 5
    assert patches == graded_here | {"nn_endless_reduce_loop"}
    for i, name in enumerate(sorted(patches)):
        make_submission(tmp_path / str(i), [name])  # raises if a patch no longer applies


def _grader_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "grading.checks" in ln and "sparknet-grade-" in ln]


@pytest.mark.slow
def test_endless_loop_times_out_and_grading_goes_on(tmp_path):
    sub = make_submission(tmp_path / "sub", ["nn_endless_reduce_loop"])
    limit = 20
    t0 = time.monotonic()
    results = grade.grade(
        sub,
        tmp_path / "out",
        time_limit=limit,
        only=["nn.tester_uneven_chunks", "nn.tester_one_partition"],
    )
    elapsed = time.monotonic() - t0
    by_id = {t["tags"][0]: t for t in results["tests"]}
    hung = by_id["nn.tester_uneven_chunks"]
    assert hung["score"] == 0 and hung["tags"][2] == "timeout"
    assert f"TIMEOUT: did not finish within its time limit of {limit} s" in hung["output"]
    # with one partition the loop ends: a fresh worker ran it after the kill, and it passed
    assert by_id["nn.tester_one_partition"]["status"] == "passed"
    # bounded by the limit plus two worker start-ups, not by the endless loop
    assert elapsed < limit + 2 * grade_config.load_config().startup_time_limit
    assert _grader_processes() == []  # the killed worker's process group is gone
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "TIMEOUT" in summary


# --------------------------------------------------------------------------- the starter (slow)


@pytest.fixture(scope="module")
def starter_tree(tmp_path_factory):
    tree = tmp_path_factory.mktemp("starter") / "starter"
    starter.write_starter(tree)
    return tree


def _make(tree: Path, *targets: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """A make target of the starter, run with this repository's venv (never re-installed)."""
    venv = Path(sys.prefix)
    return subprocess.run(
        ["make", "-C", str(tree), f"VENV={venv}", "-o", f"{venv}/.installed", *targets],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_starter_builds_and_runs_matrix_targets(starter_tree):
    out = _make(starter_tree, "build")
    assert out.returncode == 0, out.stderr[-2000:]
    assert list((starter_tree / "util").glob("_kernels*.so"))
    out = _make(starter_tree, "matrix-linear", "ITERS=1")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "iter    1" in out.stdout


@pytest.mark.slow
def test_starter_tester_fails_with_not_implemented(starter_tree):
    out = _make(starter_tree, "test-linear", "PYTEST_ARGS=-x -q -p no:cacheprovider")
    assert out.returncode != 0
    assert "LinearSpark.forward: not implemented yet (step 1: see README)" in out.stdout, (
        out.stdout[-3000:]
    )


def test_explain_names_the_students_file_and_line():
    task = RuntimeError(
        "Job aborted.\nTraceback (most recent call last):\n"
        '  File "/w/pyspark/worker.py", line 1, in main\n    process()\n'
        '  File "/tmp/grade/spark/nn.py", line 12, in chunk_forward\n    X, y = chunk\n'
        "ValueError: too many values to unpack (expected 2)\n"
    )
    text = grade_checks.explain(task)
    assert text.startswith("ERROR in a Spark task: ValueError: too many values to unpack")
    assert "spark/nn.py, line 12, in chunk_forward: X, y = chunk" in text
    assert "worker.py" not in text
    code = compile("def forward():\n    return 1 / 0\n", "/tmp/grade/spark/cnn.py", "exec")
    scope: dict = {}
    exec(code, scope)
    try:
        scope["forward"]()
    except ZeroDivisionError as e:
        text = grade_checks.explain(e)
    assert "ERROR: ZeroDivisionError" in text and "spark/cnn.py, line 2, in forward" in text
