"""The course assignment: starter generation, submission rules, grading (staff-only).

Proves that the solution gets full marks, the generated starter gets 0 but
builds and runs its matrix targets, realistic student mistakes
(tests/grading/mistakes/*.patch) lose exactly the checks that should catch them, and a
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

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from grading import bundle, grade, starter, submission
from grading import config as grade_config
from grading import tree as grade_tree
from spark import rules
from spark.contract import explain
from util import models
from util.models import REPO

MISTAKES = REPO / "tests" / "grading" / "mistakes"
KINDS = grade_config.KINDS
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
ALL_CHECKS = set(grade_config.CHECK_IDS)
GRADING_MODULES = tuple(
    f"grading/{m}.py"
    for m in (
        "__init__",
        "bundle",
        "channel",
        "config",
        "grade",
        "judge",
        "leaderboard",
        "results",
        "rules",
        "runner",
        "sandbox",
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


@pytest.fixture(scope="module")
def starter_files() -> dict[str, bytes]:
    """The starter, generated in memory (once per module)."""
    return starter.starter_files()


ABSENT_FROM_STARTER = {"grading", "trainer", "bench", "cluster"}  # packages the starter lacks


def test_starter_tree_has_no_solutions_and_no_staff_files(starter_files):
    files = starter_files
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
    assert not any(rel.startswith((".git/", ".venv/", "build/")) for rel in files)
    # the course and nothing else: no grader, trainer, benchmarks, cluster tools, their
    # tests, the tests holding near-solutions, or staff docs
    assert {rel.split("/")[0] for rel in files} == {
        *("util", "matrix", "spark", "tests", "data"),
        *("README.md", "Makefile", "setup.py", "pyproject.toml", ".gitignore"),
    }
    for staff in (
        "STAFF.md",
        "tests/grading/test_assignment.py",
        "tests/test_tester_defects.py",
        "tests/test_train.py",
        "tests/test_faults.py",
        "tests/test_bench.py",
        "tests/test_cluster.py",
    ):
        assert (REPO / staff).is_file() and staff not in files, staff
    assert not any(rel.startswith("tests/grading/") for rel in files)
    assert {"tests/test_layer.py", "tests/test_matrix.py", "data/cnn-pretrained.npz"} <= set(files)
    # self-contained: no starter module imports what the starter lacks
    for rel, data in files.items():
        if rel.endswith(".py"):
            for node in ast.parse(data, rel).body:
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
                for name in names:
                    assert name.split(".")[0] not in ABSENT_FROM_STARTER, (rel, name)


def test_starter_pyproject_declares_only_what_is_there(starter_files):
    files = starter_files
    ours, theirs = (
        tomllib.loads((REPO / "pyproject.toml").read_text()),
        tomllib.loads(files["pyproject.toml"].decode()),
    )
    assert "scripts" in ours["project"] and "scripts" not in theirs["project"]
    find = theirs["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["util", "util.*", "matrix", "spark"]
    assert set(theirs["project"]["optional-dependencies"]) == {"test"}
    # everything else is the repository's
    del ours["project"]["scripts"], ours["project"]["optional-dependencies"]["bench"]
    ours["tool"]["setuptools"]["packages"]["find"] = find
    assert theirs == ours
    # a starter's own pyproject.toml (the autograder bundle's tree) is taken as it is
    text = files["pyproject.toml"].decode()
    assert starter.starter_pyproject(text) == text
    with pytest.raises(starter.StarterError, match=r"pyproject.toml: expected exactly one"):
        starter.starter_pyproject(text.removeprefix(starter.PYPROJECT_HEADER))


@pytest.mark.parametrize(
    "target", ["train-nn", "evaluate", "pretrained-cnn", "bench", "profile-cnn", "starter", "grade"]
)
def test_starter_makefile_offers_no_absent_target(starter_files, tmp_path, target):
    (tmp_path / "Makefile").write_bytes(starter_files["Makefile"])
    out = subprocess.run(
        ["make", "-n", "-C", str(tmp_path), target], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2 and f"No rule to make target '{target}'" in out.stderr, out
    here = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert here.returncode == 0, here.stderr  # the repository has it


def test_write_starter_refuses_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(ValueError, match="--force"):
        starter.write_starter(tmp_path)


# --------------------------------------------------------------------------- no solution leaks

# The layer library and the matrix versions compute losses and gradients by design, and the
# layer library's unit tests check exactly that: the one place a loss chained with a backward
# pass belongs. Everywhere else in the starter such code would be (part of) a student's answer.
LEAK_SCAN_EXEMPT = (
    "util/",
    "matrix/",
    "tests/test_layer.py",
    "tests/test_kernels.py",
    "tests/test_fuzz.py",
)
SOLUTION_LINE_MIN = 20  # shorter solution lines ("X, y = chunk") are common code, not answers


def _called(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _sums(call: ast.Call) -> bool:
    """reduction="sum" by keyword, or "sum" given positionally to softmax_loss/loss_and_grads."""
    if any(
        k.arg == "reduction" and isinstance(k.value, ast.Constant) and k.value.value == "sum"
        for k in call.keywords
    ):
        return True
    return _called(call) in ("softmax_loss", "loss_and_grads") and any(
        isinstance(a, ast.Constant) and a.value == "sum" for a in call.args
    )


def solution_like_functions(rel: str, source: str) -> list[str]:
    """`file:line Qual.name: why` for every function that chains softmax_loss with a
    backward pass (`*_backward(`, `.backward(`) or sums per-chunk losses and gradients
    (`reduction="sum"`, `loss_and_grads(..., "sum")`), its nested functions included; only the
    innermost such function is named (`chunk_backward`, not also the `backward` holding it).
    A mean `loss_and_grads` is not counted: it is the matrix version's step over one batch
    (tests/test_matrix.py checks its gradients), not a chunk's contribution to a sum."""
    found: dict[str, tuple[int, list[str]]] = {}  # qualname -> (line, why)

    def visit(node: ast.AST, names: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            here = names
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                here = [*names, child.name]
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                calls = [c for c in ast.walk(child) if isinstance(c, ast.Call)]
                called = {_called(c) for c in calls}
                why = []
                if "softmax_loss" in called and any(
                    c == "backward" or c.endswith("_backward") for c in called
                ):
                    why.append("chains softmax_loss with a backward pass")
                if any(_sums(c) for c in calls):
                    why.append('sums per-chunk losses and gradients (reduction "sum")')
                if why:
                    found[".".join(here)] = (child.lineno, why)
            visit(child, here)

    visit(ast.parse(source, rel), [])
    return [
        f"{rel}:{line} {qual}: {'; '.join(why)}"
        for qual, (line, why) in found.items()
        if not any(other.startswith(qual + ".") for other in found)
    ]


def _normalised(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines()]


def solution_lines(root: Path = REPO) -> set[str]:
    """The lines of the solution regions of spark/*.py, whitespace-normalised, of 20+ chars,
    less those the layer library and the matrix versions hold too (util/, matrix/: given to
    students as they are, so such a line, e.g. `caches.append(cache)`, gives nothing away)."""
    lines: set[str] = set()
    for path in sorted((root / "spark").glob("*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        src = _normalised(text)
        for region in starter.find_regions(text, rel):
            lines.update(
                s for s in src[region.begin : region.end - 1] if len(s) >= SOLUTION_LINE_MIN
            )
    given = {
        s
        for top in ("util", "matrix")
        for path in (root / top).rglob("*.py")
        for s in _normalised(path.read_text(encoding="utf-8"))
    }
    return lines - given


def _docstring_lines(source: str) -> set[int]:
    """1-based numbers of the lines that hold a module, class or function docstring."""
    out: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                out.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return out


def solution_leaks(files: dict[str, bytes], needles: set[str]) -> list[str]:
    """Where a starter holds solution-like code: the AST scan of every Python file outside
    LEAK_SCAN_EXEMPT, and every line of any file that contains a solution line (the student
    files' docstrings excepted: they describe the records, in words)."""
    problems: list[str] = []
    for rel, data in sorted(files.items()):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # images, model files
        if rel.endswith(".py") and not rel.startswith(LEAK_SCAN_EXEMPT):
            problems += solution_like_functions(rel, text)
        skip = _docstring_lines(text) if rel in starter.STUDENT_FILES else set()
        for i, norm in enumerate(_normalised(text), 1):
            hits = [s for s in needles if s in norm] if i not in skip else []
            problems += [f"{rel}:{i}: holds the solution line {s!r}" for s in sorted(hits)]
    return problems


def test_leak_scan_finds_the_solution():
    """The scan can fail: on the solution's own files it finds every step's backward()."""
    needles = solution_lines()
    assert len(needles) >= 15, needles
    solution = {rel: (REPO / rel).read_bytes() for rel in starter.STUDENT_FILES}
    problems = solution_leaks(solution, needles)
    for rel, (_, name) in starter.STUDENT_FILES.items():
        cls = models.get(name).spark_class.rpartition(":")[2]
        assert any(
            p.startswith(f"{rel}:") and f" {cls}.backward" in p and "chains softmax_loss" in p
            for p in problems
        ), (rel, problems)
        assert any(p.startswith(f"{rel}:") and "holds the solution line" in p for p in problems)


def test_starter_holds_no_solution(starter_files):
    """Outside the layer library and the matrix versions, no starter function computes a
    summed loss and its gradients, and no starter file holds a line of the solution."""
    problems = solution_leaks(starter_files, solution_lines())
    assert problems == [], "the starter gives away (part of) the solution:\n" + "\n".join(problems)


# --------------------------------------------------------------------------- config and rules


def test_grading_config_is_complete():
    config = grade_config.load_config()
    assert [t.id for t in config.tests] == list(grade_config.CHECK_IDS)
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
    assert rules.check_rules(model, (REPO / rel).read_text()) == []
    assert rules.check_rules(model, starter_src) == []


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
    problems = rules.check_rules("linear", _linear_with(old, new))
    assert any(message in p for p in problems), problems


def test_helpers_and_numpy_are_allowed():
    src = _linear_with(
        "from util import layer",
        "import numpy as np\nfrom functools import reduce\n\nfrom util import layer\n\n"
        "SCALE = 1.0\n\n\ndef helper(a):\n    return np.asarray(a) * SCALE",
    )
    assert rules.check_rules("linear", src) == []


def test_syntax_error_is_a_rule_violation():
    problems = rules.check_rules("nn", "def broken(:\n")
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


def test_unreadable_submission_is_a_result_not_a_crash(tmp_path, student_user):
    junk = tmp_path / "sub.zip"
    junk.write_bytes(b"not a zip at all")
    sub = submission.read_submission(junk)
    assert set(sub.problems) == {"linear", "nn", "cnn"}
    results = grade.grade(junk, tmp_path / "out")  # no worker starts: nothing may run
    assert results["score"] == 0 and len(results["tests"]) == len(ALL_CHECKS)
    assert json.loads((tmp_path / "out" / "results.json").read_text())["score"] == 0


def test_rule_violation_scores_zero_for_its_step_only_without_running(tmp_path, student_user):
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
        assert t["status"] == "failed" and t["tags"][2] == "rules"


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
        assert 'grading.grade "$ROOT/submission" --gradescope' in z.read("run_autograder").decode()
        assert '-m grading.grade "$SRC/spark" --gradescope' in z.read("setup.sh").decode()
    assert {
        "grading/grade.py",
        "grading/runner.py",
        "grading/grading.toml",
        "grading/starter.py",
        "setup.py",
        "util/_kernels.pyx",
    } <= set(names)
    assert not any(n.startswith("tests/grading/") for n in names)
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
    assert sorted(p.name for p in (tmp_path / "grading").iterdir()) == sorted(
        Path(rel).name for rel in grade_tree.WORKER_FILES
    )
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
    """The step runner imports spark.<its model> only (never spark.models); with one process
    per step, a mistake in one step cannot change another step's checks."""
    tree = ast.parse((REPO / "grading" / "runner.py").read_text())
    imported = {
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    }
    assert not {"spark.models", "spark.linear", "spark.nn", "spark.cnn"} & imported
    # and at run time: loading step 1's class imports no other step's file
    probe = (
        "import sys; from grading import runner; runner.student_class('linear'); "
        "print(sorted(m for m in sys.modules if m in ('spark.linear', 'spark.nn', 'spark.cnn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['spark.linear']"]


# --------------------------------------------------------------------------- grading runs (slow)


@pytest.fixture(scope="module")
def graded(tmp_path_factory, student_user):
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


def _runner_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "grading.runner" in ln]


@pytest.mark.slow
def test_endless_loop_stops_its_step_and_grading_goes_on(tmp_path, student_user):
    """A hang costs its step one time limit: the hung check times out, the step's later
    checks are not run, the next step runs in full, and no process of the step is left."""
    sub = make_submission(tmp_path / "sub", ["nn_endless_reduce_loop"])
    limit = 20
    t0 = time.monotonic()
    results = grade.grade(
        sub,
        tmp_path / "out",
        time_limit=limit,
        only=["nn.tester_uneven_chunks", "nn.tester_one_partition", "cnn.forward"],
    )
    elapsed = time.monotonic() - t0
    by_id = {t["tags"][0]: t for t in results["tests"]}
    hung = by_id["nn.tester_uneven_chunks"]
    assert hung["score"] == 0 and hung["tags"][2] == "timeout"
    assert f"TIMEOUT: did not finish within {limit} s" in hung["output"]
    after = by_id["nn.tester_one_partition"]
    assert after["tags"][2] == "not_run"
    assert "not run: step 2 (nn) stopped in check tester_uneven_chunks" in after["output"]
    assert by_id["cnn.forward"]["status"] == "passed"  # the next step, in a process of its own
    # bounded by the limit plus two step start-ups, not by the endless loop
    assert elapsed < limit + 2 * grade_config.load_config().startup_time_limit
    assert _runner_processes() == []
    assert "TIMEOUT" in (tmp_path / "out" / "summary.txt").read_text()


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
    text = explain(task)
    assert text.startswith("ERROR in a Spark task: ValueError: too many values to unpack")
    assert "at spark/nn.py:12 in chunk_forward: X, y = chunk" in text
    assert "worker.py" not in text
    code = compile("def forward():\n    return 1 / 0\n", "/tmp/grade/spark/cnn.py", "exec")
    scope: dict = {}
    exec(code, scope)
    try:
        scope["forward"]()
    except ZeroDivisionError as e:
        text = explain(e)
    assert "ERROR: ZeroDivisionError" in text and "at spark/cnn.py:2 in forward" in text
