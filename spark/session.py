"""SparkSession helper: an embedded local[*] Spark by default, or a cluster by --master.

Everything binds to 127.0.0.1 unless told otherwise, executors get one BLAS
thread per Python worker (and malloc settings that keep freed memory for
reuse), and Python workers run this interpreter (so they see the same
installed packages and the built Cython extension).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlparse

from pyspark import SparkContext
from pyspark.sql import SparkSession

from util.kernels import MALLOC_ENV

MIN_JAVA = 17
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class SparkSetupError(RuntimeError):
    """Spark cannot start: no Java, an old Java, or an unreachable master."""


def java_version() -> int:
    """The major version of the `java` that Spark will use (JAVA_HOME or PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        raise SparkSetupError(
            f"Java {MIN_JAVA}+ is required for Spark but no `java` was found "
            "(install a JDK, e.g. `apt-get install openjdk-17-jre-headless`, or set JAVA_HOME)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        raise SparkSetupError(f"could not read the Java version from `{java} -version`")
    major = int(m.group(1))
    if major == 1:  # "1.8.0" style
        major = int(m.group(2))
    if major < MIN_JAVA:
        raise SparkSetupError(
            f"Spark needs Java {MIN_JAVA} or newer, but {java} is Java {major}; "
            "install a newer JDK or point JAVA_HOME at one"
        )
    return major


def check_master_reachable(master: str, timeout: float = 5.0) -> None:
    """For spark://host:port masters, fails fast with a clear message when nothing listens."""
    if not master.startswith("spark://"):
        return
    for hostport in master[len("spark://") :].split(","):
        url = urlparse("spark://" + hostport)
        try:
            with socket.create_connection((url.hostname, url.port or 7077), timeout=timeout):
                return
        except OSError:
            continue
    raise SparkSetupError(
        f"cannot reach the Spark master {master}: nothing answers there; "
        "start the master (the project's docs/cluster.md shows how) or check --master / MASTER="
    )


# local, local[N], local[*], local[N,F] (F: attempts per task)
_LOCAL = re.compile(r"local(?:\[(?P<threads>\*|\d+)(?:,\s*\d+)?\])?")
# the driver's loggers that repeat a failed task's error (its traceback, "aborting job")
TASK_FAILURE_LOGGERS = (
    "org.apache.spark.executor.Executor",
    "org.apache.spark.scheduler.TaskSetManager",
)


def with_task_attempts(master: str, attempts: int) -> tuple[str, dict[str, str]]:
    """(master, conf) under which every Spark task is tried `attempts` times before its job
    fails: local masters carry the number (local[N,F]); others read spark.task.maxFailures."""
    if attempts < 1:
        raise ValueError(f"task attempts must be >= 1, got {attempts}")
    m = _LOCAL.fullmatch(master.strip())
    if m:
        return f"local[{m['threads'] or 1},{attempts}]", {}
    return master, {"spark.task.maxFailures": str(attempts)}


def get_session(
    master: str = "local[*]",
    app_name: str = "sparknet",
    blas_threads: int = 1,
    conf: dict[str, str] | None = None,
    task_attempts: int | None = None,
) -> SparkSession:
    """A SparkSession for `master` (local[*], local[N], local[N,F] or spark://host:port).

    blas_threads: BLAS threads per Python worker (default 1, so local[N] does
    not oversubscribe the cores). conf: extra Spark settings. task_attempts: how often a
    task is tried before its job fails (None: Spark's default for the master, i.e. once
    for local[N], F times for local[N,F], spark.task.maxFailures (4) on a cluster). With 1
    a failing task fails at once, and the driver's log no longer repeats its traceback:
    the job's exception carries it.
    """
    java_version()
    check_master_reachable(master)
    if task_attempts is not None:
        master, attempts_conf = with_task_attempts(master, task_attempts)
        conf = {**(conf or {}), **attempts_conf}
    # bind the driver (and the JVM it starts) to loopback unless told otherwise
    host = os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.driver.host", host)
        .config("spark.driver.bindAddress", host)
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "4g")
    )
    # Python workers run PYSPARK_PYTHON (pyspark reads only the environment variable); by
    # default this interpreter, so executors see the same packages and the built extension
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for var in BLAS_ENV:
        builder = builder.config(f"spark.executorEnv.{var}", str(blas_threads))
    for var, value in MALLOC_ENV.items():
        builder = builder.config(f"spark.executorEnv.{var}", value)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    if task_attempts == 1:
        quiet_task_failures(spark)
    return spark


def submitted_master(fallback: str = "local[*]") -> str:
    """The --master given to spark-submit when this driver runs under it (its JVM holds the
    setting), else `fallback`: commands default to it, so a master is not given twice."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # set by spark-submit for a Python driver
        return fallback
    from pyspark import SparkConf

    SparkContext._ensure_initialized()  # SparkConf() reads spark-submit's settings from it
    return SparkConf().get("spark.master", fallback)


def stop_quietly(spark: SparkSession) -> None:
    """Stops Spark without its shutdown noise: executors and RPC handlers still answering
    while the context closes log errors (e.g. TransportResponseHandler's
    RejectedExecutionException) that say nothing about a run that has ended well."""
    jvm = spark.sparkContext._jvm
    config = jvm.org.apache.logging.log4j.core.config.Configurator
    config.setRootLevel(jvm.org.apache.logging.log4j.Level.OFF)
    spark.stop()


def quiet_task_failures(spark: SparkSession) -> None:
    """Silences the driver's log of failed tasks (in local mode, the executors' too): with
    one attempt per task, each failure fails its job, whose exception says the same."""
    jvm = spark.sparkContext._jvm
    off = jvm.org.apache.logging.log4j.Level.OFF
    for name in TASK_FAILURE_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, off)


@contextlib.contextmanager
def job_group(sc: SparkContext, group: str, description: str = "") -> Iterator[str]:
    """Runs the block's Spark jobs in the job group `group`, then restores the caller's group
    (so the caller's job counts stay its own); yields the group id."""
    previous = sc.getLocalProperty("spark.jobGroup.id")
    sc.setJobGroup(group, description or group)
    try:
        yield group
    finally:
        sc.setLocalProperty("spark.jobGroup.id", previous)
