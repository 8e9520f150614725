"""A Spark standalone cluster on 127.0.0.1, started from the pip-installed pyspark itself.

    with standalone_cluster(workers=2) as cluster:
        ...  # spark-submit --master cluster.master_url ...
        cluster.stop_worker(1)  # e.g. to test what happens when an executor dies

or from a shell (prints the master URL, runs until Ctrl-C):

    python -m cluster.standalone --workers 2

The master and every worker run `<pyspark>/bin/spark-class` with SPARK_HOME set
to the pyspark package directory and SPARK_LOCAL_IP=127.0.0.1, on free ports,
each in its own process group with its log in a temporary directory. Leaving
the `with` block, normally or by an exception, stops every process it started
(SIGTERM to the group, then SIGKILL) and removes the temporary directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from spark.session import SparkSetupError, java_version

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # every process binds loopback only
SPARK_HOME = Path(pyspark.__file__).resolve().parent
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


class ClusterError(RuntimeError):
    """The standalone cluster did not come up (the message carries the log tail)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def spark_env(**extra: str) -> dict[str, str]:
    """The environment for spark-class / spark-submit of the pip-installed pyspark, on loopback."""
    env = dict(os.environ)
    env.update(SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP=HOST, **extra)
    # a stray PYSPARK_PYTHON from the caller's shell would override the app's choice
    env.pop("PYSPARK_PYTHON", None)
    env.pop("PYSPARK_DRIVER_PYTHON", None)
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(text[-lines:])


@dataclass
class Process:
    """One daemon (master or worker): its Popen, log file and web UI port."""

    name: str
    popen: subprocess.Popen
    log: Path
    webui_port: int
    stopped: bool = False  # set by stop(): its group id may belong to someone else afterwards

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after `grace` seconds; idempotent.

        Returns once no process of the group is left (spark-class, its java, and
        a worker's executors), not merely the one this object started.
        """
        if self.stopped:
            return
        pgid = self.popen.pid  # start_new_session: the group's id is the leader's pid
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            if not _group_alive(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.popen.poll()  # reap the leader, or it stays a zombie of ours
                if not _group_alive(pgid):
                    break
                time.sleep(0.1)
            else:
                log.warning("%s did not stop after %s", self.name, sig.name)
        if _group_alive(pgid):
            log.error("%s (process group %d) survived SIGKILL", self.name, pgid)
        try:
            # a JVM's leader thread shows as a zombie a moment before it can be reaped
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) could not be reaped", self.name, pgid)
            return
        self.stopped = True


def _group_alive(pgid: int) -> bool:
    """True while a process of group `pgid` is alive (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True  # cannot tell zombies apart here: assume alive
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue  # the process went away meanwhile
        if int(pgrp) == pgid and state != "Z":
            return True
    return False


@dataclass
class StandaloneCluster:
    """A running master and workers; `master_url` is what --master takes."""

    master_url: str
    webui_url: str
    log_dir: Path
    master: Process
    workers: list[Process] = field(default_factory=list)

    def status(self, timeout: float = 5.0) -> dict:
        """The master's JSON status (workers, applications), as its web UI serves it."""
        # no proxy for loopback, whatever http_proxy says
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.webui_url + "/json/", timeout=timeout) as r:
            return json.load(r)

    def alive_workers(self) -> int:
        try:
            workers = self.status()["workers"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(w.get("state") == "ALIVE" for w in workers)

    def stop_worker(self, index: int) -> None:
        """Stops one worker (its executors die with it), e.g. to test fault tolerance."""
        self.workers[index].stop()

    def stop(self) -> None:
        """Stops the workers, then the master; never raises for an already stopped process."""
        for p in [*self.workers, self.master]:
            try:
                p.stop()
            except Exception:  # keep stopping the others, but say so
                log.exception("could not stop %s", p.name)

    def logs(self, lines: int = 30) -> str:
        """The tail of every daemon's log, for error messages."""
        return "\n".join(
            f"--- {p.name} ({p.log}) ---\n{log_tail(p.log, lines)}"
            for p in [self.master, *self.workers]
        )


def _spawn(name: str, args: list[str], log_path: Path, env: dict[str, str]) -> Process:
    """Starts `spark-class args` in a new process group, output to log_path."""
    with open(log_path, "wb") as out:
        popen = subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # own process group, so stop() reaches the java child
        )
    return Process(name, popen, log_path, int(args[args.index("--webui-port") + 1]))


def _wait(cluster: StandaloneCluster, workers: int, deadline: float) -> None:
    """Waits until the master answers and reports `workers` ALIVE workers (0: just answers).

    ClusterError with the logs when a daemon exits or time.monotonic() passes `deadline`.
    """
    while time.monotonic() < deadline:
        dead = [p.name for p in [cluster.master, *cluster.workers] if not p.running()]
        if dead:
            raise ClusterError(
                f"Spark standalone: {', '.join(dead)} exited while starting\n{cluster.logs()}"
            )
        try:
            alive = sum(w.get("state") == "ALIVE" for w in cluster.status(timeout=2)["workers"])
        except (OSError, ValueError, KeyError):
            alive = -1  # the master's web UI is not up yet
        if alive >= workers:
            return
        time.sleep(0.5)
    what = "the master did not answer" if workers == 0 else f"{workers} workers did not register"
    raise ClusterError(
        f"Spark standalone: {what} at {cluster.master_url} within the timeout "
        f"({cluster.alive_workers()} workers alive)\n{cluster.logs()}"
    )


@contextmanager
def standalone_cluster(
    workers: int = 2,
    cores: int = 1,
    memory: str = "2g",
    timeout: float = 120.0,
    log_dir: Path | None = None,
) -> Iterator[StandaloneCluster]:
    """Starts a master and `workers` workers (`cores` cores, `memory` each) on 127.0.0.1.

    Starts the workers once the master answers, then waits until every worker
    is registered; all within `timeout` seconds. log_dir: where the logs and
    work dirs go (default: a temporary directory, removed afterwards). Every
    process is stopped on exit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    java_version()  # a clear SparkSetupError instead of a log full of "java: not found"
    tmp = None if log_dir else tempfile.mkdtemp(prefix="sparknet-standalone-")
    root = Path(log_dir or tmp)
    root.mkdir(parents=True, exist_ok=True)
    env = spark_env(SPARK_CONF_DIR=str(root))  # no stray spark-defaults.conf
    props = root / "spark-defaults.conf"
    # no REST submission server: it would take the fixed port 6066 (clashes between clusters)
    props.write_text("spark.master.rest.enabled false\n")
    port, webui = free_port(), free_port()
    cluster: StandaloneCluster | None = None
    deadline = time.monotonic() + timeout
    master_args = [
        MASTER_CLASS, "--host", HOST, "--port", str(port), "--webui-port", str(webui),
        "--properties-file", str(props),
    ]  # fmt: skip
    try:
        master = _spawn("master", master_args, root / "master.log", env)
        cluster = StandaloneCluster(
            f"spark://{HOST}:{port}", f"http://{HOST}:{webui}", root, master
        )
        # workers that find no master retry only after 5-15 s, later after a minute or more:
        # start them once the master answers
        _wait(cluster, 0, deadline)
        for i in range(workers):
            work_dir = root / f"worker{i}"
            work_dir.mkdir(exist_ok=True)
            args = [
                WORKER_CLASS, cluster.master_url, "--host", HOST, "--cores", str(cores),
                "--memory", memory, "--webui-port", str(free_port()), "--work-dir", str(work_dir),
                "--properties-file", str(props),
            ]  # fmt: skip
            cluster.workers.append(_spawn(f"worker{i}", args, root / f"worker{i}.log", env))
        _wait(cluster, workers, deadline)
        log.info("Spark standalone: %s, %d workers, logs in %s", cluster.master_url, workers, root)
        yield cluster
    finally:
        if cluster is not None:
            cluster.stop()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.standalone",
        description="Run a Spark standalone master and workers on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--workers", type=int, default=2, help="number of workers")
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="2g", help="memory per worker (e.g. 1g, 2g)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for startup")
    parser.add_argument("--log-dir", type=Path, help="keep logs and work dirs here (default: temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the cluster as cleanly as Ctrl-C
    try:
        with standalone_cluster(
            args.workers, args.cores, args.memory, args.timeout, args.log_dir
        ) as c:
            print(c.master_url, flush=True)
            print(
                f"web UI {c.webui_url}, logs in {c.log_dir}; Ctrl-C stops the cluster", flush=True
            )
            while all(p.running() for p in [c.master, *c.workers]):
                time.sleep(1)
            print("a Spark daemon exited:\n" + c.logs(), file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        return 0
    except (ClusterError, SparkSetupError) as e:
        print(f"python -m cluster.standalone: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
