"""The clean tree a submission runs in: the starter (no solutions anywhere), the built
Cython extension, the graded checks and the student's accepted files on top."""

from __future__ import annotations

import shutil
from pathlib import Path

from grading import starter
from grading.submission import STUDENT_FILES, Submission

REPO = Path(__file__).resolve().parent.parent
# what the step runner (`python -m grading.runner`, in the sandbox) needs beyond the starter
WORKER_FILES = (
    "grading/__init__.py",
    "grading/runner.py",
    "grading/channel.py",
    "grading/leaderboard.py",
)


def build_tree(dest: Path, sub: Submission, root: Path = REPO) -> dict[str, str]:
    """Starter + built extension + graded checks + the student's accepted files.
    Returns model -> "submitted" | "starter" (what was placed for each student file)."""
    files = starter.starter_files(root)
    for rel in WORKER_FILES:
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
