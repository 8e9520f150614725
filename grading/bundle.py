"""The Gradescope autograder zip: setup.sh and run_autograder at the top, then the starter
tree (no solutions) with the whole grading package, so that the grader and its worker run
from it as they run from this repository."""

from __future__ import annotations

import zipfile
from pathlib import Path

from grading import starter

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = ("setup.sh", "run_autograder")  # in grading/autograder/, at the zip's top


def grading_files(root: Path = REPO) -> list[str]:
    """The grading package as the grader and the worker import it: every grading/*.py
    (grade.py and the modules it is made of, checks.py, starter.py) and grading.toml."""
    modules = sorted(p.relative_to(root).as_posix() for p in (root / "grading").glob("*.py"))
    return [*modules, "grading/grading.toml"]


def write_bundle(dest: Path, root: Path = REPO) -> list[str]:
    """Writes the autograder zip to dest (atomically); returns its member names.
    Gradescope unpacks it into /autograder/source; setup.sh builds the environment once,
    run_autograder grades each submission."""
    files = starter.starter_files(root)  # checked: no solution text
    # the assignment text: the grader builds each submission's starter tree from it
    for rel in (*grading_files(root), starter.ASSIGNMENT):
        files[rel] = (root / rel).read_bytes()
    for name in TEMPLATES:
        files[name] = (root / "grading" / "autograder" / name).read_bytes()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for rel in sorted(files):
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if rel in TEMPLATES else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[rel])
    tmp.replace(dest)
    return sorted(files)
