"""`make starter`: writes the student starter from this repository (the solution).

    python -m grading.starter [--out build/starter] [--force]

The starter is the course and nothing else: the repository (tracked and
untracked-but-not-ignored files, as `git ls-files` sees them) minus the
staff-only files listed in STAFF_ONLY (the grader, the trainer, the
benchmarks, the cluster tools, their tests, the tests that hold
near-solutions, the docs), with

- every `# BEGIN SOLUTION` ... `# END SOLUTION` region of a Python file
  replaced by a `# TODO:` hint and `raise NotImplementedError(...)` at the
  region's indentation (nbgrader's ClearSolutions, for .py files);
- README.md replaced by docs/assignment.md (the assignment text);
- pyproject.toml without the trainer's package and commands (PYPROJECT_EDITS).

Markers are lines holding only `# BEGIN SOLUTION` or `# END SOLUTION`.
Malformed markers (BEGIN without END, nested BEGIN, END without BEGIN, a
region outside a function) are a `MarkerError` naming the file and line, and
no starter is written. The generated tree is checked before it is written:
every Python file compiles and no file contains solution marker text.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from util import models

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "build" / "starter"
ASSIGNMENT = "docs/assignment.md"  # becomes the starter's README.md

# The one list of what students do not get (fnmatch patterns on repo-relative paths;
# a pattern ending in "/" excludes a whole directory). The starter is the course and nothing
# else: util/, matrix/, spark/, the tests of the steps and of the layer library, data/, the
# assignment text as README.md, Makefile, setup.py and pyproject.toml (see starter_pyproject).
STAFF_ONLY = (
    "STAFF.md",
    "README.md",  # the project README; the starter's README.md is docs/assignment.md
    "docs/",  # design notes, running on a cluster, plots; docs/assignment.md becomes README.md
    "grading/",
    "trainer/",
    "bench/",
    "cluster/",
    "tests/grading/",  # the grader's and the assignment's tests, mistakes, hostile submissions
    "tests/test_tester_defects.py",  # near-solutions of backward(), one defect each
    "tests/test_train.py",
    "tests/test_aggregate.py",
    "tests/test_executors.py",
    "tests/test_sources.py",
    "tests/test_faults.py",
    "tests/test_bench.py",
    "tests/test_scaling.py",
    "tests/test_cluster.py",
    ".ci/",
    ".github/",
)
# pyproject.toml without what the starter lacks: the trainer package and its commands
# ([project.scripts]), the benchmarks' extra. Each text must be in the repository's file
# exactly once, or no starter is written (update these with pyproject.toml). The result
# starts with PYPROJECT_HEADER, so that a starter's own pyproject.toml (the autograder
# bundle's tree, which the grader makes its clean trees from) is taken as it is.
PYPROJECT_HEADER = (
    "# The starter's pyproject.toml (written by grading/starter.py): the project's without\n"
    "# the trainer's package and commands and the benchmarks' extra, which are not here.\n"
)
PYPROJECT_EDITS = (
    (
        "[project.scripts]\n"
        'sparknet-train = "trainer.train:main"\n'
        'sparknet-evaluate = "trainer.evaluate:main"\n\n',
        "",
    ),
    ('bench = ["torch==2.13.0"]  # the CPU build; see README "Performance"\n', ""),
    (
        "# What is installed (and packed for cluster executors): the shared core, the course "
        "and the\n# trainer. The staff tools (grading/, bench/, cluster/) run from the "
        "repository only.\n",
        "# What is installed: the shared core and the course.\n",
    ),
    (
        'include = ["util", "util.*", "matrix", "spark", "trainer"]\n',
        'include = ["util", "util.*", "matrix", "spark"]\n',
    ),
)
# Never part of any copy of the tree (used when there is no git to ask).
ALWAYS_EXCLUDED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "build",
    "dist",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "dumps",
    "logs",
    "runs",
    "checkpoints",
    "metastore_db",
    "spark-warehouse",
}
ALWAYS_EXCLUDED_FILES = ("*.pyc", "*.so", "*.pyd", "*.egg-info", "util/_kernels.c", "*.log")

# The files students write, their step and the classifier they hold.
STUDENT_FILES = {m.student_file: (m.step, m.name) for m in models.STEPS}

# What replaces each region: keyed by (file, "Class.method"). Unknown regions get a generic hint.
HINTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("spark/linear.py", "LinearSpark.forward"): (
        "map every chunk (X, y) to (scores, [cache], y) with layer.linear_forward,",
        "reading the weights from params.value inside the function you map.",
        "Keep the offset key (mapValues) and return the RDD: no Spark action here.",
    ),
    ("spark/linear.py", "LinearSpark.backward"): (
        'per chunk: layer.softmax_loss(scores, y, reduction="sum"), then',
        'layer.linear_backward -> (loss_sum, n, {"W1": dW1, "b1": db1});',
        "then combine all chunks with one treeReduce(add_results) and return the result.",
    ),
    ("spark/nn.py", "NNSpark.forward"): (
        "as in step 1, but three layers: linear (W1, b1), ReLU, linear (W3, b3);",
        "keep the three caches in order in the record.",
    ),
    ("spark/nn.py", "NNSpark.backward"): (
        "summed softmax loss, then the layers in reverse order, each with its own cache;",
        "return the four gradients and reduce over all chunks as in step 1.",
    ),
    ("spark/cnn.py", "CNNSpark.forward"): (
        "run the layer table over each chunk: for every spec in `layers`,",
        "spec.forward(out, params.value) gives the next out and that layer's cache;",
        "keep one cache per layer, in layer order.",
    ),
    ("spark/cnn.py", "CNNSpark.backward"): (
        "summed softmax loss, then spec.backward(dout, cache) for the layers in reverse",
        "order, collecting every layer's gradients in one dict; reduce as before.",
    ),
}

_MARKER = re.compile(r"^(?P<indent>[ \t]*)#\s*(?P<kind>BEGIN|END) SOLUTION\s*$")
_MARKER_TEXT = re.compile(r"(BEGIN|END) SOLUTION")


class MarkerError(ValueError):
    """Malformed solution markers; the message names the file and line."""


class StarterError(ValueError):
    """A repository file the starter transforms is not as the transformation expects."""


@dataclass(frozen=True)
class Region:
    begin: int  # 1-based line of the BEGIN marker
    end: int  # 1-based line of the END marker
    indent: str
    qualname: str  # "Class.method" of the enclosing function


def find_regions(text: str, path: str) -> list[Region]:
    """The solution regions of a Python source, checked; raises MarkerError."""
    lines = text.splitlines()
    spans: list[tuple[int, int, str]] = []
    open_at: tuple[int, str] | None = None
    for i, line in enumerate(lines, 1):
        m = _MARKER.match(line)
        if not m:
            if _MARKER_TEXT.search(line) and line.lstrip().startswith("#"):
                raise MarkerError(
                    f"{path}:{i}: malformed solution marker {line.strip()!r} "
                    "(a marker line holds only '# BEGIN SOLUTION' or '# END SOLUTION')"
                )
            continue
        if m["kind"] == "BEGIN":
            if open_at is not None:
                raise MarkerError(
                    f"{path}:{i}: BEGIN SOLUTION inside the region opened at line {open_at[0]} "
                    "(regions cannot nest)"
                )
            open_at = (i, m["indent"])
        else:
            if open_at is None:
                raise MarkerError(f"{path}:{i}: END SOLUTION without a BEGIN SOLUTION")
            if m["indent"] != open_at[1]:
                raise MarkerError(
                    f"{path}:{i}: END SOLUTION is indented differently from its BEGIN SOLUTION "
                    f"at line {open_at[0]}"
                )
            spans.append((open_at[0], i, open_at[1]))
            open_at = None
    if open_at is not None:
        raise MarkerError(f"{path}:{open_at[0]}: BEGIN SOLUTION without an END SOLUTION")
    if not spans:
        return []
    for b, e, indent in spans:
        for j in range(b, e - 1):
            body = lines[j]
            if body.strip() and not body.startswith(indent):
                raise MarkerError(
                    f"{path}:{j + 1}: line of the region starting at line {b} is indented "
                    "less than its BEGIN SOLUTION marker"
                )
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as e:
        raise MarkerError(f"{path}:{e.lineno}: the solution does not parse: {e.msg}") from None
    return [Region(b, e, indent, _enclosing(tree, b, path)) for b, e, indent in spans]


def _enclosing(tree: ast.Module, line: int, path: str) -> str:
    """ "Class.method" (or "function") of the innermost function containing `line`."""
    best: list[str] = []

    def visit(node: ast.AST, names: list[str]) -> None:
        nonlocal best
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if child.lineno <= line <= (child.end_lineno or child.lineno):
                    here = [*names, child.name]
                    if not isinstance(child, ast.ClassDef):
                        best = here
                    visit(child, here)

    visit(tree, [])
    if not best:
        raise MarkerError(f"{path}:{line}: a solution region must be inside a function or method")
    return ".".join(best)


def step_of(path: str) -> int | None:
    return STUDENT_FILES.get(path, (None, None))[0]


def stub_lines(region: Region, path: str) -> list[str]:
    """The `# TODO:` hint and the raise that replace a region."""
    step = step_of(path)
    hint = HINTS.get((path, region.qualname), (f"implement {region.qualname}.",))
    where = f"step {step}: see README" if step else "see README"
    out = [f"{region.indent}# TODO: {hint[0]}"]
    out += [f"{region.indent}#       {h}" for h in hint[1:]]
    message = f"{region.qualname}: not implemented yet ({where})"
    out.append(f'{region.indent}raise NotImplementedError("{message}")')
    return out


def clear_solutions(text: str, path: str) -> tuple[str, list[Region]]:
    """The source with every region replaced by its stub, and the regions."""
    regions = find_regions(text, path)
    if not regions:
        return text, []
    lines = text.splitlines()
    out: list[str] = []
    pos = 0  # 0-based index of the next line to copy
    for r in regions:
        out += lines[pos : r.begin - 1]
        out += stub_lines(r, path)
        pos = r.end
    out += lines[pos:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else ""), regions


# --------------------------------------------------------------------------- the file list


def _excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if p.endswith("/"):
            if rel.startswith(p):
                return True
        elif fnmatch.fnmatch(rel, p):
            return True
    return False


def repo_files(root: Path = REPO) -> list[str]:
    """Repo-relative paths of the repository: tracked plus untracked-not-ignored files
    (`git ls-files`), or, without git, a walk that skips build products and tool state."""
    try:
        out = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            check=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        if Path(top).resolve() != root.resolve():
            raise subprocess.CalledProcessError(1, "git")  # root is inside another repo: walk
        files = sorted({f for f in out.split("\0") if f and (root / f).is_file()})
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(
                d for d in dirnames if d not in ALWAYS_EXCLUDED_DIRS and not d.endswith(".egg-info")
            )
            for name in filenames:
                rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
                files.append(rel)
        files.sort()
    return [f for f in files if not _excluded(f, ALWAYS_EXCLUDED_FILES)]


def starter_files(root: Path = REPO) -> dict[str, bytes]:
    """Every file of the starter, repo-relative path -> content. Raises MarkerError."""
    out: dict[str, bytes] = {}
    for rel in repo_files(root):
        if _excluded(rel, STAFF_ONLY):
            continue
        data = (root / rel).read_bytes()
        if rel.endswith(".py"):
            text, _ = clear_solutions(data.decode("utf-8"), rel)
            data = text.encode("utf-8")
        elif rel == "pyproject.toml":
            data = starter_pyproject(data.decode("utf-8")).encode("utf-8")
        out[rel] = data
    out["README.md"] = (root / ASSIGNMENT).read_bytes()
    check_starter(out)
    return out


def starter_pyproject(text: str) -> str:
    """The starter's pyproject.toml: PYPROJECT_HEADER and the repository's file with
    PYPROJECT_EDITS applied (a starter's own file, with the header, is returned as it is).

    Raises StarterError naming the text that is not in the file exactly once.
    """
    if text.startswith(PYPROJECT_HEADER):
        return text
    for old, new in PYPROJECT_EDITS:
        if text.count(old) != 1:
            raise StarterError(
                f"pyproject.toml: expected exactly one {old.splitlines()[0]!r} with the text "
                f"that PYPROJECT_EDITS changes, found {text.count(old)}; update PYPROJECT_EDITS "
                "in grading/starter.py to match pyproject.toml"
            )
        text = text.replace(old, new)
    return PYPROJECT_HEADER + text


def check_starter(files: dict[str, bytes]) -> None:
    """No solution marker text anywhere; every Python file compiles; each student file has stubs."""
    for rel, data in files.items():
        if b"BEGIN SOLUTION" in data or b"END SOLUTION" in data:
            raise MarkerError(f"{rel}: solution marker text would leak into the starter")
        if rel.endswith(".py"):
            try:
                compile(data, rel, "exec")
            except SyntaxError as e:
                raise MarkerError(
                    f"{rel}:{e.lineno}: the starter version does not compile: {e.msg}"
                ) from None
    for rel in STUDENT_FILES:
        if rel not in files:
            raise MarkerError(f"{rel}: a student file is missing from the repository")
        if b"not implemented yet" not in files[rel]:
            raise MarkerError(f"{rel}: has no solution regions, so students would get the solution")


def starter_text(rel: str, root: Path = REPO) -> str:
    """The starter version of one file of the repository (for the grader's checks)."""
    text, _ = clear_solutions((root / rel).read_text(encoding="utf-8"), rel)
    return text


def write_starter(out_dir: Path, root: Path = REPO, force: bool = False) -> list[str]:
    """Writes the starter into out_dir (replacing a previous starter); returns the files."""
    files = starter_files(root)  # fails before anything is touched
    out_dir = out_dir.resolve()
    if out_dir == root.resolve() or root.resolve().is_relative_to(out_dir):
        raise ValueError(f"refusing to write the starter over the repository itself: {out_dir}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (force or (out_dir / ".starter").exists()):
            raise ValueError(
                f"{out_dir} exists and was not written by this tool; use --force to replace it"
            )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".starter-", dir=out_dir.parent))
    try:
        for rel, data in files.items():
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            src = root / rel
            if src.exists() and os.access(src, os.X_OK):
                dest.chmod(0o755)
        (tmp / ".starter").write_text("generated by grading/starter.py; safe to delete\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m grading.starter", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--force", action="store_true", help="replace a non-starter directory")
    args = parser.parse_args(argv)
    try:
        files = write_starter(args.out, force=args.force)
    except (MarkerError, ValueError) as e:
        print(f"starter: error: {e}", file=sys.stderr)
        return 1
    print(f"starter: wrote {len(files)} files to {args.out}")
    for rel in STUDENT_FILES:
        print(f"  {rel}: solution regions replaced by stubs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
