"""A real Spark standalone cluster on 127.0.0.1: spark-submit with the packed environment.

The cluster tests start a master and two workers (1 core, 2g each) from the
pip-installed pyspark, pack the project into build/sparknet-env.tar.gz (once;
reused while it is newer than the sources), and spark-submit
cluster/job.py with `--archives ...#env` and
`spark.pyspark.python=./env/bin/python`: the executors must import the project
from ./env/, and the Spark classifier must agree with the matrix version to
1e-9. The fast tests prove that both checks of the job can fail.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cluster import job as cluster_job
from cluster.pack_env import pack
from cluster.standalone import SPARK_HOME, ClusterError, free_port, spark_env, standalone_cluster
from matrix.classifier import load_params
from spark.classifier import spark_class
from spark.session import SparkSetupError, java_version
from trainer import monitor
from trainer.settings import parse_args
from util.models import REPO


def _java_problem() -> str | None:
    try:
        java_version()
    except SparkSetupError as e:
        return str(e)
    return None


JAVA_PROBLEM = _java_problem()
pytestmark = pytest.mark.skipif(
    JAVA_PROBLEM is not None, reason=f"Spark needs Java: {JAVA_PROBLEM}"
)

JOB = REPO / "cluster" / "job.py"
TRAINER = REPO / "trainer" / "__main__.py"
AGREEMENT = re.compile(r"^agreement iteration (\d+): .*; worst (\S+) <= 1e-09$", re.M)


@pytest.fixture(scope="session")
def packing():
    """Packs build/sparknet-env.tar.gz in the background (about 1 minute when the sources
    are newer than it, else nothing), so that it overlaps the cluster's start."""
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(pack)


@pytest.fixture(scope="session")
def packed_env(packing) -> Path:
    return packing.result()


@pytest.fixture(scope="module")
def cluster(packing):
    """A master and two 1-core workers on 127.0.0.1, stopped however the tests end."""
    with standalone_cluster(workers=2, cores=1, memory="2g", timeout=120) as c:
        yield c


def spark_submit(master: str, env_archive: Path, app: Path, *args: str, timeout: float = 300):
    """spark-submit of `app` with the packed env, everything on loopback: the command that
    docs/cluster.md shows, with the loopback settings of a one-machine cluster."""
    cmd = [
        str(SPARK_HOME / "bin" / "spark-submit"),
        "--master", master,
        "--archives", f"{env_archive}#env",
        "--conf", "spark.pyspark.python=./env/bin/python",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.driver.host=127.0.0.1",
        "--conf", "spark.driver.bindAddress=127.0.0.1",
        "--conf", "spark.executor.memory=1g",
        # start only when both executors are there, so the env checks reach both
        "--conf", "spark.scheduler.minRegisteredResourcesRatio=1.0",
        "--conf", "spark.scheduler.maxRegisteredResourcesWaitingTime=60s",
        str(app), *args,
    ]  # fmt: skip
    return subprocess.run(
        cmd, cwd=REPO, env=spark_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
@pytest.mark.cluster
def test_spark_submit_with_packed_env_agrees(cluster, packed_env, capsys):
    out = spark_submit(cluster.master_url, packed_env, JOB, "--model", "nn")
    with capsys.disabled():  # the agreement lines are the point: show them with -s
        print("\n" + out.stdout)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr[-4000:]}\n{cluster.logs()}"
    assert f"master {cluster.master_url}" in out.stdout

    # every executor imported the project from its ./env/, on both workers
    env_lines = [ln for ln in out.stdout.splitlines() if ln.startswith("executor env: util")]
    assert env_lines and all(ln.endswith("(ok)") and " from ./env/" in ln for ln in env_lines)
    workers = set(re.findall(r"executor env: python \S*/(worker\d)/app-", out.stdout))
    assert workers == {"worker0", "worker1"}, out.stdout

    agreement = AGREEMENT.findall(out.stdout)
    assert [int(i) for i, _ in agreement] == [1, 2, 3], out.stdout
    assert all(float(worst) <= 1e-9 for _, worst in agreement)
    assert out.stdout.rstrip().endswith("cluster_job: OK")


def train_args(out: Path, master: str) -> list[str]:
    """A float64 sync training run of nn on the sample: 100 steps over 2 partitions."""
    return [
        "nn", "--data", str(REPO / "data" / "cifar10-sample"), "--dtype", "float64",
        "--batch", "100", "--partitions", "2", "--epochs", "5", "--lr", "0.01",
        "--checkpoint-every", "0", "--master", master, "--out", str(out),
    ]  # fmt: skip


def submitted_training(out: Path, *extra: str) -> list[str]:
    """The trainer's arguments for spark-submit: nn on the sample, float64, 2 partitions,
    a checkpoint every 3 steps; the master comes from spark-submit's --master."""
    return [
        "nn", "--data", str(REPO / "data" / "cifar10-sample"), "--dtype", "float64",
        "--batch", "100", "--partitions", "2", "--epochs", "1", "--lr", "0.01",
        "--checkpoint-every", "3", "--out", str(out), *extra,
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.parametrize("mode", [["--mode", "sync"], ["--mode", "avg", "--avg-every", "2"]])
def test_the_trainer_runs_from_the_packed_env_and_resumes(
    cluster, packed_env, tmp_path, run_training, mode
):
    """spark-submit trainer/__main__.py on the two workers, executors importing only ./env:
    6 steps with checkpoints, then --resume to 12; the model equals an uninterrupted run's
    on local[2] bit for bit, and the output holds no Java error."""
    out = tmp_path / "run"
    for extra in (["--max-steps", "6"], ["--max-steps", "12", "--resume"]):
        ran = spark_submit(
            cluster.master_url, packed_env, TRAINER, *submitted_training(out, *mode, *extra)
        )
        assert ran.returncode == 0, f"{ran.stdout[-3000:]}\n{ran.stderr[-4000:]}"
        assert f"master {cluster.master_url}" in ran.stdout  # spark-submit's, not local[*]
        assert re.search(r"^executors: 2 checked, all run project ", ran.stdout, re.M), ran.stdout
        assert (out / "checkpoint.npz").exists()
        lines = (ran.stdout + ran.stderr).splitlines()  # Python's stderr is in stdout here
        java_errors = [ln for ln in lines if re.search(r" ERROR |Exception|Traceback", ln)]
        assert not java_errors, "\n".join(java_errors[:20])
    assert max(r["step"] for r in monitor.read(out / "metrics.jsonl")) == 12

    ref = run_training(parse_args([*submitted_training(tmp_path / "ref", *mode),
                                   "--max-steps", "12", "--master", "local[2]"]))  # fmt: skip
    got, _ = load_params(out / "model.npz")
    for k, v in ref.model.params.items():
        assert np.array_equal(got[k], v), k


OTHER_NUMPY = "2.3.5" if np.__version__ != "2.3.5" else "2.2.6"


@pytest.mark.slow
@pytest.mark.cluster
def test_the_trainer_refuses_executors_with_another_numpy(cluster, packed_env, tmp_path, capsys):
    """A packed env with another numpy: the start-up check stops the run at once, naming
    the executor's host and both versions (packed_env first: packing is sequential)."""
    other = pack(
        REPO / "build" / "sparknet-env-other-numpy.tar.gz", versions={"numpy": OTHER_NUMPY}
    )
    ran = spark_submit(cluster.master_url, other, TRAINER, *submitted_training(tmp_path / "run"))
    assert ran.returncode == 2, ran.stderr[-4000:]
    # spark-submit merges its Python driver's stderr into its stdout
    (message,) = [
        ln for ln in ran.stdout.splitlines() if ln.startswith("python -m trainer: error:")
    ]
    with capsys.disabled():  # the message is the point: show it with -s
        print("\n" + message)
    assert re.search(
        r"executors differ from the driver: executor on \S+ \(in \S+/app-[\d-]+/\d+\): "
        rf"numpy {re.escape(OTHER_NUMPY)} \(driver {re.escape(np.__version__)}\)",
        message,
    ), message
    assert "Traceback" not in ran.stdout + ran.stderr
    assert not (tmp_path / "run" / "checkpoint.npz").exists()  # stopped before training


@pytest.mark.slow
@pytest.mark.cluster
def test_training_survives_a_stopped_worker(cluster, spark, tmp_path, run_training):
    """One of the two workers stops mid-run: the run finishes on the other, and its
    parameters equal a fault-free run's bit for bit. Runs last in this module: the
    cluster keeps one worker afterwards."""
    out = tmp_path / "cluster"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.train", *train_args(out, cluster.master_url)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        step = 0
        deadline = time.monotonic() + 240
        while step < 20 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            records = (
                monitor.read(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
            )
            step = max((r["step"] for r in records), default=0)
        assert proc.poll() is None, (
            f"the run ended before the worker stopped:\n{proc.stdout.read()}"
        )
        cluster.stop_worker(1)
        stopped_at = step
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-4000:]
    assert not cluster.workers[1].running()
    assert cluster.alive_workers() == 1
    records = monitor.read(out / "metrics.jsonl")
    assert stopped_at < 100 and max(r["step"] for r in records) == 100

    # the same run without a fault, on the test session's local[2]
    ref = run_training(parse_args(train_args(tmp_path / "ref", "local[2]")))
    got, _ = load_params(out / "model.npz")
    for k, v in ref.model.params.items():
        assert np.array_equal(got[k], v), k


@pytest.mark.cluster
def test_cluster_start_timeout_is_clear_and_cleans_up(tmp_path):
    with pytest.raises(ClusterError, match=r"(?s)(did not answer|did not register).*--- master"):
        with standalone_cluster(workers=1, timeout=0.5, log_dir=tmp_path):
            pass  # pragma: no cover
    # nothing started for this cluster is left running
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(tmp_path) in cmdline.read_bytes().decode(errors="replace"):
                left.append(cmdline.parent.name)
        except OSError:
            continue
    assert not left, f"processes still running: {left}"


# --------------------------------------------------------------------------- the job can fail


def test_job_env_check_fails_without_the_packed_env(spark):
    """On local[2] the executors import the repository's util: the check must say so."""
    with pytest.raises(cluster_job.CheckFailed, match=r"do not use the shipped environment"):
        cluster_job.check_executor_env(spark.sparkContext, "env")


class Perturbed(spark_class("nn")):
    """Defect: the gradients are off by a relative 1e-3: far above the 1e-9 tolerance."""

    def backward(self, forwarded, params):
        loss, n, grads = super().backward(forwarded, params)
        return loss, n, {k: g * (1 + 1e-3) for k, g in grads.items()}


def test_job_agreement_check_fails_on_disagreement(spark, monkeypatch):
    monkeypatch.setattr(cluster_job, "spark_class", lambda name: Perturbed)
    args = argparse.Namespace(
        model="nn", data=str(REPO / "data" / "cifar10-sample"), images=60, iters=2,
        partitions=2, chunks="50,10", tol=1e-9,
    )  # fmt: skip
    with pytest.raises(cluster_job.CheckFailed, match=r"agreement: iteration 1: Spark departs"):
        cluster_job.check_agreement(spark, args)


def test_job_unreachable_master_fails_fast():
    t0 = time.perf_counter()
    master = f"spark://127.0.0.1:{free_port()}"
    out = subprocess.run(
        [sys.executable, str(JOB), "--master", master],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"cannot reach the Spark master {master}" in out.stderr
    assert "Traceback" not in out.stderr
    assert time.perf_counter() - t0 < 60


def test_uneven_chunks():
    assert cluster_job.uneven_chunks(500) == [175, 28, 130, 1, 166]
    assert sum(cluster_job.uneven_chunks(7)) == 7 and min(cluster_job.uneven_chunks(7)) >= 1
