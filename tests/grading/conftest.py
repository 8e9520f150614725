"""Fixtures of the staff tests: an imitation of Gradescope's autograder, built once per test
session the way Gradescope builds it.

`autograder` lays out Gradescope's tree under a temporary root (Gradescope's is
/autograder; grading/autograder/setup.sh and run_autograder read AUTOGRADER_ROOT):

    ROOT/source       the bundle (`python -m grading.grade --bundle`), unpacked
    ROOT/submission   the student's upload, replaced for every grading
    ROOT/results      results.json
    ROOT/venv         made by setup.sh

then runs setup.sh once, as Gradescope does (as root here when the tests run as root; setup.sh
skips apt when Java, Python's venv and headers and a C compiler are present), and grades each
upload with run_autograder, as Gradescope does. The root lives under /tmp (not pytest's
tmp_path, whose parent only root may enter), so the student user can reach the venv.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

STUDENT_USER = "sparknet-student"


@pytest.fixture(scope="session")
def student_user() -> str | None:
    """As root, the user that runs submissions, created as setup.sh creates it if this machine
    has none yet (a root grader refuses to run without it); None when the tests are not root
    (the grader then runs submissions as the current user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(STUDENT_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             STUDENT_USER],
            check=True,
        )  # fmt: skip
    return STUDENT_USER


@dataclass
class Graded:
    results: dict  # results.json as the grader left it
    seconds: float  # run_autograder's wall time
    returncode: int
    stdout: str
    stderr: str


class Autograder:
    """The imitation: grade(files) puts an upload in ROOT/submission and runs run_autograder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.source = root / "source"
        self.submission = root / "submission"
        self.results = root / "results"
        self.setup_log = ""

    @property
    def env(self) -> dict[str, str]:
        drop = ("PYTHONPATH", "VIRTUAL_ENV", "SPARKNET_TEST_MASTER")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env["AUTOGRADER_ROOT"] = str(self.root)
        return env

    def setup(self) -> None:
        out = subprocess.run(
            ["bash", str(self.source / "setup.sh")],
            cwd=self.source,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        self.setup_log = out.stdout + out.stderr
        if out.returncode:
            raise RuntimeError(f"setup.sh failed ({out.returncode}):\n{self.setup_log[-4000:]}")

    def config(self) -> Path:
        """The grading.toml the grader reads (staff may edit it, as on Gradescope)."""
        return self.source / "grading" / "grading.toml"

    def upload(self, files: dict[str, str | bytes], links: dict[str, str] | None = None) -> None:
        """A fresh ROOT/submission holding files (path inside it -> content) and symlinks
        (path -> target; Gradescope keeps those of a zip), no results."""
        for d in (self.submission, self.results):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
        for rel, content in files.items():
            p = self.submission / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)
        for rel, target in (links or {}).items():
            p = self.submission / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(target)

    def grade(self, files: dict[str, str | bytes], timeout: float = 1200) -> Graded:
        """Grades an upload (see upload) with run_autograder."""
        self.upload(files)
        return self.run(timeout)

    def run(self, timeout: float = 1200) -> Graded:
        """run_autograder on what ROOT/submission holds, as Gradescope runs it."""
        t0 = time.monotonic()
        out = subprocess.run(
            [str(self.source / "run_autograder")],
            cwd="/",
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.monotonic() - t0
        path = self.results / "results.json"
        results = json.loads(path.read_text()) if path.is_file() else {}
        return Graded(results, seconds, out.returncode, out.stdout, out.stderr)


def student_processes() -> list[str]:
    """`ps` lines of every live process of the student user (none may outlive grading)."""
    try:
        uid = pwd.getpwnam(STUDENT_USER).pw_uid
    except KeyError:
        return []
    out = subprocess.run(["ps", "-eo", "uid=,stat=,pid=,args="], capture_output=True, text=True)
    return [
        ln
        for ln in out.stdout.splitlines()
        if ln.split()[0] == str(uid) and not ln.split()[1].startswith("Z")
    ]


@pytest.fixture(scope="session")
def autograder() -> Autograder:
    """The built imitation (setup.sh run once); removed at the end of the session."""
    from grading.bundle import write_bundle

    root = Path(tempfile.mkdtemp(prefix="sparknet-autograder-"))
    os.chmod(root, 0o755)
    ag = Autograder(root)
    try:
        bundle = root / "autograder.zip"
        write_bundle(bundle)
        with zipfile.ZipFile(bundle) as z:
            z.extractall(ag.source)
            for info in z.infolist():  # zipfile drops the modes; Gradescope keeps them
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(ag.source / info.filename, mode)
        bundle.unlink()
        for d in (ag.submission, ag.results):
            d.mkdir()
        ag.setup()
        yield ag
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(name="student_processes")
def student_processes_fixture():
    return student_processes
