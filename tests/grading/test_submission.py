"""Reading submissions (grading/submission.py): zips anywhere in a directory upload, loose
files before zip members, one level of zips only, and every bad upload a note or a problem of
its step, never an exception. Pure file work: nothing is imported or run."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from grading import submission
from grading.submission import read_submission
from util.models import REPO

STUDENT = tuple(submission.STUDENT_FILES.values())  # spark/linear.py, spark/nn.py, spark/cnn.py
SOURCE = {rel: (REPO / rel).read_text(encoding="utf-8") for rel in STUDENT}


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def make_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def notes(sub: submission.Submission) -> str:
    return "\n".join(sub.notes)


def test_zip_among_loose_files(tmp_path):
    up = write(tmp_path / "up", {"spark/linear.py": SOURCE["spark/linear.py"], "notes.txt": "hi"})
    make_zip(up / "submission.zip", {"spark/nn.py": SOURCE["spark/nn.py"], "cnn.py": "# cnn\n"})
    sub = read_submission(up)
    assert sub.problems == {}
    assert sub.files == {
        "spark/linear.py": SOURCE["spark/linear.py"],
        "spark/nn.py": SOURCE["spark/nn.py"],
        "spark/cnn.py": "# cnn\n",
    }
    # the zip itself was read, so it is not among the ignored files
    assert sub.notes == [f"ignored (only {', '.join(STUDENT)} are graded): notes.txt"]


def test_zip_only_directory(tmp_path):
    up = tmp_path / "up"
    make_zip(up / "spark.zip", {f"hw/{rel}": SOURCE[rel] for rel in STUDENT})
    sub = read_submission(up)
    assert sub.problems == {} and sub.files == SOURCE
    assert sub.notes == []


def test_loose_file_wins_over_the_zip_with_a_note(tmp_path):
    up = write(tmp_path / "up", {rel: SOURCE[rel] for rel in STUDENT})
    write(up, {"spark/nn.py": "# loose nn\n", "linear.py": "# flat loose linear\n"})
    (up / "spark" / "linear.py").unlink()  # only the flat loose linear.py is left
    make_zip(
        up / "submission.zip",
        {"spark/nn.py": "# zipped nn\n", "spark/linear.py": "# zipped linear\n"},
    )
    sub = read_submission(up)
    assert sub.problems == {}
    assert sub.files["spark/nn.py"] == "# loose nn\n"
    assert sub.files["spark/linear.py"] == "# flat loose linear\n"  # loose, though not spark/
    text = notes(sub)
    assert (
        "spark/nn.py is both a loose file and in a zip: graded the loose file spark/nn.py, "
        "ignored submission.zip/spark/nn.py" in text
    )
    assert "graded the loose file linear.py, ignored submission.zip/spark/linear.py" in text


def test_zip_members_follow_the_same_finding_rules(tmp_path):
    """spark/<x>.py before <x>.py at any depth; among those, the shallowest."""
    up = tmp_path / "up"
    make_zip(
        up / "a.zip",
        {
            "x/y/nn.py": "# deep flat\n",
            "spark/nn.py": "# spark/ preferred\n",
            "x/y/cnn.py": "# deep cnn\n",
            "cnn.py": "# shallow cnn\n",
        },
    )
    sub = read_submission(up)
    assert sub.files["spark/nn.py"] == "# spark/ preferred\n"
    assert sub.files["spark/cnn.py"] == "# shallow cnn\n"
    text = notes(sub)
    assert (
        "several files could be spark/cnn.py; graded a.zip/cnn.py, ignored ['a.zip/x/y/cnn.py']"
        in text
    )
    assert "are graded): a.zip/x/y/nn.py" in text


def test_zip_inside_a_zip_is_ignored_with_a_note(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"spark/cnn.py": SOURCE["spark/cnn.py"]})
    up = write(tmp_path / "up", {"spark/linear.py": SOURCE["spark/linear.py"]})
    make_zip(
        up / "outer.zip", {"spark/nn.py": SOURCE["spark/nn.py"], "inner.zip": inner.read_bytes()}
    )
    sub = read_submission(up)
    assert set(sub.files) == {"spark/linear.py", "spark/nn.py"}
    assert sub.problems == {"cnn": "spark/cnn.py is not in the submission"}
    assert "a zip inside a zip is not opened: ignored outer.zip/inner.zip" in notes(sub)


def test_zip_inside_the_submission_zip_is_ignored(tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"spark/cnn.py": SOURCE["spark/cnn.py"]})
    sub = read_submission(make_zip(tmp_path / "sub.zip", {"inner.zip": inner.read_bytes()}))
    assert "cnn" in sub.problems and sub.files == {}
    assert "a zip inside a zip is not opened: ignored inner.zip" in notes(sub)


def test_corrupt_zip_among_good_loose_files(tmp_path):
    up = write(tmp_path / "up", {rel: SOURCE[rel] for rel in STUDENT})
    write(up, {"broken.zip": b"PK\x03\x04 this is not really a zip"})
    sub = read_submission(up)
    assert sub.problems == {} and sub.files == SOURCE
    assert "could not open the zip broken.zip" in notes(sub)
    assert "its files were not read" in notes(sub)


def test_damaged_member_is_a_problem_of_its_step_only(tmp_path):
    up = write(tmp_path / "up", {"spark/linear.py": SOURCE["spark/linear.py"]})
    z = up / "sub.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as f:
        f.writestr("spark/nn.py", "# a stored member whose bytes get damaged\n" * 10)
    data = z.read_bytes()
    at = data.index(b"stored member")
    z.write_bytes(data[:at] + b"STORED" + data[at + 6 :])  # same size, wrong CRC
    sub = read_submission(up)
    assert sub.files == {"spark/linear.py": SOURCE["spark/linear.py"]}
    assert sub.problems["nn"].startswith("could not read sub.zip/spark/nn.py")
    assert sub.problems["cnn"] == "spark/cnn.py is not in the submission"


def test_oversized_member_is_a_problem_of_its_step(tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "MAX_FILE_BYTES", 1000)
    up = write(tmp_path / "up", {"spark/linear.py": "# small\n"})
    make_zip(up / "sub.zip", {"spark/nn.py": "#" * 5000, "spark/cnn.py": "# small\n"})
    sub = read_submission(up)
    assert set(sub.files) == {"spark/linear.py", "spark/cnn.py"}
    assert sub.problems == {"nn": "sub.zip/spark/nn.py is 5000 bytes (limit 1000)"}


def test_a_header_that_understates_the_size_does_not_get_past_the_limit(tmp_path, monkeypatch):
    """The declared size is checked first, and the read itself stops at the limit + 1 byte."""
    monkeypatch.setattr(submission, "MAX_FILE_BYTES", 1000)
    monkeypatch.setattr(submission._Entry, "size", lambda self: 10)  # a lying header
    up = tmp_path / "up"
    make_zip(up / "sub.zip", {"spark/nn.py": "#" * 5000})
    write(up, {"spark/linear.py": "#" * 3000})
    sub = read_submission(up)
    assert sub.problems["nn"] == "sub.zip/spark/nn.py is more than 1000 bytes (limit 1000)"
    assert sub.problems["linear"] == "spark/linear.py is more than 1000 bytes (limit 1000)"
    assert sub.files == {}


def test_bad_member_paths_are_skipped(tmp_path):
    up = write(tmp_path / "up", {"spark/linear.py": SOURCE["spark/linear.py"]})
    make_zip(
        up / "sub.zip",
        {
            "../../etc/evil.py": "x = 1\n",
            "/abs/nn.py": "# absolute\n",
            "__MACOSX/spark/._cnn.py": "junk",
            "spark/._nn.py": "junk",
            "spark/__pycache__/cnn.py": "# cache\n",
            "hw/spark/nn.py": SOURCE["spark/nn.py"],
            "spark/tester.py": "# my own tester that always passes\n",
        },
    )
    sub = read_submission(up)
    assert sub.files == {
        "spark/linear.py": SOURCE["spark/linear.py"],
        "spark/nn.py": SOURCE["spark/nn.py"],
    }
    assert sub.problems == {"cnn": "spark/cnn.py is not in the submission"}
    text = notes(sub)
    for junk in ("evil", "abs", "MACOSX", "._", "__pycache__"):
        assert junk not in text, junk
    assert "sub.zip/spark/tester.py" in text  # ignored, and a protected file:
    assert "the grader used the originals of: spark/tester.py" in text


def test_not_utf8_member_is_a_problem(tmp_path):
    up = tmp_path / "up"
    make_zip(up / "sub.zip", {"spark/nn.py": b"\xff\xfe not utf-8"})
    sub = read_submission(up)
    assert sub.problems["nn"] == "sub.zip/spark/nn.py is not UTF-8 text"


def test_at_most_max_entries_are_looked_at(tmp_path, monkeypatch):
    monkeypatch.setattr(submission, "MAX_ENTRIES", 5)
    up = write(tmp_path / "up", {f"a{i}.txt": "x" for i in range(3)})
    make_zip(up / "z.zip", {f"m{i}.txt": "x" for i in range(10)})
    sub = read_submission(up)
    assert "more than 5 files; only the first 5 were looked at" in notes(sub)
    assert "z.zip/m0.txt" in notes(sub) and "z.zip/m1.txt" not in notes(sub)


@pytest.mark.parametrize("data", [b"", b"not a zip at all", b"PK\x05\x06" + b"\0" * 18])
def test_unreadable_submission_is_problems_not_an_exception(tmp_path, data):
    path = tmp_path / "sub.zip"
    path.write_bytes(data)
    sub = read_submission(path)
    assert set(sub.problems) == set(submission.STUDENT_FILES) and sub.files == {}
