"""Reading a submission: the student files (`STUDENT_FILES`, from the registry of networks)
out of a directory or a zip, found at any depth; every other file is ignored with a note.

A directory upload (Gradescope's) may hold zips too (`submission.zip` among the files): each
is opened and its members are candidates like the loose files, shown as
`submission.zip/spark/nn.py`; a loose file wins over a zip member for the same student file.
Only one level: a zip inside a zip is not opened. A bad submission is a `Submission` with
notes and problems, never an exception."""

from __future__ import annotations

import contextlib
import lzma
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from grading import starter
from util import models

REPO = Path(__file__).resolve().parent.parent
STUDENT_FILES = {m.name: m.student_file for m in models.STEPS}  # model -> "spark/nn.py"
MAX_FILE_BYTES = 1_000_000
MAX_ENTRIES = 10_000  # loose files and zip members looked at, in all
ZIP_SUFFIX = ".zip"
# what opening or reading a damaged zip (bad CRC, truncated or unsupported data,
# encrypted member) or an unreadable file can raise
_READ_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    NotImplementedError,
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
)


@dataclass
class Submission:
    files: dict[str, str] = field(default_factory=dict)  # "spark/nn.py" -> source text
    notes: list[str] = field(default_factory=list)  # for everyone
    problems: dict[str, str] = field(default_factory=dict)  # model -> why its tests score 0


@dataclass(frozen=True)
class _Entry:
    """One candidate file: a loose file of the upload, or a member of a zip."""

    inner: str  # its path in the upload or inside its zip: "spark/nn.py"
    path: Path  # the loose file, or the zip it is in
    member: zipfile.ZipInfo | None = None
    archive: zipfile.ZipFile | None = None

    def size(self) -> int:
        """The declared size (a zip header may lie: read() stops anyway)."""
        return self.member.file_size if self.member else self.path.stat().st_size

    def read(self) -> bytes:
        """At most MAX_FILE_BYTES + 1 bytes, whatever the size claims."""
        if self.member is None or self.archive is None:
            with self.path.open("rb") as f:
                return f.read(MAX_FILE_BYTES + 1)
        with self.archive.open(self.member) as f:
            return f.read(MAX_FILE_BYTES + 1)


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


def _is_zip_name(name: str) -> bool:
    return name.lower().endswith(ZIP_SUFFIX)


class _Scan:
    """The candidates of one submission: loose files and the members of the zips among them
    (each keyed by the path shown in notes), at most MAX_ENTRIES in all."""

    def __init__(self, sub: Submission, stack: contextlib.ExitStack) -> None:
        self.sub = sub
        self.stack = stack  # closes the zips opened
        self.loose: dict[str, _Entry] = {}
        self.zipped: dict[str, _Entry] = {}
        self.opened: set[str] = set()  # the zips (readable or not): not "ignored" files
        self.full = False

    def _room(self) -> bool:
        if len(self.loose) + len(self.zipped) < MAX_ENTRIES:
            return True
        if not self.full:
            self.full = True
            self.sub.notes.append(
                f"the submission has more than {MAX_ENTRIES} files; only the first "
                f"{MAX_ENTRIES} were looked at"
            )
        return False

    def directory(self, root: Path) -> None:
        """Loose files first (sorted, at any depth), then the zips among them."""
        zips = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in starter.ALWAYS_EXCLUDED_DIRS)
            for name in sorted(filenames):
                p = Path(dirpath) / name
                rel = _norm(p.relative_to(root).as_posix())
                if not rel or not p.is_file() or p.is_symlink():
                    continue
                if not self._room():
                    break
                self.loose[rel] = _Entry(rel, p)
                if _is_zip_name(rel):
                    zips.append(rel)
            if self.full:
                break
        for rel in zips:
            self.zip(self.loose[rel].path, prefix=rel + "/")

    def zip(self, path: Path, prefix: str) -> bool:
        """Adds the members of one zip (prefix "" when the zip is the submission itself);
        False when it cannot be opened, which is a note: the other files are still read."""
        shown = prefix.rstrip("/") or path.name
        self.opened.add(prefix.rstrip("/"))
        try:
            archive = self.stack.enter_context(zipfile.ZipFile(path))
        except _READ_ERRORS as e:
            self.sub.notes.append(f"could not open the zip {shown} ({e}); its files were not read")
            return False
        nested = []
        for info in archive.infolist():
            rel = _norm(info.filename)
            if not rel or info.is_dir() or "__pycache__" in PurePosixPath(rel).parts:
                continue
            if _is_zip_name(rel):
                nested.append(prefix + rel)
                continue
            if not self._room():
                break
            entries = self.zipped if prefix else self.loose
            entries[prefix + rel] = _Entry(rel, path, info, archive)
        if nested:
            self.sub.notes.append(
                f"a zip inside a zip is not opened: ignored {', '.join(nested[:10])}"
                + (f" and {len(nested) - 10} more" if len(nested) > 10 else "")
            )
        return True


def _choose(scan: _Scan, rel: str, sub: Submission) -> tuple[str | None, list[str]]:
    """The entry graded as the student file `rel` (a loose file before a zip member) and every
    other candidate, with a note when there were several."""
    chosen, others = _pick(list(scan.loose), rel)
    first_zipped, more_zipped = _pick(list(scan.zipped), rel)
    zipped = [first_zipped, *more_zipped] if first_zipped else []
    if chosen is None:
        if not zipped:
            return None, []
        chosen, others, zipped = zipped[0], zipped[1:], []
    if others:
        sub.notes.append(f"several files could be {rel}; graded {chosen}, ignored {others}")
    if zipped:
        sub.notes.append(
            f"{rel} is both a loose file and in a zip: graded the loose file {chosen}, "
            f"ignored {', '.join(zipped)}"
        )
    return chosen, others + zipped


def _read_one(entry: _Entry, shown: str) -> tuple[str | None, str | None]:
    """(the text, None) or (None, why it cannot be graded)."""
    try:
        size = entry.size()
        if size > MAX_FILE_BYTES:
            return None, f"{shown} is {size} bytes (limit {MAX_FILE_BYTES})"
        data = entry.read()
    except _READ_ERRORS as e:
        return None, f"could not read {shown}: {e}"
    if len(data) > MAX_FILE_BYTES:
        return None, f"{shown} is more than {MAX_FILE_BYTES} bytes (limit {MAX_FILE_BYTES})"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, f"{shown} is not UTF-8 text"


def _note_ignored(scan: _Scan, used: set[str], sub: Submission) -> None:
    entries = {**scan.loose, **scan.zipped}
    ignored = sorted(set(entries) - used - scan.opened)
    if not ignored:
        return
    shown = ", ".join(ignored[:10]) + (
        f" and {len(ignored) - 10} more" if len(ignored) > 10 else ""
    )
    sub.notes.append(f"ignored (only {', '.join(STUDENT_FILES.values())} are graded): {shown}")
    protected = sorted({entries[p].inner for p in ignored if (REPO / entries[p].inner).is_file()})
    if protected:
        sub.notes.append(
            "protected files of the assignment are never taken from a submission; "
            f"the grader used the originals of: {', '.join(protected[:10])}"
        )


def read_submission(path: Path) -> Submission:
    """The student's files from a directory (with any zips in it) or a zip; never raises for
    a bad submission."""
    sub = Submission()
    with contextlib.ExitStack() as stack:
        scan = _Scan(sub, stack)
        try:
            if path.is_dir():
                scan.directory(path)
                readable = True
            elif zipfile.is_zipfile(path):
                readable = scan.zip(path, prefix="")
            else:
                sub.notes.append(
                    f"the submission {path.name} is neither a directory nor a zip file"
                )
                readable = False
        except OSError as e:
            sub.notes.append(f"could not read the submission: {e}")
            readable = False
        if not readable:
            for model in STUDENT_FILES:
                sub.problems[model] = "the submission could not be read"
            return sub

        entries = {**scan.loose, **scan.zipped}
        used: set[str] = set()
        for model, rel in STUDENT_FILES.items():
            chosen, others = _choose(scan, rel, sub)
            if chosen is None:
                sub.problems[model] = f"{rel} is not in the submission"
                continue
            used.update([chosen, *others])
            text, problem = _read_one(entries[chosen], chosen)
            if problem:
                sub.problems[model] = problem
            else:
                sub.files[rel] = text  # type: ignore[assignment]
        _note_ignored(scan, used, sub)
    return sub
