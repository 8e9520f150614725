"""Hostile submissions, graded as Gradescope grades them (run_autograder as root, submitted
code as the student user): each must score exactly what its honest content deserves, and
after each grading the grader's own results.json stands (its score is the sum of its
checks, every entry is one of grading.toml's checks), the grader's files are unchanged and
no process of the student user is left.

Each payload is a small file in tests/grading/hostile/ whose docstring says what it tries
and holds a header the tests read:

    target: linear|nn|cnn (several: the same payload in each)    the student file it goes into
    base:   solution|starter                                     the rest of that file
    where:  import|forward        appended at module level | the first statements of forward()
                                  (for forward, its top-level imports go to module level)
    rules:  on|off                off: [grader] rules = false for that grading, to show that
                                  the process boundary holds for code the rules would refuse
    score:  N                     what the step deserves

`from common import ...` in a payload is replaced by hostile/common.py (how an attacker
finds the grader's files). The student files a grading does not name are the solution. To
keep CI short, one grading runs three payloads, one per step, and each step's score is
checked on its own (the steps run in separate processes).

grading    step   case              what it tries                                      expected
---------- ------ ----------------- -------------------------------------------------- ---------
tamper     linear rewrite_files     overwrite grade.py, grading.toml, run_autograder,  0
                                    the venv, the tree's contract.py and tester.py
           nn     forge_results     write a 100-point results.json at import           0
           cnn    (solution)                                                           50
background linear background_forger double fork + setsid, rewrite results.json         0
                                    after the grader exits (retries for 30 s)
           nn     daemon            a forked daemon sleeping 600 s                     30
           cnn    read_config       read grading.toml, grade.py, results.json, other   0, no
                                    users' environ and fds; print and raise them       leak
forgery    linear forged_frames     frames with the expected numbers (the tree's       0, rules
                                    reference functions) on the grader's pipe
           cnn    forged_bench      compute the benchmark's losses itself, send them   0, rules
                                    all at once (the leaderboard)
                                    (both: rules on; with the rules off they pass, see
                                    STAFF.md "Limits": the numbers are right)
frames     nn     tmpfs_memory      2.5 GB in /dev/shm, above the 2 GB memory limit    0, MEMORY
           cnn    deep_json_frame   a frame whose JSON meta is nested 100000 deep      0, crash
rules      linear memory_hog        np.ones of 20 GB in forward() (rules on)           0, MEMORY
           nn     methodcaller      operator.methodcaller("loss_and_grads")            0, rules
           cnn    output_flood      print 200 MB in every forward() call               50
endless    all    endless_loop      `while True: pass` first in every forward(),       0, in
                                    with the shipped limits                            budget
bomb       linear fork_bomb         a shell fork bomb at import, running 10 s          0
           nn cnn (solution)                                                           30 + 50
escape     linear signal_everyone   SIGSTOP/SIGKILL every foreign pid, open its        0
                                    /proc/pid/mem, ptrace the grader
           nn     network_escape    TCP to public addresses and this machine's own     0
           cnn    fill_disk         3 GB in $TMPDIR; files in /tmp, /var/tmp, /dev/shm 0
patch      linear patch_libraries   patch util.layer and numpy (executors too)         2
           nn     fd_forge          fake verdicts on fds 0-50, fake results files      0
           cnn    huge_shape_frame  a frame whose array claims 2**45 float64           0, crash
upload     linear (upload)          symlinks to grading.toml and /etc/shadow; a zip    0
                                    bomb holding spark/linear.py (1 GiB)
           nn     (upload)          a malicious __pycache__/nn.cpython-*.pyc           30
           cnn    (upload)          protected files: spark/contract.py, the runner,    50
                                    grading.toml, sitecustomize.py

Slow (about 10 gradings of 30-60 s, the endless loops about 2.5 minutes): marked slow, run
as root only (where the grader drops to the student user). The sandbox kills every process
of the student user, so two gradings on one machine spoil each other: each grading waits
until no other grader and no student process is running, and is graded again once if
another grading started meanwhile.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import io
import json
import os
import pwd
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from grading import channel, starter, tree
from grading import config as grade_config
from grading.sandbox import MARKER, Sandbox
from tests.grading.conftest import STUDENT_USER, Graded, student_processes
from util.models import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2400),  # a grading, plus waiting for another engineer's to end
    pytest.mark.skipif(
        os.geteuid() != 0, reason="hostile submissions need a root grader (the student user)"
    ),
]

HOSTILE = Path(__file__).resolve().parent / "hostile"
MODELS = ("linear", "nn", "cnn")
HEADER_KEYS = ("target", "base", "where", "rules", "score")
COMMON_IMPORT = re.compile(r"^from common import [\w, ]+\n", re.M)
REPORT = re.compile(r'HOSTILE (\w+): (\{".*\})')
FORGER_WAIT = 10  # s after run_autograder returns (the forger acts within 0.2 s)
TMPFS_FILES = "/dev/shm/sparknet-hostile-tmpfs-"
SHARED_DIRS = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))

# grading -> model -> payload case (None: the solution); "upload" builds its own upload
# (in the order the tests use them: the gradings that show holes in the grader come last)
GRADINGS: dict[str, dict[str, str | None]] = {
    "tamper": {"linear": "rewrite_files", "nn": "forge_results", "cnn": None},
    "background": {"linear": "background_forger", "nn": "daemon", "cnn": "read_config"},
    "rules": {"linear": "memory_hog", "nn": "methodcaller", "cnn": "output_flood"},
    "forgery": {"linear": "forged_frames", "nn": None, "cnn": "forged_bench"},
    "endless": {"linear": "endless_loop", "nn": "endless_loop", "cnn": "endless_loop"},
    "bomb": {"linear": "fork_bomb", "nn": None, "cnn": None},
    "escape": {"linear": "signal_everyone", "nn": "network_escape", "cnn": "fill_disk"},
    "upload": {"linear": None, "nn": None, "cnn": None},
    "patch": {"linear": "patch_libraries", "nn": "fd_forge", "cnn": "huge_shape_frame"},
    "frames": {"linear": None, "nn": "tmpfs_memory", "cnn": "deep_json_frame"},
}
# rules-on payloads whose point is that the rules refuse them
REFUSED_BY_RULES = {"methodcaller", "forged_frames", "forged_bench"}
UPLOAD_EXPECTED = {"linear": 0.0}  # the rest of the upload grading is the solution's


# --------------------------------------------------------------------------- payloads


@dataclass(frozen=True)
class Payload:
    case: str
    summary: str  # the docstring's first paragraph: what it tries
    targets: tuple[str, ...]
    base: str
    where: str
    rules: bool
    score: float
    code: str  # without the docstring, common.py inlined


def _body(path: Path) -> tuple[str, str]:
    """(the module docstring, the code after it) of a payload file."""
    text = path.read_text()
    module = ast.parse(text)
    doc = ast.get_docstring(module) or ""
    first = module.body[0]
    if not doc:
        return "", text
    lines = text.splitlines(keepends=True)
    return doc, "".join(lines[first.end_lineno :])


def load_payload(case: str) -> Payload:
    doc, code = _body(HOSTILE / f"{case}.py")
    header = dict(re.findall(r"^(\w+):\s*(.+?)\s*$", doc, re.M))
    missing = [k for k in HEADER_KEYS if k not in header]
    assert not missing, f"hostile/{case}.py: header lacks {missing}"
    targets = tuple(header["target"].split())
    assert set(targets) <= set(MODELS), (case, targets)
    assert header["base"] in ("solution", "starter") and header["where"] in ("import", "forward")
    assert header["rules"] in ("on", "off"), (case, header["rules"])
    common = _body(HOSTILE / "common.py")[1]
    return Payload(
        case,
        " ".join(doc.split("\n\n")[0].split()),
        targets,
        header["base"],
        header["where"],
        header["rules"] == "on",
        float(header["score"]),
        COMMON_IMPORT.sub(lambda _: common, code),
    )


def solution_text(model: str) -> str:
    return (REPO / "spark" / f"{model}.py").read_text()


def base_text(model: str, base: str) -> str:
    rel = f"spark/{model}.py"
    return solution_text(model) if base == "solution" else starter.starter_text(rel)


def _split_imports(code: str) -> tuple[str, str]:
    """(top-level import statements, every other statement) of payload code."""
    lines = code.splitlines(keepends=True)
    imports, rest = [], []
    for node in ast.parse(code).body:
        part = "".join(lines[node.lineno - 1 : node.end_lineno])
        (imports if isinstance(node, (ast.Import, ast.ImportFrom)) else rest).append(part)
    return "".join(imports), "".join(rest)


def compose(payload: Payload, model: str) -> str:
    """The student file `model` of a grading: its base with the payload in place."""
    text = base_text(model, payload.base)
    marker = f"# ---------------- hostile payload: {payload.case}\n"
    if payload.where == "import":
        return f"{text.rstrip()}\n\n\n{marker}{payload.code}"
    imports, statements = _split_imports(payload.code)
    module = ast.parse(text)
    cls = next(n for n in module.body if isinstance(n, ast.ClassDef))
    forward = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward")
    after = forward.body[0].end_lineno  # the docstring
    indent = " " * (forward.col_offset + 4)
    inserted = marker + statements
    body = "".join(indent + ln if ln.strip() else ln for ln in inserted.splitlines(True))
    lines = text.splitlines(keepends=True)
    composed = "".join(lines[:after]) + body + "".join(lines[after:])
    return f"{composed.rstrip()}\n\n\n{marker}{imports}"


def grading_payloads(name: str) -> dict[str, Payload]:
    return {m: load_payload(c) for m, c in GRADINGS[name].items() if c}


def grading_rules(name: str) -> bool:
    """[grader] rules for a grading: all its payloads agree."""
    flags = {p.rules for p in grading_payloads(name).values()} or {True}
    assert len(flags) == 1, f"grading {name}: payloads disagree on rules: {flags}"
    return flags.pop()


def grading_files(name: str) -> dict[str, str]:
    """The upload (flat, as Gradescope uploads it): model.py -> text."""
    payloads = grading_payloads(name)
    return {
        f"{m}.py": compose(payloads[m], m) if m in payloads else solution_text(m) for m in MODELS
    }


# --------------------------------------------------------------------------- the machine


def _student_uid() -> int:
    return pwd.getpwnam(STUDENT_USER).pw_uid


def _foreign_graders(root: Path) -> list[str]:
    """Grading runs on this machine that are not ours (the sandbox kills by uid)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [
        ln.strip()
        for ln in out.splitlines()
        if ("grading.grade" in ln or "grading.timing" in ln) and str(root) not in ln
    ]


def _wait_for_quiet(root: Path, timeout: float = 1200) -> None:
    deadline = time.monotonic() + timeout
    while _foreign_graders(root) or student_processes():
        if time.monotonic() > deadline:
            pytest.skip(
                "another grading kept running on this machine; the sandbox kills every process "
                f"of {STUDENT_USER}, so gradings cannot overlap: {_foreign_graders(root)[:2]}"
            )
        time.sleep(5)


def _grading_markers() -> set[bytes]:
    """The grading-run markers (grading/sandbox.py MARKER) in the environment of the student
    user's processes: one per grading run that has processes."""
    uid, found = _student_uid(), set()
    prefix = f"{MARKER}=".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                found |= {v for v in f.read().split(b"\0") if v.startswith(prefix)}
    return found


@contextlib.contextmanager
def _watch_for_foreign(root: Path):
    """Yields a list that gets what showed another grading while the block ran: a grader
    process not ours, or student processes of two grading runs at once."""
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(1.0):
            if not seen:
                seen.extend(_foreign_graders(root)[:1])
            if not seen and len(_grading_markers()) > 1:
                seen.append("student processes of two grading runs")

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        stop.set()
        t.join()


@contextlib.contextmanager
def grader_rules(config: Path, on: bool):
    """[grader] rules = on|off in the grader's grading.toml; restored afterwards."""
    original = config.read_text()
    value = "true" if on else "false"
    text, n = re.subn(r"(?m)^rules\s*=\s*(true|false)", f"rules = {value}", original)
    if not n:
        text = original.replace("[grader]\n", f"[grader]\nrules = {value}\n", 1)
    assert f"rules = {value}" in text
    config.write_text(text)
    try:
        yield
    finally:
        config.write_text(original)


def snapshot(root: Path) -> dict[str, tuple]:
    """path -> (sha256 or None for __pycache__, owner uid) of ROOT/source; path -> (size,
    mtime, uid) of ROOT/venv; the owners of ROOT/results and ROOT/submission."""
    snap: dict[str, tuple] = {}
    for base in ("source", "venv", "results", "submission"):
        for dirpath, _, filenames in os.walk(root / base):
            for name in filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                rel = str(p.relative_to(root))
                if base == "source" and "__pycache__" not in p.parts and p.is_file():
                    snap[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_uid)
                elif base == "venv" and "__pycache__" not in p.parts:
                    snap[rel] = (st.st_size, st.st_mtime_ns, st.st_uid)
                else:
                    snap[rel] = (None, st.st_uid)
    return snap


def shared_entries() -> dict[str, int]:
    """The student user's entries at the top of /tmp, /var/tmp and /dev/shm: path -> size."""
    uid, found = _student_uid(), {}
    for d in SHARED_DIRS:
        with contextlib.suppress(OSError):
            for e in os.scandir(d):
                with contextlib.suppress(OSError):
                    st = e.stat(follow_symlinks=False)
                    if st.st_uid == uid:
                        found[e.path] = st.st_size
    return found


def _remove(path: str) -> None:
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


# --------------------------------------------------------------------------- gradings


@dataclass
class Run:
    name: str
    graded: Graded
    left: list[str]  # student processes right after run_autograder returned
    results_bytes: bytes  # results.json right after
    later_bytes: bytes | None  # results.json FORGER_WAIT s later (background grading)
    left_later: list[str]
    before: dict[str, tuple]
    after: dict[str, tuple]
    new_shared: dict[str, int]  # student entries in /tmp, /var/tmp, /dev/shm made meanwhile
    config: grade_config.Config
    root: Path  # the imitation's ROOT

    def step(self, model: str) -> list[dict]:
        return [t for t in self.graded.results.get("tests", []) if t["tags"][1] == model]

    def step_score(self, model: str) -> float:
        return sum(t["score"] for t in self.step(model))

    def outputs(self, model: str) -> str:
        return "\n".join(t["output"] for t in self.step(model))

    def reports(self, model: str) -> dict[str, dict]:
        """The payloads' HOSTILE lines in the step's outputs: case -> what they found."""
        found = {}
        for case, text in REPORT.findall(self.outputs(model)):
            with contextlib.suppress(json.JSONDecodeError):
                found[case] = json.loads(text)
        return found


def upload_files(root: Path) -> tuple[dict[str, bytes], dict[str, str]]:
    """The upload grading's files and symlinks (path in the upload -> target)."""
    files: dict[str, bytes] = {}
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("spark/linear.py", "w", force_zip64=True) as f:
            block = b" " * 2**20
            for _ in range(1024):  # 1 GiB of spaces, about 1 MB deflated
                f.write(block)
        z.writestr("inner.zip", b"PK\x05\x06" + b"\0" * 18)
    files["bomb.zip"] = bomb.getvalue()
    evil = "import os\nos.system('touch /tmp/sparknet-hostile-pyc')\nraise SystemExit(0)\n"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "nn.py"
        src.write_text(evil)
        pyc = Path(py_compile.compile(str(src), cfile=str(Path(tmp) / "nn.pyc")))
        tag = sys.implementation.cache_tag
        files[f"spark/__pycache__/nn.{tag}.pyc"] = pyc.read_bytes()
        files[f"__pycache__/nn.{tag}.pyc"] = pyc.read_bytes()
    files["spark/nn.py"] = solution_text("nn").encode()
    files["cnn.py"] = solution_text("cnn").encode()
    always_pass = "def judge(*a, **k):\n    return 'HOSTILE passed'\n"
    for rel in ("spark/contract.py", "grading/runner.py", "util/layer.py", "sitecustomize.py"):
        files[rel] = (evil + always_pass).encode()
    files["grading/grading.toml"] = b'[tests."cnn.forward"]\nweight = 1000\n'
    links = {
        "linear.py": str(root / "source" / "grading" / "grading.toml"),
        "spark/linear.py": "/etc/shadow",
        "loop": ".",
        "rootfs": "/",
    }
    return files, links


def _grade_upload(ag, files: dict[str, bytes], links: dict[str, str]) -> Graded:
    """Autograder.grade with symlinks in the upload (Gradescope keeps those of a zip)."""
    ag.upload(files, links)
    return ag.run()


TIMES: list[tuple[str, float, dict[str, float]]] = []


@pytest.fixture(scope="session", autouse=True)
def _one_grading_at_a_time():
    """Before the imitation is built (setup.sh grades the starter as a smoke test): no other
    grading may be running on this machine (autouse: set up before `autograder`)."""
    _wait_for_quiet(Path("/nonexistent"))


@pytest.fixture(scope="module")
def graded(autograder):
    """name -> the Run of that grading (each grading runs once per module)."""
    cache: dict[str, Run] = {}

    def run(name: str) -> Run:
        if name not in cache:
            for _ in range(2):
                _wait_for_quiet(autograder.root)
                with _watch_for_foreign(autograder.root) as foreign:
                    cache[name] = _run(autograder, name)
                if not foreign:
                    break
                sys.__stderr__.write(f"\nhostile: grading {name} overlapped {foreign[0]}\n")
            r = cache[name]
            TIMES.append((name, r.graded.seconds, {m: r.step_score(m) for m in MODELS}))
        return cache[name]

    yield run
    if TIMES:
        lines = [
            f"  {n:11} {s:6.1f} s  " + "  ".join(f"{m} {v:g}" for m, v in sc.items())
            for n, s, sc in TIMES
        ]
        total = sum(s for _, s, _ in TIMES)
        sys.__stderr__.write(
            "\nhostile gradings:\n" + "\n".join(lines) + f"\n  total {total:.0f} s\n"
        )


def _run(ag, name: str) -> Run:
    before_shared = shared_entries()
    cfg_path = ag.config()
    with grader_rules(cfg_path, grading_rules(name)):
        config = grade_config.load_config(cfg_path)
        before = snapshot(ag.root)
        try:
            if name == "upload":
                graded = _grade_upload(ag, *upload_files(ag.root))
            else:
                graded = ag.grade(grading_files(name))
            left = student_processes()
            results_path = ag.results / "results.json"
            results_bytes = results_path.read_bytes() if results_path.is_file() else b""
            later, left_later = None, left
            if name == "background":
                time.sleep(FORGER_WAIT)
                later = results_path.read_bytes() if results_path.is_file() else b""
                left_later = student_processes()
            after = snapshot(ag.root)
        finally:
            # what the student user left in the shared directories is recorded, then removed
            new_shared = {p: s for p, s in shared_entries().items() if p not in before_shared}
            for p in new_shared:
                _remove(p)
    return Run(
        name,
        graded,
        left,
        results_bytes,
        later,
        left_later,
        before,
        after,
        new_shared,
        config,
        ag.root,
    )


def expected_step_scores(name: str, config: grade_config.Config) -> dict[str, float]:
    full = {m: sum(t.weight for t in config.tests if t.model == m) for m in MODELS}
    payloads = grading_payloads(name)
    if name == "upload":
        return {**full, **UPLOAD_EXPECTED}
    return {m: payloads[m].score if m in payloads else full[m] for m in MODELS}


def leak_markers(config_path: Path) -> list[str]:
    """Text of grading.toml and grade.py that no file of the grading tree holds (the tree is
    the student's to read): none of it may reach results.json."""
    markers = ["the one place for points", "startup_time_limit", "GRADER_RESERVE"]
    markers += ["def student_env", "time_budget ="]
    readable = b"".join(starter.starter_files().values())
    readable += b"".join((REPO / f).read_bytes() for f in tree.WORKER_FILES)
    secret = config_path.read_text() + (REPO / "grading" / "grade.py").read_text()
    return [m for m in markers if m in secret and m.encode() not in readable]


# --------------------------------------------------------------------------- the payloads


def _graded_in(case: str, model: str) -> list[str]:
    """The gradings that put `case` into the student file of `model`."""
    return [g for g, steps in GRADINGS.items() if steps.get(model) == case]


def test_payloads_have_headers_and_compose():
    """Every payload parses, is graded in the step its header names, composes into a valid
    file, and needs the rules it says: a rules-off payload breaks the rules (else rules off
    would prove nothing), a rules-on one obeys them, but for the one whose point is being
    refused."""
    from spark.rules import check_rules

    cases = {p.stem for p in HOSTILE.glob("*.py")} - {"common"}
    used = {c for g in GRADINGS.values() for c in g.values() if c}
    assert cases == used, f"payloads not graded: {cases - used}; missing: {used - cases}"
    for case in sorted(cases):
        p = load_payload(case)
        assert p.summary.endswith("."), f"hostile/{case}.py: its docstring opens with what it tries"
        for model in p.targets:
            assert _graded_in(case, model), f"{case} is graded in another step than {model}"
            text = compose(p, model)
            ast.parse(text)
            problems = check_rules(model, text)
            if p.rules and case not in REFUSED_BY_RULES:
                assert problems == [], (case, problems)
            else:
                assert problems, f"{case}: the rules accept it, so rules: off proves nothing"


# --------------------------------------------------------------------------- cases that hold


def test_rewrite_files_changed_nothing(graded):
    r = graded("tamper")
    rep = r.reports("linear")["rewrite_files"]
    assert str(r.root) in rep["roots"] and rep["tried"] > 20  # it found the grader
    assert rep["done"] == [], rep["done"]
    source = [p for p in set(r.before) | set(r.after) if p.startswith("source/")]
    assert [p for p in source if r.before.get(p) != r.after.get(p)] == []


def test_forge_results_found_the_results_and_wrote_nothing(graded):
    r = graded("tamper")
    rep = r.reports("nn")["forge_results"]
    assert str(r.root) in rep["roots"]  # it found the real results.json
    assert rep["tried"] > 0 and rep["done"] == []
    assert "HOSTILE" not in json.loads(r.results_bytes)["output"]


def test_background_forger_is_gone_and_results_unchanged(graded):
    r = graded("background")
    assert r.reports("linear")["background_forger"]["forked"] is True
    assert r.left == [] and r.left_later == []
    assert r.later_bytes == r.results_bytes, f"results.json changed within {FORGER_WAIT} s"
    assert "HOSTILE forged" not in r.results_bytes.decode()


def test_daemon_does_not_outlive_grading(graded):
    r = graded("background")
    assert r.left == [] and r.left_later == []
    assert r.step_score("nn") == expected_step_scores("background", r.config)["nn"]


def test_configuration_and_grader_code_do_not_leak(graded):
    r = graded("background")
    rep = r.reports("cnn")["read_config"]
    assert str(r.root) in rep["roots"] and rep["tried"] > 5
    assert rep["stolen"] == [], rep["stolen"]
    text = r.results_bytes.decode()
    markers = leak_markers(r.root / "source" / "grading" / "grading.toml")
    assert len(markers) >= 3
    assert [m for m in markers if m in text] == []
    assert "HOSTILE read_config, what it read" in text  # the exception was shown


def test_memory_hog_is_stopped_at_the_limit(graded):
    r = graded("rules")
    linear = r.step("linear")
    assert linear[0]["tags"][2] == "memory", linear[0]
    m = re.search(r"MEMORY: your code used more than ([\d.]+) GB of memory", linear[0]["output"])
    assert m and float(m.group(1)) <= r.config.memory_limit_gb, linear[0]["output"]
    assert [t["tags"][2] for t in linear[1:]] == ["not_run"] * (len(linear) - 1)


def test_methodcaller_is_refused_by_the_rules(graded):
    r = graded("rules")
    for t in r.step("nn"):
        assert t["tags"][2] == "rules", t
        assert "methodcaller" in t["output"], t["output"]
        assert "reaching attributes through a string" in t["output"], t["output"]


def test_output_flood_is_bounded(graded):
    r = graded("rules")
    assert all(len(t["output"]) < 10_000 for t in r.step("cnn"))
    assert len(r.results_bytes) < 200_000


def test_endless_loops_cost_one_time_limit_per_step(graded):
    r = graded("endless")
    for model in MODELS:
        statuses = [t["tags"][2] for t in r.step(model)]
        assert statuses == ["timeout"] + ["not_run"] * (len(statuses) - 1), (model, statuses)
        assert "TIMEOUT" in r.step(model)[0]["output"]
    assert r.graded.seconds < r.config.time_budget + 60, r.graded.seconds


def test_fork_bomb_is_contained(graded):
    r = graded("bomb")
    assert r.left == [] and r.graded.returncode == 0, r.graded.stderr[-2000:]
    reports = r.reports("linear")
    if "fork_bomb" in reports:  # else the memory watch stopped the step first
        assert reports["fork_bomb"]["peak_processes"] <= Sandbox.nproc + 64, reports
    else:
        assert r.step("linear")[0]["tags"][2] in ("memory", "crash"), r.step("linear")[0]


def test_signals_and_ptrace_reach_no_other_process(graded):
    rep = graded("escape").reports("linear")["signal_everyone"]
    assert rep["others"] > 10 and rep["done"] == [], rep


def test_network_is_loopback_only(graded):
    r = graded("escape")
    if "own network namespace" not in r.graded.stderr:
        pytest.skip("the grader could not isolate the network on this machine")
    rep = r.reports("nn")["network_escape"]
    assert rep["tried"] >= 3 and rep["connected"] == [] and rep["interfaces"] == ["lo"], rep


def test_file_size_is_limited_and_scratch_removed(graded):
    rep = graded("escape").reports("cnn")["fill_disk"]
    fsize = Sandbox.__dataclass_fields__["fsize"].default
    assert rep["largest"] == fsize and rep["stopped"] == os.strerror(errno.EFBIG), rep
    assert rep["total"] >= 3 * 2**30 - 2**20
    assert not Path(rep["tmpdir"]).exists()  # the scratch directory went with the grading


def test_upload_tricks(graded):
    r = graded("upload")
    linear = r.outputs("linear")
    assert "1073741824 bytes" in linear, linear[:1000]  # the bomb, read no further
    text = r.results_bytes.decode()
    assert [
        m for m in leak_markers(r.root / "source" / "grading" / "grading.toml") if m in text
    ] == []
    assert "protected files" in r.graded.results["output"]
    assert "HOSTILE" not in text
    assert not Path("/tmp/sparknet-hostile-pyc").exists()


def test_patched_libraries_do_not_reach_the_references(graded):
    r = graded("patch")
    by_kind = {t["tags"][0].split(".")[1]: t for t in r.step("linear")}
    assert by_kind["forward"]["score"] == 0 and "differ" in by_kind["forward"]["output"]
    assert by_kind["spark_usage"]["status"] == "passed"
    for kind in ("tester_uneven_chunks", "tester_one_partition", "tester_mini_batches"):
        assert by_kind[kind]["score"] == 0, by_kind[kind]


def test_fake_verdicts_on_fds_and_files_are_not_believed(graded):
    r = graded("patch")
    reps = r.reports("nn")
    assert "fd_forge" in reps, r.outputs("nn")[:2000]
    outside = [f for f in reps["fd_forge"]["files"] if "/scratch-nn/" not in f]
    assert outside == [], "fake files landed outside the step's scratch directory"
    assert "HOSTILE" not in r.graded.results["output"]
    assert all(t["score"] == 0 for t in r.step("nn"))
    assert "CRASH" in r.step("nn")[0]["output"]  # the garbled pipe ended the step


# --------------------------------------------------------------------------- every grading


@pytest.mark.parametrize("name", list(GRADINGS))
def test_results_stand(graded, name):
    """The grader finished, its results.json is final and its own (one entry per check of
    grading.toml, the score their sum), the grader's files are unchanged, and no process of
    the student user is left."""
    r = graded(name)
    res = r.graded.results
    failed = [(t["name"], t.get("output", "")[:500]) for t in res.get("tests", [])
              if t.get("status") != "passed"]  # fmt: skip
    assert r.graded.returncode == 0, f"{failed}\n{r.graded.stderr[-3000:]}"
    assert [t["name"] for t in res["tests"]] == [t.name for t in r.config.tests]
    assert [t["tags"][0] for t in res["tests"]] == [t.id for t in r.config.tests]
    assert res["score"] == sum(t["score"] for t in res["tests"])
    assert all(t["score"] in (0, t["max_score"]) for t in res["tests"])
    assert "cut short" not in res["output"], res["output"]
    assert r.left == [], f"student processes outlived grading: {r.left}"
    fixed = [p for p in set(r.before) | set(r.after) if p.startswith(("source/", "venv/"))]
    changed = [p for p in fixed if r.before.get(p) != r.after.get(p) and "__pycache__" not in p]
    assert changed == [], "the grader's files changed"
    uid = _student_uid()
    assert [p for p, v in r.after.items() if v[-1] == uid] == [], "files of the student user"
    for t in res["tests"]:
        assert len(t["output"]) < 10_000, (t["name"], len(t["output"]))


STEP_CASES = [
    (g, m, c or ("upload" if g == "upload" else "solution"))
    for g, steps in GRADINGS.items()
    for m, c in steps.items()
]


@pytest.mark.parametrize(
    ("name", "model", "case"), STEP_CASES, ids=[f"{g}-{m}-{c}" for g, m, c in STEP_CASES]
)
def test_step_score(graded, name, model, case):
    """Each step scores what its honest content deserves (the payload header's score; the
    solution's full weight)."""
    r = graded(name)
    want = expected_step_scores(name, r.config)[model]
    got = {t["tags"][0]: (t["score"], t["tags"][2]) for t in r.step(model)}
    assert r.step_score(model) == want, (case, got, r.outputs(model)[:3000])


# --------------------------------------------------------------------------- holes
#
# Each test below shows a hole in the grader as it stands (they fail until it is fixed; the
# report of the change that added them describes each).


def _frame(payload: bytes) -> bytes:
    return channel.HEADER.pack(len(payload)) + payload


def _deep_json_frame() -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, __meta__=np.array("[" * 100_000 + "]" * 100_000))
    return _frame(buf.getvalue())


def _huge_shape_frame() -> bytes:
    import numpy as np

    meta, header, buf = io.BytesIO(), io.BytesIO(), io.BytesIO()
    np.save(meta, np.array(json.dumps({"event": "check", "kind": "forward", "meta": {}})))
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**45,)}
    )
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("__meta__.npy", meta.getvalue())
        z.writestr("scores.0.npy", header.getvalue() + b"\0" * 64)
    return _frame(buf.getvalue())


@pytest.mark.parametrize(
    "make", [_deep_json_frame, _huge_shape_frame], ids=["deep_json", "huge_shape"]
)
def test_channel_refuses_hostile_frames_with_channel_error(make):
    """grading/channel.py: a frame the grader cannot read is a ChannelError (the supervisor
    ends the step like a crash), never another exception, which ends the grader."""
    with pytest.raises(channel.ChannelError):
        channel.Reader().feed(make())


def test_unreadable_frames_end_only_their_step(graded):
    """The same frames sent by a step's process: the step crashes, the grading goes on."""
    for name in ("frames", "patch"):  # deep_json_frame, huge_shape_frame in the cnn step
        r = graded(name)
        first = r.step("cnn")[0]
        assert r.graded.returncode == 0, (name, r.graded.stderr[-1500:])
        assert first["tags"][2] == "crash" and "CRASH" in first["output"], (name, first)


def test_forged_frames_are_refused_by_the_rules(graded):
    """Frames holding the expected numbers, computed in the student's process with the tree's
    reference functions and sent on the grader's pipe: the grader judges numbers, and these
    are right, so what stops them is the rules (the file imports grading and spark.contract
    and reads sys.argv); STAFF.md, "Limits", says so."""
    r = graded("forgery")
    got = {t["tags"][0]: (t["tags"][2], t["output"][:160]) for t in r.step("linear")}
    assert r.step_score("linear") == 0, got
    assert all(t["tags"][2] == "rules" for t in r.step("linear")), got


def test_shared_memory_files_hold_no_memory_of_the_machine(graded):
    """2.5 GB written to /dev/shm: with a private /dev/shm (a mount namespace, as here) it
    lands in the step's scratch directory on disk and is removed with it, and the solution
    keeps its points; without one, tmpfs files count against the memory limit."""
    r = graded("frames")
    assert not any(p.startswith(TMPFS_FILES) for p in r.new_shared), r.new_shared
    statuses = [t["tags"][2] for t in r.step("nn")]
    if re.search(r"private [/\w, ]*/dev/shm", r.graded.stderr):
        assert r.step_score("nn") == 30, (statuses, r.outputs("nn")[:1000])
    else:
        assert "memory" in statuses, (statuses, r.outputs("nn")[:1000])


def test_forged_bench_does_not_reach_the_leaderboard(graded):
    """A forger that replaces the runner's benchmark with the reference losses, sent at once
    once the seed is known, is refused by the rules (it imports grading.leaderboard and
    assigns to it), so its CNN step scores 0 and gets no leaderboard value; the solution's
    CNN gets one."""
    forged = graded("forgery")
    assert forged.step_score("cnn") == 0
    assert all(t["tags"][2] == "rules" for t in forged.step("cnn"))
    assert "leaderboard" not in forged.graded.results
    assert graded("bomb").graded.results.get("leaderboard"), "the solution got no value"


def test_no_student_files_outlive_grading(graded):
    """DESIGN.md: submitted code 'can write only a scratch directory'. What the step's
    processes write to /tmp, /var/tmp or /dev/shm (the payload's files, Spark's own) must not
    outlive the grading: a private /tmp where root may mount one, removal after each step
    everywhere."""
    r = graded("escape")
    report = r.reports("cnn")["fill_disk"]
    for path in report["outside"]:  # what it believed it wrote outside its scratch
        assert not os.path.lexists(path), (path, report)
    assert r.new_shared == {}, sorted(r.new_shared)[:20]
