"""Where submitted code runs: as an unprivileged user, with limits, and never after grading.

When the grader runs as root (Gradescope), every process that imports or runs a submission
(the step runner, its Spark JVM and Python workers) is started through this module's command
line, which drops to the student user (created by grading/autograder/setup.sh) after
setting the limits:

    python -I grading/sandbox.py --uid U --gid G --workdir DIR [--nproc N] [--fsize BYTES]
                              [--isolate-network] -- PROGRAM ARG ...

  - its own network namespace with only the loopback interface up, and its own /tmp,
    /var/tmp and /dev/shm (directories of its scratch, mounted over them), where the
    platform lets root create namespaces (Spark talks to its JVM and workers over
    127.0.0.1 only);
  - RLIMIT_NPROC (processes and threads of the user), RLIMIT_FSIZE (largest file), no core
    files, oom_score_adj 1000 (the kernel's OOM killer picks student processes first);
  - no supplementary groups, the student's uid and gid, umask 077, cwd DIR.

The grader (`Sandbox`) watches the memory of all the user's processes together (their
resident set, summed: a submission that allocates 20 GB is stopped at the limit, whatever it
forks) and kills every process of the user when a step ends: a process that forks, calls
setsid or sleeps in the background is found by its uid, not by its process group.

When the grader is not root (staff grading on their own machine) submitted code runs as the
grader's own user, with the same memory watch; its processes are found by a random marker in
their environment and by process group. That is a convenience, not a boundary.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import fcntl
import os
import pwd
import resource
import secrets
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

STUDENT_USER = "sparknet-student"  # created by grading/autograder/setup.sh
MARKER = "SPARKNET_GRADE_MARKER"  # environment variable of every process of a grading run
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
PAGE = os.sysconf("SC_PAGE_SIZE")
WORK_ROOT = Path("/var/lib/sparknet-grade")  # root grading's trees and scratch directories
LOCKS = Path("/run/sparknet-grade")  # root's: one grading at a time per student user
LAUNCHER = str(Path(__file__).resolve())  # run as a script: it imports the standard library only


class SandboxError(RuntimeError):
    """The sandbox cannot be set up (no student user): a problem of the grader, not the student."""


def _uid_of(pid: int) -> int | None:
    """The real uid of a live process (None: gone, or a zombie, which holds nothing)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:") and line.split()[1] in ("Z", "X"):
                    return None
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


SHARED_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # where any user may write


def _tmpfs_dirs() -> list[str]:
    """The SHARED_DIRS held in memory (tmpfs): a file there is memory no process shows."""
    try:
        mounts = {
            ln.split()[1]: ln.split()[2] for ln in Path("/proc/mounts").read_text().splitlines()
        }
    except OSError:
        return []
    return [d for d in SHARED_DIRS if mounts.get(d) == "tmpfs"]


def files_of(uid: int, dirs: tuple[str, ...] | list[str]) -> list[tuple[str, os.stat_result]]:
    """(path, lstat) of everything owned by uid under dirs, deepest first, no link followed."""
    found = []
    for top in dirs:
        for dirpath, dirnames, filenames in os.walk(top, topdown=False):
            for name in filenames + dirnames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if st.st_uid == uid:
                    found.append((path, st))
    return found


def resident_bytes(pids: list[int]) -> int:
    """The summed resident set of the processes (shared pages counted in each)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return total


def _cgroup_files(v2_name: str, v1_controller: str, v1_name: str) -> list[str]:
    """The text of a cgroup file in this process's cgroup and each parent (v2 `v2_name`,
    v1 `v1_controller`/`v1_name`), as far as /sys/fs/cgroup shows them."""
    texts = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return texts
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            base, name = Path("/sys/fs/cgroup"), v2_name
            if not (base / "cgroup.controllers").exists():
                base = Path("/sys/fs/cgroup/unified")
        elif v1_controller in controllers.split(","):
            base, name = Path("/sys/fs/cgroup") / controllers, v1_name
        else:
            continue
        here = Path(path.lstrip("/"))
        for d in (here, *here.parents):
            try:
                texts.append((base / d / name).read_text().strip())
            except OSError:
                continue
    return texts


def memory_available() -> int:
    """The memory this machine or container may use: the smallest cgroup limit above this
    process (v2 or v1), else MemTotal."""
    with open("/proc/meminfo") as f:
        total = next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("MemTotal:"))
    limits = [
        int(t)
        for t in _cgroup_files("memory.max", "memory", "memory.limit_in_bytes")
        if t.isdigit()
    ]
    return min([total, *limits])


def cpus_available() -> float:
    """The CPUs this process may use: its affinity, capped by any cgroup CPU quota."""
    cpus = float(len(os.sched_getaffinity(0)))
    for text in _cgroup_files("cpu.max", "cpu", "cpu.cfs_quota_us"):
        quota = text.split()[0]
        if quota.lstrip("-").isdigit() and int(quota) > 0:
            period = int(text.split()[1]) if " " in text else 100_000
            cpus = min(cpus, int(quota) / period)
    return cpus


@dataclass
class Sandbox:
    """How the submitted code of one grading run is started, watched and ended."""

    uid: int | None  # the student user (root grading), None: the grader's own user
    gid: int | None
    memory_limit: int  # bytes, all of the run's processes together
    nproc: int = 2048
    fsize: int = 2 << 30
    isolate_network: bool = False
    private_dirs: list[str] = field(default_factory=list)  # SHARED_DIRS it gets its own of
    marker: str = field(default_factory=lambda: secrets.token_hex(16))

    unsandboxed_because: str = ""  # why submitted code runs as the grader's user
    tmpfs: list[str] = field(default_factory=_tmpfs_dirs)

    @classmethod
    def for_this_machine(
        cls, memory_limit: int, user: str = STUDENT_USER, strict: bool = False
    ) -> Sandbox:
        """As root: the student user (SandboxError if it does not exist or cannot run this
        Python) and network isolation where unshare works; otherwise the current user. Not
        strict, a root grader whose Python the student user cannot run (a developer's
        interpreter under /root) falls back to the current user and says so."""
        if os.geteuid() != 0:
            return cls(None, None, memory_limit, unsandboxed_because="the grader is not root")
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise SandboxError(
                f"the grader runs as root but the user {user!r} that runs submissions does not "
                f"exist; setup.sh creates it (useradd --system --no-create-home {user})"
            ) from None
        if pw.pw_uid == 0:
            raise SandboxError(f"the student user {user!r} must not be root")
        box = cls(pw.pw_uid, pw.pw_gid, memory_limit)
        problem = box._python_problem()
        if problem and strict:
            raise SandboxError(problem)
        if problem:
            return cls(None, None, memory_limit, unsandboxed_because=problem)
        box.isolate_network = box._probe("network")
        if box._probe("mounts"):  # all but a shared directory that holds this Python
            box.private_dirs = [d for d in SHARED_DIRS if not Path(sys.prefix).is_relative_to(d)]
        return box

    def _python_problem(self) -> str:
        """Why the student user cannot run this interpreter with numpy ('' if it
        can)."""
        with tempfile.TemporaryDirectory(prefix="sparknet-probe-") as tmp:
            os.chown(tmp, self.uid, self.gid)
            cmd = self.command([sys.executable, "-c", "import numpy"], Path(tmp))
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                return f"the student user cannot run {sys.executable}: {e}"
        if out.returncode:
            last = (out.stderr.strip().splitlines() or ["?"])[-1]
            return (
                f"the student user cannot run {sys.executable} with numpy ({last}); "
                "make the interpreter and its packages readable by all (setup.sh builds such a "
                "venv from /usr/bin/python3)"
            )
        return ""

    @property
    def as_root(self) -> bool:
        return self.uid is not None

    def describe(self) -> str:
        """One line for the grader's log and the staff: what is enforced here."""
        if not self.as_root:
            return (
                f"{self.unsandboxed_because}: submitted code runs as the grader's own user (no "
                "user switch, no process limit, no network isolation); memory is watched"
            )
        net = "own network namespace (loopback only)" if self.isolate_network else "shared network"
        tmp = f"private {', '.join(self.private_dirs)}" if self.private_dirs else "shared /tmp"
        return (
            f"submitted code runs as uid {self.uid}, memory limit "
            f"{self.memory_limit / 2**30:.1f} GB, at most {self.nproc} processes, {net}, {tmp}"
        )

    @property
    def work_root(self) -> Path | None:
        """Where a grading's tree and scratch directories go: as root, a root-owned directory
        outside the shared ones (which a private /tmp covers); else the default temporary
        directory."""
        if not self.as_root:
            return None
        WORK_ROOT.mkdir(mode=0o711, exist_ok=True)
        os.chmod(WORK_ROOT, 0o711)
        return WORK_ROOT

    def _probe(self, what: str) -> bool:
        """Whether the launcher can isolate `what` (network | mounts) here."""
        with tempfile.TemporaryDirectory(dir=self.work_root) as tmp:
            probe = [sys.executable, "-I", LAUNCHER, f"--probe={what}", f"--workdir={tmp}"]
            try:
                return subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                return False

    def command(self, argv: list[str], workdir: Path) -> list[str]:
        """The command line that runs argv in the sandbox (argv itself when not root)."""
        if not self.as_root:
            return argv
        return [
            sys.executable,
            "-I",  # the launcher runs as root: no PYTHONPATH, no user site, no cwd on sys.path
            LAUNCHER,
            f"--uid={self.uid}",
            f"--gid={self.gid}",
            f"--workdir={workdir}",
            f"--nproc={self.nproc}",
            f"--fsize={self.fsize}",
            *(["--isolate-network"] if self.isolate_network else []),
            *([f"--private={','.join(self.private_dirs)}"] if self.private_dirs else []),
            "--",
            *argv,
        ]

    @contextlib.contextmanager
    def exclusive(self, log: Callable[[str], None]) -> Iterator[None]:
        """As root, one grading at a time per student user on this machine (a step's end
        kills every process of the user): a lock in /run, where only root may write."""
        if not self.as_root:
            yield
            return
        LOCKS.mkdir(mode=0o700, exist_ok=True)
        with open(LOCKS / f"{self.uid}.lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"waiting for another grading as uid {self.uid} to end")
                fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def prepare_dir(self, path: Path) -> None:
        """A directory only the submitted code (and root) may use."""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.as_root:
            os.chown(path, self.uid, self.gid)

    def processes(self, group: int | None = None) -> list[int]:
        """Every live process of the run: by uid as root; by marker and group otherwise."""
        me = os.getpid()
        if self.as_root:
            return [p for p in _pids() if p != me and _uid_of(p) == self.uid]
        marker = f"{MARKER}={self.marker}".encode()
        found = []
        for p in _pids():
            if p == me:
                continue
            try:
                in_group = group is not None and os.getpgid(p) == group
            except OSError:
                continue
            if (in_group or _has_marker(p, marker)) and _uid_of(p) is not None:
                found.append(p)
        return found

    def resident(self, group: int | None = None) -> int:
        """The run's memory: its processes' resident sets and, as root, its files in tmpfs."""
        used = resident_bytes(self.processes(group))
        if self.as_root:
            used += sum(st.st_blocks * 512 for _, st in files_of(self.uid, self.tmpfs))
        return used

    def remove_files(self) -> int:
        """As root, after kill_all: removes what the student user left in the shared
        directories (Spark's and the JVM's temporary files, anything a submission wrote
        there); returns how many entries were removed."""
        if not self.as_root:
            return 0
        removed = 0
        for path, st in files_of(self.uid, SHARED_DIRS):
            try:
                if stat.S_ISDIR(st.st_mode):
                    os.rmdir(path)  # empty by now: its entries came first
                else:
                    os.unlink(path)  # a link itself, never its target
                removed += 1
            except OSError:
                pass
        return removed

    def kill_all(self, group: int | None = None, timeout: float = 20.0) -> list[int]:
        """SIGKILLs every process of the run until none is left; returns those still alive
        after `timeout` (empty: all gone)."""
        deadline = time.monotonic() + timeout
        while True:
            alive = self.processes(group)
            if not alive:
                return []
            if self.as_root:
                self._kill_as_user()
            for sig in (signal.SIGSTOP, signal.SIGKILL):  # stopped, a process forks no more
                for pid in alive:
                    try:
                        os.kill(pid, sig)
                    except OSError:
                        pass
            if time.monotonic() > deadline:
                return self.processes(group)
            time.sleep(0.05)

    def _kill_as_user(self) -> None:
        """kill(-1, SIGKILL) from a child running as the student user: the kernel signals
        every process of that user at once, however fast they fork."""
        pid = os.fork()
        if pid == 0:  # the child: no Python clean-up, whatever happens
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


# --------------------------------------------------------------------------- the launcher


def _loopback_up() -> None:
    """Brings `lo` up in a fresh network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, ifr)[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


def _unshare_network() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
    _loopback_up()


def _private_dirs(dirs: list[str], workdir: Path, uid: int, gid: int) -> None:
    """A mount namespace of its own in which each of dirs (SHARED_DIRS) is a directory of
    workdir mounted over it, so that submitted code writes nowhere but its scratch."""
    libc = ctypes.CDLL(None, use_errno=True)
    ms_bind, ms_rec, ms_private = 4096, 16384, 1 << 18

    def check(ret: int, what: str) -> None:
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, ms_rec | ms_private, None), "mount --make-rprivate /")
    for d in dirs:
        if not os.path.isdir(d):
            continue
        own = workdir / ("shared" + d.replace("/", "-"))  # shared-tmp, shared-var-tmp, ...
        own.mkdir(mode=0o700, exist_ok=True)
        os.chown(own, uid, gid)
        check(libc.mount(str(own).encode(), d.encode(), None, ms_bind, None), f"bind {d}")


def _launch(args: argparse.Namespace) -> int:
    """Runs as root: limits, then the student user, then exec of the program."""
    if args.isolate_network:
        _unshare_network()
    if args.private:
        _private_dirs(args.private.split(","), args.workdir, args.uid, args.gid)
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")
    resource.setrlimit(resource.RLIMIT_NPROC, (args.nproc, args.nproc))
    resource.setrlimit(resource.RLIMIT_FSIZE, (args.fsize, args.fsize))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setgroups([])
    os.setgid(args.gid)
    os.setuid(args.uid)
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SystemExit("sandbox: could not drop root")
    os.umask(0o077)
    os.chdir(args.workdir)
    os.execvp(args.program[0], args.program)
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grading.sandbox", description=__doc__)
    p.add_argument("--uid", type=int)
    p.add_argument("--gid", type=int)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--nproc", type=int, default=2048)
    p.add_argument("--fsize", type=int, default=2 << 30)
    p.add_argument("--isolate-network", action="store_true")
    p.add_argument("--private", help="shared directories to mount private, comma-separated")
    p.add_argument(
        "--probe", choices=("network", "mounts"), help="exit 0 if that isolation works here"
    )
    p.add_argument("program", nargs="*")
    args = p.parse_args(argv)
    if args.probe:
        try:
            if args.probe == "network":
                _unshare_network()
            else:
                _private_dirs(list(SHARED_DIRS), args.workdir, os.getuid(), os.getgid())
        except OSError as e:
            print(f"sandbox: no {args.probe} isolation here: {e}", file=sys.stderr)
            return 1
        return 0
    if None in (args.uid, args.gid, args.workdir) or not args.program:
        p.error("--uid, --gid, --workdir and a program are required")
    if os.geteuid() != 0:
        print("sandbox: the launcher must run as root", file=sys.stderr)
        return errno.EPERM
    return _launch(args)


if __name__ == "__main__":
    sys.exit(main())
