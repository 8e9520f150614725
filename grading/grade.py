"""`make grade SUBMISSION=path`: grades a student submission (staff-only).

    python -m grading.grade SUBMISSION [--out DIR] [--only PATTERNS] [--time-limit S] [--gradescope]
    python -m grading.grade --bundle build/autograder.zip       the Gradescope autograder zip

SUBMISSION is a directory or a .zip holding spark/linear.py, spark/nn.py and
spark/cnn.py (or the three files at any depth, e.g. flat, as Gradescope
uploads them). The grader

1. reads only those three files (anything else is ignored, with a note);
2. checks each against the submission rules (RULES below): a file that breaks
   them is not run, and its classifier's checks score 0 with the reason;
3. builds a clean tree: the starter (no solutions anywhere), the built Cython
   extension, the graded checks (grading/checks.py), and the student's
   files on top; a missing or rejected file keeps the starter's stubs;
4. runs the checks of grading/grading.toml in a worker process with one Spark
   session, each check under its own time limit: on expiry or a crash the
   worker's whole process group (JVM and Python workers included) is killed,
   the check scores 0 with the reason, and a new worker runs the rest;
5. writes DIR/results.json (Gradescope's format) and DIR/summary.txt, and
   prints the summary.

Exit status: 0 when grading completed (whatever the score), 2 for a usage or
configuration error, 3 when the grader itself could not run the checks (Spark
did not start): results.json then says so and asks students to contact staff.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from grading import starter
from grading.checks import CHECK_IDS, MODELS
from util import models

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "grading" / "grading.toml"
AUTOGRADER = REPO / "grading" / "autograder"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")
STUDENT_FILES = {m.name: m.student_file for m in models.STEPS}
MAX_FILE_BYTES = 1_000_000
# what the graded worker needs beyond the starter
GRADER_FILES = ("grading/checks.py",)

RULES = """\
Submission rules (checked before anything runs; a file that breaks one scores 0 on its step):
- Only spark/linear.py, spark/nn.py and spark/cnn.py are graded; every other file is ignored
  and the grader uses the original.
- Outside the TODO regions the file keeps the starter's structure: the class with the same
  name and base classes, forward() and backward() with the same parameters and no decorators,
  and nothing else in the class. Module-level helper functions and constants are fine;
  module-level code that runs anything (calls) is not.
- Imports only from: numpy, pyspark, functools, operator, itertools, math, collections,
  typing, util.layer (`from util import layer`), spark.classifier, and the imports the
  starter file already has. Each file stands alone (no importing another step's file).
- No eval/exec/compile/open/__import__/getattr/setattr/delattr/globals/locals/vars/
  breakpoint/input/exit, no global statements, no dunder attributes (x.__dict__, ...), no
  assigning attributes of imported modules or classes, and none of the matrix version's
  training methods (gradients, loss_and_grads, train, step, predict, validate, accuracy_on,
  prepare): the Spark version has to compute its gradients itself.
"""

ALLOWED_MODULES = (
    "numpy",
    "pyspark",
    "functools",
    "operator",
    "itertools",
    "math",
    "collections",
    "typing",
    "__future__",
    "util.layer",
    "spark.classifier",
)
ALLOWED_FROM = {"util": {"layer"}, "util.network": {"Params"}}
FORBIDDEN_CALLS = {
    "eval",
    "exec",
    "compile",
    "open",
    "__import__",
    "getattr",
    "setattr",
    "delattr",
    "globals",
    "locals",
    "vars",
    "breakpoint",
    "input",
    "exit",
    "quit",
    "memoryview",
}
FORBIDDEN_ATTRS = {
    "gradients",
    "loss_and_grads",
    "train",
    "step",
    "predict",
    "validate",
    "accuracy_on",
    "prepare",
}


class GradeError(RuntimeError):
    """A configuration or usage error of the grader itself (exit status 2)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TestSpec:
    id: str
    name: str
    weight: float
    visibility: str
    time_limit: float
    number: str

    @property
    def model(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass
class Config:
    tests: list[TestSpec]
    spark_master: str = "local[2]"
    startup_time_limit: float = 240.0
    max_workers: int = 8


def load_config(path: Path = CONFIG) -> Config:
    """Reads and checks grading/grading.toml; raises GradeError naming what is wrong."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise GradeError(f"{path}: {e}") from None
    tests_raw = raw.get("tests", {})
    unknown = sorted(set(tests_raw) - set(CHECK_IDS))
    missing = sorted(set(CHECK_IDS) - set(tests_raw))
    if unknown or missing:
        raise GradeError(
            f"{path}: tests must match the checks of grading/checks.py; "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    tests = []
    per_model: dict[str, int] = {}
    for test_id, t in tests_raw.items():
        where = f'{path}: [tests."{test_id}"]'
        extra = set(t) - {"name", "weight", "visibility", "time_limit"}
        if extra:
            raise GradeError(f"{where}: unknown keys {sorted(extra)}")
        weight, limit = t.get("weight"), t.get("time_limit")
        vis = t.get("visibility", "visible")
        if not isinstance(weight, (int, float)) or weight < 0:
            raise GradeError(f"{where}: weight must be a number >= 0, got {weight!r}")
        if not isinstance(limit, (int, float)) or limit <= 0:
            raise GradeError(f"{where}: time_limit must be a number of seconds > 0, got {limit!r}")
        if vis not in VISIBILITIES:
            raise GradeError(f"{where}: visibility must be one of {VISIBILITIES}, got {vis!r}")
        model = test_id.split(".", 1)[0]
        per_model[model] = per_model.get(model, 0) + 1
        number = f"{MODELS.index(model) + 1}.{per_model[model]}"
        tests.append(
            TestSpec(test_id, t.get("name", test_id), float(weight), vis, float(limit), number)
        )
    g = raw.get("grader", {})
    return Config(
        tests,
        spark_master=str(g.get("spark_master", "local[2]")),
        startup_time_limit=float(g.get("startup_time_limit", 240)),
        max_workers=int(g.get("max_workers", 8)),
    )


# --------------------------------------------------------------------------- the submission


@dataclass
class Submission:
    files: dict[str, str] = field(default_factory=dict)  # "spark/nn.py" -> source text
    notes: list[str] = field(default_factory=list)  # for everyone
    problems: dict[str, str] = field(default_factory=dict)  # model -> why its tests score 0


def _norm(name: str) -> str | None:
    """A safe relative posix path for a member name, or None (absolute, .., junk)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts or p.parts[0] == "__MACOSX":
        return None
    if any(part.startswith("._") for part in p.parts):
        return None
    return str(p)


def _pick(paths: list[str], rel: str) -> tuple[str | None, list[str]]:
    """The member that is spark/<x>.py (or <x>.py anywhere); the others that also matched."""
    base = rel.split("/")[-1]
    exact = [p for p in paths if p == rel or p.endswith("/" + rel)]
    loose = exact or [p for p in paths if PurePosixPath(p).name == base]
    if not loose:
        return None, []
    loose.sort(key=lambda p: (p.count("/"), p))
    return loose[0], loose[1:]


def read_submission(path: Path) -> Submission:
    """The student's files from a directory or a zip; never raises for a bad submission."""
    sub = Submission()
    entries: dict[str, Path | zipfile.ZipInfo] = {}
    archive: zipfile.ZipFile | None = None
    try:
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if d not in starter.ALWAYS_EXCLUDED_DIRS)
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    rel = _norm(p.relative_to(path).as_posix())
                    if rel and p.is_file() and not p.is_symlink() and len(entries) < 10_000:
                        entries[rel] = p
        elif zipfile.is_zipfile(path):
            archive = zipfile.ZipFile(path)
            for info in archive.infolist()[:10_000]:
                rel = _norm(info.filename)
                if rel and not info.is_dir() and "__pycache__" not in rel:
                    entries[rel] = info
        else:
            sub.notes.append(f"the submission {path.name} is neither a directory nor a zip file")
            for model in MODELS:
                sub.problems[model] = "no readable submission"
            return sub

        used: set[str] = set()
        for model, rel in STUDENT_FILES.items():
            chosen, others = _pick(list(entries), rel)
            if chosen is None:
                sub.problems[model] = f"{rel} is not in the submission"
                continue
            used.add(chosen)
            if others:
                sub.notes.append(f"several files could be {rel}; graded {chosen}, ignored {others}")
                used.update(others)
            entry = entries[chosen]
            size = entry.file_size if isinstance(entry, zipfile.ZipInfo) else entry.stat().st_size
            if size > MAX_FILE_BYTES:
                sub.problems[model] = f"{chosen} is {size} bytes (limit {MAX_FILE_BYTES})"
                continue
            data = archive.read(entry) if archive else entry.read_bytes()  # type: ignore[union-attr,arg-type]
            try:
                sub.files[rel] = data.decode("utf-8")
            except UnicodeDecodeError:
                sub.problems[model] = f"{chosen} is not UTF-8 text"
        ignored = sorted(set(entries) - used)
        if ignored:
            protected = [p for p in ignored if (REPO / p).is_file()]
            shown = ", ".join(ignored[:10]) + (
                f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
            )
            sub.notes.append(f"ignored (only spark/linear.py, nn.py, cnn.py are graded): {shown}")
            if protected:
                sub.notes.append(
                    "protected files of the assignment are never taken from a submission; "
                    f"the grader used the originals of: {', '.join(protected[:10])}"
                )
    except (OSError, zipfile.BadZipFile, RuntimeError) as e:
        sub.notes.append(f"could not read the submission: {e}")
        for model in MODELS:
            sub.problems.setdefault(model, "the submission could not be read")
    finally:
        if archive:
            archive.close()
    return sub


# --------------------------------------------------------------------------- the rules


def _signature(fn: ast.FunctionDef) -> list[str]:
    a = fn.args
    return [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)] + [
        f"*{a.vararg.arg}" if a.vararg else "",
        f"**{a.kwarg.arg}" if a.kwarg else "",
    ]


def check_rules(model: str, source: str, starter_source: str) -> list[str]:
    """Rule violations of a student file ("line N: ..."), empty when it may run."""
    rel = STUDENT_FILES[model]
    try:
        tree = ast.parse(source, rel)
    except SyntaxError as e:
        return [f"line {e.lineno}: syntax error: {e.msg}"]
    ref = ast.parse(starter_source, rel)
    problems: list[str] = []
    cls_name = models.get(model).student_class

    # the starter's own imports stay allowed, whatever they are
    starter_imports = {
        ast.unparse(n) for n in ref.body if isinstance(n, (ast.Import, ast.ImportFrom))
    }
    imported_names: set[str] = set()

    def import_ok(node: ast.Import | ast.ImportFrom) -> bool:
        if ast.unparse(node) in starter_imports:
            return True
        if isinstance(node, ast.Import):
            return all(_module_ok(a.name) for a in node.names)
        if node.level:
            return False
        mod = node.module or ""
        if _module_ok(mod):
            return True
        return mod in ALLOWED_FROM and all(a.name in ALLOWED_FROM[mod] for a in node.names)

    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                imported_names.add((a.asname or a.name).split(".")[0])
            if not import_ok(node):
                problems.append(f"line {line}: `{ast.unparse(node)}` is not an allowed import")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in FORBIDDEN_CALLS:
                problems.append(f"line {line}: calls {node.func.id}(), which is not allowed")
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith("__") and node.attr.endswith("__"):
                problems.append(f"line {line}: uses the dunder attribute .{node.attr}")
            elif node.attr in FORBIDDEN_ATTRS:
                problems.append(
                    f"line {line}: uses .{node.attr}, part of the matrix version's training; "
                    "compute the gradients with the util.layer functions instead"
                )
        elif isinstance(node, ast.Name) and node.id in ("__builtins__", "__loader__", "__spec__"):
            problems.append(f"line {line}: uses {node.id}")
        elif isinstance(node, ast.Global):
            problems.append(f"line {line}: global statements are not allowed")

    # assigning attributes of imported modules/classes (monkeypatching)
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for t in targets:
            for sub in ast.walk(t):
                if isinstance(sub, ast.Attribute):
                    root = sub
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name) and root.id in imported_names | {cls_name}:
                        problems.append(
                            f"line {node.lineno}: assigns {ast.unparse(sub)}, an attribute of "
                            "an imported module or class"
                        )

    # module level: imports, helper functions, constants, the class; nothing that runs
    classes = {}
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)):
            if isinstance(node, ast.FunctionDef) and node.decorator_list:
                problems.append(f"line {node.lineno}: module-level functions take no decorators")
            continue
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # docstring
        if isinstance(node, ast.ClassDef):
            classes[node.name] = node
            if node.name != cls_name:
                problems.append(f"line {node.lineno}: only the class {cls_name} may be defined")
            continue
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and not any(
            isinstance(
                n,
                (
                    ast.Call,
                    ast.Lambda,
                    ast.ListComp,
                    ast.DictComp,
                    ast.SetComp,
                    ast.GeneratorExp,
                    ast.NamedExpr,
                    ast.Await,
                ),
            )
            for n in ast.walk(node)
        ):
            continue
        problems.append(
            f"line {node.lineno}: module-level code other than imports, functions, constants "
            f"and the class ({type(node).__name__})"
        )

    # the protected structure of the class, compared with the starter's
    ref_cls = next(n for n in ref.body if isinstance(n, ast.ClassDef) and n.name == cls_name)
    cls = classes.get(cls_name)
    if cls is None:
        problems.append(f"the class {cls_name} is missing (protected: keep the starter's class)")
        return problems
    if [ast.unparse(b) for b in cls.bases] != [
        ast.unparse(b) for b in ref_cls.bases
    ] or cls.keywords:
        problems.append(
            f"line {cls.lineno}: {cls_name} must keep the starter's base classes "
            f"({', '.join(ast.unparse(b) for b in ref_cls.bases)})"
        )
    if cls.decorator_list:
        problems.append(f"line {cls.lineno}: {cls_name} takes no decorators")
    ref_methods = {n.name: n for n in ref_cls.body if isinstance(n, ast.FunctionDef)}
    seen = set()
    for j, node in enumerate(cls.body):
        if j == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.FunctionDef) and node.name in ref_methods and node.name not in seen:
            seen.add(node.name)
            if _signature(node) != _signature(ref_methods[node.name]):
                problems.append(
                    f"line {node.lineno}: {cls_name}.{node.name} must keep the starter's "
                    f"parameters ({ast.unparse(ref_methods[node.name].args)})"
                )
            if node.decorator_list:
                problems.append(f"line {node.lineno}: {cls_name}.{node.name} takes no decorators")
            continue
        what = getattr(node, "name", type(node).__name__)
        problems.append(
            f"line {node.lineno}: {cls_name} may define only {', '.join(ref_methods)}; "
            f"found {what} (write helpers as functions inside the methods or at module level)"
        )
    for name in ref_methods:
        if name not in seen:
            problems.append(f"{cls_name}.{name} is missing (protected: keep the starter's methods)")
    return problems


def _module_ok(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in ALLOWED_MODULES)


# --------------------------------------------------------------------------- the clean tree


def build_tree(dest: Path, sub: Submission, root: Path = REPO) -> dict[str, str]:
    """Starter + built extension + graded checks + the student's accepted files.
    Returns model -> "submitted" | "starter" (what was placed for each student file)."""
    files = starter.starter_files(root)
    for rel in GRADER_FILES:
        files[rel] = (root / rel).read_bytes()
    placed = {}
    for model, rel in STUDENT_FILES.items():
        if model not in sub.problems and rel in sub.files:
            files[rel] = sub.files[rel].encode("utf-8")
            placed[model] = "submitted"
        else:
            placed[model] = "starter"
    for rel, data in files.items():
        p = dest / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    for so in sorted((root / "util").glob("_kernels*.so")) + sorted(
        (root / "util").glob("_kernels*.pyd")
    ):
        shutil.copy2(so, dest / "util" / so.name)
    return placed


# --------------------------------------------------------------------------- running the checks


@dataclass
class Outcome:
    passed: bool
    output: str
    seconds: float = 0.0
    status: str = "ran"  # ran | timeout | crash | not_run | grader_error


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the worker's whole process group (the JVM and Python workers are in it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    for _ in range(100):  # the group's other members die asynchronously
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _tail(path: Path, n: int = 2500) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if " WARN " not in ln and "log4j" not in ln]
    return "\n".join(lines)[-n:]


def run_checks(
    tree: Path, tests: list[TestSpec], config: Config, log: Path, env_extra: dict[str, str]
) -> dict[str, Outcome]:
    """Runs the checks in worker processes, one Spark session per worker, with time limits."""
    outcomes: dict[str, Outcome] = {}
    remaining = [t for t in tests]
    limits = {t.id: t.time_limit for t in tests}
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", **env_extra)
    workers = 0
    while remaining:
        if workers >= config.max_workers:
            for t in remaining:
                outcomes[t.id] = Outcome(
                    False,
                    "not run: too many timeouts/crashes in this "
                    "submission; the grader stopped starting workers",
                    status="not_run",
                )
            break
        workers += 1
        progress = tree / f".progress-{workers}.jsonl"
        progress.write_text("")
        with log.open("a") as logf:
            logf.write(f"\n===== worker {workers}: {' '.join(t.id for t in remaining)}\n")
            logf.flush()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "grading.checks",
                    "--progress",
                    str(progress),
                    "--master",
                    config.spark_master,
                    *(t.id for t in remaining),
                ],
                cwd=tree,
                env=env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        spawned = time.monotonic()
        ready, current, started, seen = False, None, 0.0, 0
        killed_for: str | None = None
        while True:
            exited = proc.poll() is not None
            lines = progress.read_text().splitlines()
            for raw in lines[seen:]:
                if not raw.endswith("}"):
                    break  # a line still being written
                seen += 1
                try:
                    ev = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if ev.get("event") == "ready":
                    ready = True
                elif ev.get("event") == "start":
                    current, started = ev.get("id"), time.monotonic()
                elif ev.get("event") == "end" and ev.get("id") == current:
                    outcomes[current] = Outcome(
                        bool(ev.get("passed")),
                        str(ev.get("output", "")),
                        float(ev.get("seconds", 0.0)),
                    )
                    remaining = [t for t in remaining if t.id != current]
                    current = None
            if exited:
                break
            now = time.monotonic()
            if current is not None and now - started > limits[current]:
                killed_for = "timeout"
                _kill_group(proc)
                outcomes[current] = Outcome(
                    False,
                    f"TIMEOUT: did not finish within its time limit of {limits[current]:g} s "
                    "(an endless loop, or far too slow); the grader stopped it and went on",
                    round(now - started, 1),
                    status="timeout",
                )
                remaining = [t for t in remaining if t.id != current]
                current = None
                break
            if not ready and now - spawned > config.startup_time_limit:
                killed_for = "startup"
                _kill_group(proc)
                break
            time.sleep(0.1)
        if killed_for is None:
            _kill_group(proc)  # an exited worker may leave a JVM behind
        if killed_for == "timeout":
            continue
        if not ready:
            why = (
                "did not start in time"
                if killed_for == "startup"
                else f"exited with status {proc.returncode} before starting"
            )
            for t in remaining:
                outcomes[t.id] = Outcome(
                    False,
                    f"GRADER ERROR (not your fault, please tell the course staff): the "
                    f"grading worker {why}:\n{_tail(log, 1500)}",
                    status="grader_error",
                )
            break
        if current is not None:  # the worker died in the middle of a check
            outcomes[current] = Outcome(
                False,
                f"CRASH: the check ended the grading process (exit status {proc.returncode}; "
                f"e.g. os._exit, a segfault or running out of memory).\n{_tail(log, 1200)}",
                round(time.monotonic() - started, 1),
                status="crash",
            )
            remaining = [t for t in remaining if t.id != current]
        elif remaining and proc.returncode == 0:
            for t in remaining:  # should not happen: the worker skipped checks
                outcomes[t.id] = Outcome(
                    False, "GRADER ERROR: the check was skipped", status="grader_error"
                )
            break
        elif remaining:  # died between checks
            nxt = remaining[0]
            outcomes[nxt.id] = Outcome(
                False,
                f"CRASH: the grading process died (exit status {proc.returncode}).\n"
                f"{_tail(log, 1200)}",
                status="crash",
            )
            remaining = remaining[1:]
    return outcomes


# --------------------------------------------------------------------------- results


def grade(
    submission: Path,
    out_dir: Path,
    config: Config | None = None,
    only: list[str] | None = None,
    time_limit: float | None = None,
) -> dict:
    """Grades one submission; writes out_dir/results.json and summary.txt; returns the results."""
    t0 = time.monotonic()
    config = config or load_config()
    tests = config.tests
    if only:
        tests = [t for t in tests if any(fnmatch.fnmatch(t.id, p) for p in only)]
        if not tests:
            raise GradeError(f"--only {only} selects none of {[t.id for t in config.tests]}")
    if time_limit:
        tests = [
            TestSpec(t.id, t.name, t.weight, t.visibility, time_limit, t.number) for t in tests
        ]
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "worker.log"
    log.write_text("")

    sub = read_submission(submission)
    for model, rel in STUDENT_FILES.items():
        if model in sub.problems or rel not in sub.files:
            continue
        problems = check_rules(model, sub.files[rel], starter.starter_text(rel))
        if problems:
            sub.problems[model] = (
                f"{rel} breaks the submission rules, so it was not run:\n"
                + "\n".join(f"  {rel} {p}" for p in problems)
            )

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
    notes = list(sub.notes)
    if grader_error:
        notes.insert(
            0,
            "The grader could not run some checks (not your fault): please tell the course staff.",
        )
    results = {
        "score": score,
        "execution_time": round(time.monotonic() - t0, 1),
        "output": "\n".join(notes) if notes else f"Score {score:g} / {max_score:g}.",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": results_tests,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    summary = format_summary(results, max_score)
    (out_dir / "summary.txt").write_text(summary)
    results["_grader_error"] = grader_error
    return results


def format_summary(results: dict, max_score: float) -> str:
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


# --------------------------------------------------------------------------- the Gradescope bundle


def write_bundle(dest: Path, root: Path = REPO) -> list[str]:
    """The Gradescope autograder zip: setup.sh and run_autograder at the top, then the starter
    tree (no solutions) with the staff grading tools. Gradescope unpacks it into
    /autograder/source; setup.sh builds the environment once, run_autograder grades."""
    files = starter.starter_files(root)  # checked: no solution text
    for rel in (
        *GRADER_FILES,
        "grading/grade.py",
        "grading/grading.toml",
        "grading/starter.py",
        starter.ASSIGNMENT,
    ):
        files[rel] = (root / rel).read_bytes()
    for name in ("setup.sh", "run_autograder"):
        files[name] = (AUTOGRADER / name).read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(files):
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if rel in ("setup.sh", "run_autograder") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[rel])
    tmp.replace(dest)
    return sorted(files)


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
    except (GradeError, starter.MarkerError) as e:
        print(f"grade: error: {e}", file=sys.stderr)
        return 2
    print((out / "summary.txt").read_text(), end="")
    print(f"\nresults: {out / 'results.json'}")
    return 3 if results["_grader_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
