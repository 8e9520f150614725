"""Reading a submission: the student files (`STUDENT_FILES`, from the registry of networks)
out of a directory or a zip, found at any depth; every other file is ignored with a note.
A bad submission is a `Submission` with problems, never an exception."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grading import starter
from util import models

REPO = Path(__file__).resolve().parent.parent
STUDENT_FILES = {m.name: m.student_file for m in models.STEPS}  # model -> "spark/nn.py"
MAX_FILE_BYTES = 1_000_000


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
            for model in STUDENT_FILES:
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
            sub.notes.append(
                f"ignored (only {', '.join(STUDENT_FILES.values())} are graded): {shown}"
            )
            if protected:
                sub.notes.append(
                    "protected files of the assignment are never taken from a submission; "
                    f"the grader used the originals of: {', '.join(protected[:10])}"
                )
    except (OSError, zipfile.BadZipFile, RuntimeError) as e:
        sub.notes.append(f"could not read the submission: {e}")
        for model in STUDENT_FILES:
            sub.problems.setdefault(model, "the submission could not be read")
    finally:
        if archive:
            archive.close()
    return sub
