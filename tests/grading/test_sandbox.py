"""The grader's boundary parts on their own (no Spark): the channel refuses anything but plain
frames of numbers, the sandbox finds and kills every process of a run (daemons included),
and as root the launcher really drops to the student user with its limits."""

from __future__ import annotations

import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from grading import channel
from grading.sandbox import STUDENT_USER, Sandbox, cpus_available, memory_available


def test_a_frame_round_trips():
    frame = channel.encode({"event": "check", "kind": "forward"}, {"a": np.arange(3.0)})
    ((meta, arrays),) = channel.Reader().feed(frame)
    assert meta == {"event": "check", "kind": "forward"}
    assert np.array_equal(arrays["a"], np.arange(3.0))


def test_frames_arrive_in_pieces():
    data = channel.encode({"event": "ready"}) + channel.encode({"event": "check"})
    reader = channel.Reader()
    got = [f for i in range(0, len(data), 7) for f in reader.feed(data[i : i + 7])]
    assert [m["event"] for m, _ in got] == ["ready", "check"]


def test_good_frames_before_a_bad_one_in_the_same_read_are_kept():
    """A step may write "ready" and a bad frame so fast that one read holds both: the error
    carries the good frame, so that the grader still counts it (before this, the step's
    start-up seemed to fail: a grader error instead of the student's crash)."""
    bad = channel.HEADER.pack(channel.MAX_FRAME + 1) + b"x" * 16
    with pytest.raises(channel.ChannelError, match="a frame of") as e:
        channel.Reader().feed(channel.encode({"event": "ready"}) + bad)
    assert [m["event"] for m, _ in e.value.frames] == ["ready"]
    with pytest.raises(channel.ChannelError) as e:
        channel.Reader().feed(bad)
    assert e.value.frames == []


FAKE_RUNNER = """
import os, sys, time
from grading import channel
fd = int(next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--channel=")))
# "ready" and a frame too big for the grader in one write: they arrive in one read
os.write(fd, channel.encode({"event": "ready"}) + channel.HEADER.pack(2**62) + bytes(64))
time.sleep(60)
"""


def test_a_bad_frame_right_after_ready_is_the_steps_crash_not_a_grader_error(tmp_path):
    """grading.supervisor.run_step with a runner that sends "ready" and a bad frame at once
    (what a submission that writes on the grader's pipe when imported can do): the step has
    started, so its first check is the student's crash, with the reason; the others are not
    run. Deterministic, where the hostile grading of huge_shape_frame depended on timing."""
    from grading import supervisor

    tree = tmp_path / "tree"
    (tree / "grading").mkdir(parents=True)
    (tree / "grading" / "__init__.py").write_text("")
    (tree / "grading" / "runner.py").write_text(FAKE_RUNNER)
    repo = Path(channel.__file__).resolve().parents[1]
    (tree / "grading" / "channel.py").write_text((repo / "grading" / "channel.py").read_text())
    box = Sandbox(None, None, memory_limit=2**31)
    run = supervisor.StepRun("cnn", 3, ["forward", "tester"], {"forward": 30, "tester": 30},
                             30, time.monotonic() + 60)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree), "SPARKNET_GRADE_MARKER": box.marker}
    reports = []
    end = supervisor.run_step(run, box, tree, tmp_path / "scratch", env, "local[1]",
                              reports.append)  # fmt: skip
    assert [(r.kind, r.status) for r in reports] == [("forward", "crash"), ("tester", "not_run")]
    assert "a frame of" in reports[0].text and "GRADER ERROR" not in reports[0].text
    assert end.survivors == []


def _payload_frame(payload: bytes) -> bytes:
    return channel.HEADER.pack(len(payload)) + payload


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize(
    "frame,message",
    [
        (channel.HEADER.pack(channel.MAX_FRAME + 1), "limit"),
        (_payload_frame(b"not a zip at all"), "unreadable frame"),
        (_payload_frame(_npz(x=np.arange(2))), "without its meta"),
        (_payload_frame(_npz(__meta__=np.array("[1, 2]"))), "not an object"),
        (
            _payload_frame(
                _npz(__meta__=np.array(json.dumps({})), x=np.array([{"a": 1}], dtype=object))
            ),
            "only numbers travel",
        ),
        (
            _payload_frame(_npz(__meta__=np.array("[" * 100_000 + "]" * 100_000))),
            "not plain JSON",
        ),
        (
            _payload_frame(_npz(__meta__=np.array(json.dumps({})), s=np.array(["text"]))),
            "only numbers travel",
        ),
    ],
)
def test_the_channel_refuses_what_the_runner_does_not_send(frame, message):
    with pytest.raises(channel.ChannelError, match=message):
        channel.Reader().feed(frame)


def test_the_channel_refuses_an_array_header_larger_than_its_data():
    """A header claiming 2**45 float64 over 32 bytes of data must not make the grader
    allocate 256 TiB (np.load would)."""
    member = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**45,)}
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__meta__.npy", _npz_member(np.array(json.dumps({"event": "check"}))))
        z.writestr("a.npy", member.getvalue())
    with pytest.raises(channel.ChannelError, match="does not fit its size"):
        channel.Reader().feed(_payload_frame(buf.getvalue()))


def _npz_member(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, a)
    return f.getvalue()


def test_the_channel_refuses_compressed_frames():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("__meta__.npy", b"\0" * 1000)
    with pytest.raises(channel.ChannelError, match="compressed"):
        channel.Reader().feed(_payload_frame(buf.getvalue()))


def test_the_channel_caps_a_step_total():
    reader = channel.Reader(max_total=100)
    with pytest.raises(channel.ChannelError, match="more than 100 bytes"):
        reader.feed(channel.encode({"event": "ready", "pad": "x" * 200}))


def test_machine_limits_are_read():
    assert 2**27 < memory_available() <= os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < cpus_available() <= os.cpu_count()


def _daemon_script() -> str:
    """A process that double-forks a setsid'd daemon sleeping 300 s, then exits."""
    return (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
    )


def test_kill_all_finds_a_daemon_of_the_run_by_its_marker():
    box = Sandbox(None, None, memory_limit=2**30)
    env = {**os.environ, "SPARKNET_GRADE_MARKER": box.marker}
    subprocess.run([sys.executable, "-c", _daemon_script()], env=env, check=True)
    time.sleep(0.3)
    daemons = box.processes()
    assert len(daemons) == 1  # left its process group and its parent: found by the marker
    assert box.resident() > 0
    assert box.kill_all() == []
    assert box.processes() == []


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the user switch needs root")


def _student() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(STUDENT_USER)
    except KeyError:
        pytest.skip(f"no user {STUDENT_USER} (setup.sh creates it)")


@pytest.fixture
def reachable_dir():
    """A directory the student user can enter (pytest's tmp_path is under a 0700 one)."""
    d = Path(tempfile.mkdtemp(prefix="sparknet-sandbox-test-"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_the_launcher_drops_to_the_student_user_with_limits(reachable_dir):
    pw = _student()
    box = Sandbox(pw.pw_uid, pw.pw_gid, memory_limit=2**30, nproc=123)
    work = reachable_dir / "work"
    box.prepare_dir(work)
    probe = (
        "import os, resource\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())\n"
        "print(resource.getrlimit(resource.RLIMIT_NPROC))\n"
        "print(open('/proc/self/oom_score_adj').read().strip(), os.getcwd())\n"
        "try:\n"
        "    open('/etc/sparknet-probe', 'w')\n"
        "except PermissionError:\n"
        "    print('denied')\n"
    )
    cmd = box.command(["/usr/bin/python3", "-c", probe], work)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    ids, nproc, adj = out.stdout.splitlines()[:3]
    assert ids == f"{pw.pw_uid} {pw.pw_uid} {pw.pw_gid} []"
    assert nproc == "(123, 123)"
    assert adj == f"1000 {work}"
    assert out.stdout.splitlines()[3] == "denied"


@needs_root
def test_kill_all_as_root_finds_every_process_of_the_user(reachable_dir):
    pw = _student()
    box = Sandbox(pw.pw_uid, pw.pw_gid, memory_limit=2**30)
    work = reachable_dir / "work"
    box.prepare_dir(work)
    cmd = box.command(["/usr/bin/python3", "-c", _daemon_script()], work)
    subprocess.run(cmd, check=True, timeout=60)
    time.sleep(0.3)
    assert len(box.processes()) == 1
    assert box.kill_all() == [] and box.processes() == []
