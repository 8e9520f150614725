"""`make scaling`: where a training round's time goes, and a model of scaling to 256 executors.

    python -m bench.scaling [--settings 'local[1]' 'local[2]' standalone] [--batch 64]
                            [--ks 1 5 20] [--rounds 12] [--ballasts 25 100] [--quick]
                            [--out runs/scaling] [--docs docs]

Measures training rounds of the CNN (one Spark job each: one SGD step in sync
mode, K local steps and an average in avg mode) on local[1], local[2] and a
two-worker standalone cluster on 127.0.0.1 (`cluster.standalone`, 1 core and
2g each; the executors run this venv's interpreter: docs/cluster.md case 1).
Every round is built from trainer.distributed's Layout, Recipe and tasks as
trainer.train's sync_round/avg_round do, with the task wrapped so that the
executor times its own phases (all processes share this machine's clock):

    compute    the distributed task itself: normalisation, loss_and_grads, local SGD steps
    serialise  pickling the broadcast value (driver) and unpickling it (executor, estimated
               on the driver from the same bytes), pickling the result (executor),
               unpickling the results (driver)
    broadcast  sc.broadcast and destroy minus the pickling, and the executor's bc.value
               minus the unpickling
    aggregate  combining the partitions' results on the driver (+ sync's optimiser step)
    overhead   the rest of the round's wall time: scheduling, task launch, the JVM's
               broadcast fetch, Python worker IPC, moving the results to the driver

The components are those of the task that finished last (the one the driver waited
for), so they add up to the round's wall time. A task returns its results pickled
(so that the executor's pickling can be timed), which Spark then wraps once more.

Sync rounds are also run with ballast: extra float32 arrays of --ballasts times the
parameter bytes in the broadcast, in the results, or both, so that the per-byte costs
can be told apart; and trivial jobs of 1..64 tasks give the per-task cost.

A model, fitted per setting by least squares on the measured rounds (residuals
printed), predicts images/s against executors E = 1..--max-executors for this CNN and
for a network 100x larger (compute scaled by FLOPs, the rest by parameter bytes), in
sync (weak scaling: --batch images per executor per step) and avg K = 1, 5, 20, with
the driver gathering E results (flat, as measured) or a tree (trainer/aggregate.py's).
Writes the raw measurements to --out/scaling.json, and the table, the model and the
plot to --docs/scaling.md and scaling.png.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import math
import os
import pickle
import platform
import re
import statistics
import subprocess
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cluster.standalone import standalone_cluster
from spark.classifier import add_results
from spark.session import get_session
from trainer import aggregate, distributed
from trainer.data import distribute
from trainer.settings import Settings
from util import data, models, network, optim

STANDALONE = "standalone"  # the two-worker cluster on 127.0.0.1
COMPONENTS = ("compute", "serialise", "broadcast", "aggregate", "overhead")
IN_SHAPE = (3, 32, 32)
PROTOCOL = pickle.HIGHEST_PROTOCOL  # what PySpark's pickle serialiser uses
BIG = 100  # the larger network: 100x the parameters and the FLOPs
# the model's terms besides compute: the overhead split into its parts
TERMS = ("serialise", "broadcast", "aggregate", "job overhead", "per-task scheduling",
         "broadcast fetch", "gather")  # fmt: skip


# ----------------------------------------------------------------------------- one round


def timed_task(task_of: Callable[[object], Callable], bc, result_ballast: int) -> Callable:
    """Partition function around a trainer.distributed task: fetches the broadcast
    (value, ballast), runs `task_of(holder of value)` on the records, pickles its results
    with `result_ballast` float32s; yields ((t_start, t_fetched, t_computing, t_computed,
    t_pickled) wall-clock seconds, the computing's CPU seconds), pickled bytes)."""

    def run(records):
        t0 = time.time()
        value, _ = bc.value
        t1 = time.time()
        extra = np.ones(result_ballast, np.float32) if result_ballast else None
        t2, cpu = time.time(), time.process_time()  # t1..t2: making the ballast (no component)
        results = list(task_of(types.SimpleNamespace(value=value))(records))
        t3, cpu = time.time(), time.process_time() - cpu
        blob = pickle.dumps((results, extra), protocol=PROTOCOL)
        yield (t0, t1, t2, t3, time.time(), cpu), blob

    return run


def mean_of(dicts: Sequence[network.Params]) -> network.Params:
    """Elementwise mean of dicts of arrays, added in partition order (as avg_round does)."""
    total = functools.reduce(lambda a, b: {k: a[k] + b[k] for k in a}, dicts)
    return {k: v / len(dicts) for k, v in total.items()}


@dataclass
class State:
    """The driver's model between rounds."""

    params: network.Params
    velocity: network.Params
    step: int = 0


def timed_round(
    sc,
    rdd,
    partitions: list[int],
    mode: str,
    K: int,
    recipe: distributed.Recipe,
    state: State,
    sgd: optim.SGDConfig,
    bc_ballast: np.ndarray | None,
    result_ballast: int,
) -> dict[str, float]:
    """One round as trainer.train's sync_round/avg_round run it (broadcast, one job, destroy,
    combine in partition order, sync: the optimiser step), timed; updates `state`.
    Returns the round's times (seconds) and payload sizes (bytes)."""
    step = state.step
    if mode == "sync":
        value = state.params

        def task_of(held):
            return distributed.sync_task(recipe, held, step)
    else:
        value = (state.params, state.velocity)
        lrs = [sgd.lr] * K

        def task_of(held):
            return distributed.avg_task(recipe, held, step, lrs, sgd)

    payload = (value, bc_ballast)
    # Spark pickles the value inside sc.broadcast and the executor unpickles it inside
    # bc.value: the same work, timed apart here on the same bytes
    t = time.perf_counter()
    blob = pickle.dumps(payload, protocol=PROTOCOL)
    pickle_bc = time.perf_counter() - t
    t = time.perf_counter()
    pickle.loads(blob)
    unpickle_bc = time.perf_counter() - t

    t0 = time.perf_counter()
    bc = sc.broadcast(payload)
    t1, w1 = time.perf_counter(), time.time()
    try:
        out = sc.runJob(rdd, timed_task(task_of, bc, result_ballast), partitions)
        t2, w2 = time.perf_counter(), time.time()
    finally:
        bc.destroy()
    t3 = time.perf_counter()
    unpickled = [pickle.loads(b) for _, b in out]
    t4 = time.perf_counter()
    results = [r for rs, _ in unpickled for r in rs]
    extras = [e for _, e in unpickled if e is not None]
    if extras:
        functools.reduce(np.add, extras)  # the ballast is combined like gradients
    if mode == "sync":
        loss_sum, n, grads = functools.reduce(add_results, results)
        t5 = time.perf_counter()
        grads = {k: g / n for k, g in grads.items()}
        state.params, state.velocity, _ = optim.sgd_step(
            state.params, grads, state.velocity, loss_sum / n, sgd
        )
    else:
        state.params, state.velocity = (mean_of([r[i] for r in results]) for i in (0, 1))
        t5 = time.perf_counter()
    t6 = time.perf_counter()
    state.step += K

    # the task the driver waited for: the last to finish
    (s, fetched, computing, computed, pickled, cpu), crit_blob = max(out, key=lambda o: o[0][4])
    fetch = fetched - s
    times = {
        "compute": computed - computing,
        "serialise": pickle_bc + unpickle_bc + (pickled - computed) + (t4 - t3),
        "broadcast": (t1 - t0 - pickle_bc) + (t3 - t2) + max(0.0, fetch - unpickle_bc),
        "aggregate": t6 - t4,
    }
    wall = (t6 - t0) - (computing - fetched)  # without making the result ballast
    times["overhead"] = wall - sum(times.values())
    return {
        **times,
        "wall": wall,
        "compute_cpu": cpu,  # below "compute" when other processes had the core
        "pickle_bc": pickle_bc,
        "unpickle_bc": unpickle_bc,
        "fetch": fetch,
        "exec_pickle": pickled - computed,
        "driver_unpickle": t4 - t3,
        "combine": t5 - t4,
        "update": t6 - t5,
        "launch": s - w1,  # runJob called -> the task's Python function starts
        "return": w2 - pickled,  # its result pickled -> runJob returns
        "bc_bytes": len(blob),
        "result_bytes": len(crit_blob),
    }


def jvm_cpu_seconds(sc) -> float:
    """CPU seconds (user + system) of the driver's JVM so far (Linux /proc; 10 ms steps)."""
    pid = sc._jvm.java.lang.ProcessHandle.current().pid()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trivial_jobs(sc, tasks: Sequence[int], repeat: int) -> list[dict[str, float]]:
    """Jobs of P tasks that do almost nothing (count a cached partition of one number),
    after one warm-up each: [{"tasks": P, "wall": s, "driver_cpu": s of the driver JVM}].
    (A task must read its whole input, or its Python worker is not reused.)"""
    rdd = sc.parallelize(range(max(tasks)), max(tasks)).cache()
    rdd.count()
    rows = []
    try:
        for P in tasks:
            sc.runJob(rdd, lambda it: [sum(1 for _ in it)], list(range(P)))
            for _ in range(repeat):
                t, cpu = time.perf_counter(), jvm_cpu_seconds(sc)
                sc.runJob(rdd, lambda it: [sum(1 for _ in it)], list(range(P)))
                wall, cpu = time.perf_counter() - t, jvm_cpu_seconds(sc) - cpu
                rows.append({"tasks": P, "wall": wall, "driver_cpu": cpu})
    finally:
        rdd.unpersist()
    return rows


# ----------------------------------------------------------------------------- measuring


@contextlib.contextmanager
def session(setting: str) -> Iterator[tuple[object, int]]:
    """(SparkSession, executor cores E) of a setting: local[N], or the standalone cluster
    of two 1-core workers (started and stopped here)."""
    if setting != STANDALONE:
        spark = get_session(setting, "sparknet-scaling")
        try:
            yield spark, int(re.fullmatch(r"local\[(\d+)\]", setting)[1])
        finally:
            spark.stop()
        return
    with standalone_cluster(workers=2, cores=1, memory="2g") as cluster:
        spark = get_session(cluster.master_url, "sparknet-scaling")
        try:
            status = spark.sparkContext._jsc.sc().statusTracker()
            deadline = time.monotonic() + 120
            while len(status.getExecutorInfos()) < 3:  # the driver and two executors
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{STANDALONE}: the two executors did not register")
                time.sleep(0.2)
            yield spark, 2
        finally:
            spark.stop()


def tiled(train: data.Dataset, n: int) -> data.Dataset:
    """The images repeated until there are at least n (a round's timing does not depend on
    which images it sees; K = 20 rounds of two workers need more than the sample has)."""
    reps = -(-n // len(train))
    return data.Dataset(np.tile(train.X, (reps, 1, 1, 1)), np.tile(train.y, reps), train.classes)


def measure_setting(args, setting: str, train: data.Dataset) -> tuple[list[dict], list[dict]]:
    """The timed rounds (sync with its ballast sweep, avg per K) and trivial jobs of one
    setting; prints one line per configuration."""
    spec = models.get("cnn")
    norm = data.Normalizer.fit(train.X)
    recipe = distributed.Recipe(spec.layers, norm, args.dtype, False, 0)
    val = data.Dataset(train.X[:2], train.y[:2], train.classes)
    rows = []
    with session(setting) as (spark, E):
        sc = spark.sparkContext
        imgs = tiled(train, 2 * args.batch * E * max(args.ks))
        init = network.init_params(spec.layers, IN_SHAPE, 10, seed=0, dtype=args.dtype)
        param_bytes = sum(a.nbytes for a in init.values())
        for mode, K in [("sync", 1)] + [("avg", k) for k in args.ks]:
            s = Settings(batch=args.batch * E, partitions=E, mode=mode, avg_every=K)
            td = distribute(sc, s, imgs, val)
            td.rdd.count()
            sweep = [(0, 0)]
            if mode == "sync":
                sweep += [(m, r) for b in args.ballasts for m, r in ((b, 0), (0, b), (b, b))]
            # the sweep's configurations take turns round by round, so that the other users'
            # bursts of load fall on all of them alike
            runs = []
            for bc_mult, res_mult in sweep:
                n_bc, n_res = (int(m * param_bytes) // 4 for m in (bc_mult, res_mult))
                state = State(init, {k: np.zeros_like(v) for k, v in init.items()})
                ballast = np.ones(n_bc, np.float32) if n_bc else None
                runs.append((bc_mult, res_mult, state, ballast, n_res, []))
            for i in range(args.warmup + args.rounds):
                parts = td.layout.partitions_of_round(i % td.layout.rounds)
                for bc_mult, res_mult, state, ballast, n_res, got in runs:
                    row = timed_round(
                        sc, td.rdd, parts, mode, K, recipe, state, spec.defaults, ballast, n_res
                    )
                    row.update(
                        setting=setting, mode=mode, K=K, E=E, b=args.batch,
                        param_bytes=param_bytes, bc_ballast=bc_mult, result_ballast=res_mult,
                    )  # fmt: skip
                    if i >= args.warmup:
                        got.append(row)
            for bc_mult, res_mult, _, _, _, got in runs:
                rows += got
                wall = statistics.median(r["wall"] for r in got)
                cpu = statistics.median(r["compute_cpu"] / r["compute"] for r in got)
                print(
                    f"  {setting:<10} {label(mode, K):<9} ballast bc {bc_mult:>3}x result "
                    f"{res_mult:>3}x: {1000 * wall:7.1f} ms/round, "
                    f"{E * args.batch * K / wall:6.0f} img/s, compute on CPU {cpu:.0%} of its "
                    f"wall time (load {os.getloadavg()[0]:.2f})",
                    flush=True,
                )
            td.release()
        jobs = trivial_jobs(sc, args.tasks, max(3, args.rounds // 2))
        for row in jobs:
            row["setting"] = setting
        (a, tau), (_, cpu) = fit_tasks(jobs), fit_tasks(jobs, "driver_cpu")
        print(
            f"  {setting:<10} trivial jobs: {1000 * a:.1f} ms + {1000 * tau:.2f} ms per task; "
            f"driver JVM CPU {1000 * cpu:.2f} ms per task",
            flush=True,
        )
    return rows, jobs


def label(mode: str, K: int) -> str:
    return "sync" if mode == "sync" else f"avg K={K}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ----------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Term:
    """One fitted constant (a cost, kept >= 0 by the fit): name, unit, and its feature of a
    round (the number it multiplies)."""

    name: str
    unit: str
    feature: Callable[[dict], float]


def _one(r: dict) -> float:
    return 1.0


def _levels(E: float) -> float:
    """Broadcast: torrent spreading, each executor passes blocks on: 1 + log2 E hops."""
    return 1.0 + math.log2(E)


# Each component of a round is fitted as a linear function of these features. E: executors
# (the measured rounds gather flat: the driver takes E results; `predict` puts a tree's
# critical path there), bc / R: broadcast / result bytes per task, B: parameter bytes, K
# local steps of b images.
MODEL: dict[str, tuple[Term, ...]] = {
    "compute": (
        Term("c0", "s", _one),
        Term("c_img", "s/image", lambda r: r["K"] * r["b"]),
    ),
    "serialise": (
        Term("s0", "s", _one),
        Term("sigma", "s/byte", lambda r: 2 * r["bc_bytes"] + (1 + r["E"]) * r["result_bytes"]),
    ),
    "broadcast": (
        Term("b0", "s", _one),
        Term("beta", "s/byte", lambda r: r["bc_bytes"]),
    ),
    "aggregate": (
        Term("a0", "s", _one),
        Term("alpha", "s/byte", lambda r: r["E"] * r["result_bytes"]),
        Term("upd", "s/byte", lambda r: r["param_bytes"] * (r["mode"] == "sync")),
    ),
    # (the model adds tau per task beyond the setting's: `predict`)
    "overhead": (
        Term("o0", "s", _one),
        Term("lam", "s/byte", lambda r: r["bc_bytes"] * _levels(r["E"])),
        Term("rho", "s/byte", lambda r: r["E"] * r["result_bytes"]),
    ),
}


@dataclass
class Fit:
    """Least-squares constants of one component and the residuals on the rows (seconds)."""

    coef: dict[str, float]
    residuals: np.ndarray
    clamped: list[str]

    @property
    def rms(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2)))


def fit_component(
    rows: Sequence[dict], terms: Sequence[Term], target: Callable[[dict], float]
) -> Fit:
    """Least squares of target(row) on the terms' features, every constant >= 0 (a cost):
    one that comes out negative (noise where a cost is too small to see) is set to 0 and
    the rest refitted."""
    X = np.array([[t.feature(r) for t in terms] for r in rows], dtype=float)
    y = np.array([target(r) for r in rows], dtype=float)
    active = list(range(len(terms)))
    while True:
        scale = np.maximum(np.abs(X[:, active]).max(axis=0), 1e-300)  # conditioning
        sol, *_ = np.linalg.lstsq(X[:, active] / scale, y, rcond=None)
        sol = sol / scale
        neg = [i for i, c in zip(active, sol, strict=True) if c < 0]
        if not neg:
            break
        active.remove(min(neg, key=lambda i: sol[active.index(i)]))
    coef = dict.fromkeys((t.name for t in terms), 0.0)
    for i, c in zip(active, sol, strict=True):
        coef[terms[i].name] = float(c)
    full = np.array([coef[t.name] for t in terms])
    clamped = [terms[i].name for i in range(len(terms)) if i not in active]
    return Fit(coef, y - X @ full, clamped)


def fit_tasks(jobs: Sequence[dict], key: str = "wall") -> tuple[float, float]:
    """(fixed s, per-task s) of trivial jobs' `key` (wall time, or the driver JVM's CPU time)
    against their task count: least squares on the median (wall: a busy machine's outliers
    are long) or the mean (CPU: /proc counts in 10 ms steps) per task count."""
    P = np.array(sorted({j["tasks"] for j in jobs}), dtype=float)
    average = statistics.median if key == "wall" else statistics.mean
    w = np.array([average(j[key] for j in jobs if j["tasks"] == p) for p in P])
    a, tau = np.linalg.lstsq(np.stack([np.ones_like(P), P], axis=1), w, rcond=None)[0]
    return float(a), max(0.0, float(tau))


def fit_setting(rows: Sequence[dict], jobs: Sequence[dict]) -> dict[str, Fit]:
    """Every component's fit for one setting's rounds, and "tasks": the driver's per-task cost
    tau (its JVM's CPU time per task of the trivial jobs; tau_wall: their wall time per task,
    executors' work included), with E0, the setting's executors (the overhead fit holds E0
    tasks' worth)."""
    fits = {
        comp: fit_component(rows, terms, lambda r, c=comp: r[c]) for comp, terms in MODEL.items()
    }
    tau_wall = fit_tasks(jobs)[1]
    cpu = [j for j in jobs if "driver_cpu" in j]  # (not in JSON of the first version)
    tau = {"tau": fit_tasks(cpu, "driver_cpu")[1] if cpu else tau_wall, "tau_wall": tau_wall}
    fits["tasks"] = Fit({**tau, "E0": float(rows[0]["E"])}, np.zeros(0), [])
    return fits


def constants(fits: dict[str, Fit]) -> dict[str, float]:
    return {k: v for f in fits.values() for k, v in f.coef.items()}


def tree_shape(E: float, tree: bool) -> tuple[int, int]:
    """(results on the gather's critical path, extra stages) for E partitions: (E, 0) for the
    flat gather (the driver takes them all); for trainer.train's tree (trainer/aggregate.py,
    depth from the partitions: groups summed on executors level by level, the driver adds
    the last level): d - 1 groups along the path plus the driver's share."""
    E = int(E)
    d = aggregate.auto_depth(E) if tree else 1
    if d == 1:
        return E, 0
    size = aggregate.group_size(E, d)
    return (d - 1) * size + math.ceil(E / size ** (d - 1)), d - 1


def predict(
    k: dict[str, float],
    sizes: dict[str, float],
    mode: str,
    K: int,
    b: int,
    E: np.ndarray,
    scale: float = 1.0,
    tree: bool = False,
    nic: float = float("inf"),
) -> dict[str, np.ndarray]:
    """Modelled seconds per round of each component and images/s, for E executors.

    k: fitted constants; sizes: this mode's measured "bc_bytes", "result_bytes" and
    "param_bytes" of the CNN; scale: network size (compute by FLOPs, bytes by parameters);
    tree: treeAggregate instead of the flat gather; nic: the driver NIC's bytes/s, a floor
    under the per-byte network costs (lam, rho) measured over loopback."""
    E = np.asarray(E, dtype=float)
    bc, R, B = (scale * sizes[s] for s in ("bc_bytes", "result_bytes", "param_bytes"))
    g, deep = (
        np.array(x, dtype=float) for x in zip(*(tree_shape(e, tree) for e in E), strict=True)
    )
    # each tree level is one more stage, whose reducers pickle their sums
    lam, rho = max(k["lam"], 1 / nic), max(k["rho"], 1 / nic)
    out = {
        "compute": scale * (k["c0"] + k["c_img"] * K * b) + 0 * E,
        "serialise": k["s0"] + k["sigma"] * (2 * bc + (1 + g + deep) * R),
        "broadcast": k["b0"] + k["beta"] * bc + 0 * E,
        "aggregate": k["a0"] + k["alpha"] * g * R + k["upd"] * B * (mode == "sync"),
        # the overhead's parts (TERMS), then their sum
        "job overhead": k["o0"] * (1 + deep),
        "per-task scheduling": k["tau"] * (E - k["E0"]),
        "broadcast fetch": lam * bc * (1 + np.log2(E)),
        "gather": rho * g * R,
    }
    out["overhead"] = sum(out[c] for c in TERMS[-4:])
    out["total"] = sum(out[c] for c in COMPONENTS)
    out["images_per_s"] = E * b * K / out["total"]
    return out


def stop_point(pred: dict[str, np.ndarray], E: np.ndarray) -> tuple[int | None, str]:
    """The first E whose parallel efficiency (images/s over E times E=1's) is below 50 %
    (None: not within E), and the largest term besides compute there (or at the last E)."""
    eff = pred["images_per_s"] / (E * pred["images_per_s"][0])
    below = np.nonzero(eff < 0.5)[0]
    i = int(below[0]) if len(below) else len(E) - 1
    dominant = max(TERMS, key=lambda c: pred[c][i])
    return (int(E[i]) if len(below) else None), dominant


# ----------------------------------------------------------------------------- output

SIZES = ("bc_bytes", "result_bytes", "param_bytes")


def config(r: dict) -> tuple:
    """A round's configuration: (setting, mode, K, broadcast ballast, result ballast)."""
    return r["setting"], r["mode"], r["K"], r["bc_ballast"], r["result_ballast"]


def name_of(s: dict) -> str:
    """ "sync", "avg K=5", "sync + ballast 25x/0x" (broadcast / result)."""
    name = label(s["mode"], s["K"])
    if s["bc_ballast"] or s["result_ballast"]:
        name += f" + ballast {s['bc_ballast']:g}x/{s['result_ballast']:g}x"
    return name


def summary(rows: Sequence[dict]) -> list[dict]:
    """Per configuration, in the order measured: median ms of each component and of the
    wall time, images/s, median payload bytes."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(config(r), []).append(r)
    out = []
    for got in groups.values():
        r0 = got[0]
        med = {c: 1000 * statistics.median(r[c] for r in got) for c in (*COMPONENTS, "wall")}
        images = r0["E"] * r0["b"] * r0["K"]
        out.append(
            {
                **{k: r0[k] for k in ("setting", "mode", "K", "E", "b")},
                "bc_ballast": r0["bc_ballast"], "result_ballast": r0["result_ballast"],
                **{x: statistics.median(r[x] for r in got) for x in SIZES},
                **med, "rounds": len(got), "images": images,
                "images_per_s": images / (med["wall"] / 1000),
                "ballast": bool(r0["bc_ballast"] or r0["result_ballast"]),
                "cpu_share": statistics.median(r["compute_cpu"] / r["compute"] for r in got)
                if "compute_cpu" in r0 else None,
            }
        )  # fmt: skip
    return out


def measurement_table(summ: Sequence[dict], ballast: bool) -> str:
    """Markdown: a row per setting x mode (ballast: the sweep's rows instead), ms per round."""
    lines = [
        "| setting | mode | E | images/round | "
        + " | ".join(f"{c} ms" for c in COMPONENTS)
        + " | round ms | images/s | broadcast / result KB | compute on CPU |",
        "|" + " --- |" * (len(COMPONENTS) + 8),
    ]
    for s in summ:
        if s["ballast"] == ballast:
            lines.append(
                f"| {s['setting']} | {name_of(s)} | {s['E']} | {s['images']} | "
                + " | ".join(f"{s[c]:.1f}" for c in COMPONENTS)
                + f" | {s['wall']:.1f} | {s['images_per_s']:,.0f} | "
                f"{s['bc_bytes'] / 1024:,.0f} / {s['result_bytes'] / 1024:,.0f} | "
                + ("-" if s["cpu_share"] is None else f"{s['cpu_share']:.0%}")
                + " |"
            )
    return "\n".join(lines)


def predictions(summ: Sequence[dict], k: dict, E: np.ndarray, nic: float) -> dict[tuple, dict]:
    """{(scale, tree, mode, K): predict(...)} for both networks and both gathers, with the
    payload sizes measured for each mode (`summ`: one setting's summary)."""
    plain = [s for s in summ if not s["ballast"]]
    return {
        (scale, tree, s["mode"], s["K"]): predict(
            k, s, s["mode"], s["K"], s["b"], E, scale, tree, nic
        )
        for scale in (1, BIG)
        for tree in (False, True)
        for s in plain
    }


def plot(summ: Sequence[dict], preds: dict, E: np.ndarray, out_png: Path, fitted: str) -> None:
    """Two panels (the CNN, the 100x network): images/s against E, log-log; a line per mode
    (solid: flat gather, dashed: tree), the measured rounds as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=False)
    modes = list(dict.fromkeys((m, K) for (_, _, m, K) in preds))
    colours = dict(zip(modes, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    markers = {"local[1]": "^", "local[2]": "s", STANDALONE: "o"}
    for ax, scale in zip(axes, (1, BIG), strict=True):
        for mode, K in modes:
            for tree, style, lw in ((False, "-", 1.8), (True, "--", 1.1)):
                y = preds[scale, tree, mode, K]["images_per_s"]
                ax.plot(E, y, style, lw=lw, color=colours[mode, K],
                        label=f"{label(mode, K)} ({'tree' if tree else 'flat'})")  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("executors E (one core each)")
        ax.set_ylabel("images / s")
        ax.grid(alpha=0.3, which="both")
    for s in summ:
        if not s["ballast"]:
            axes[0].plot(s["E"], s["images_per_s"], markers.get(s["setting"], "x"),
                         color=colours[s["mode"], s["K"]], ms=8, mfc="none", mew=1.5)  # fmt: skip
    for name, m in markers.items():
        if any(s["setting"] == name for s in summ):
            axes[0].plot([], [], m, color="k", mfc="none", label=f"measured: {name}")
    axes[0].set_title("this CNN: measured (markers, E <= 2), modelled (lines)")
    axes[1].set_title(f"a network {BIG}x larger (parameters and FLOPs): modelled")
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"images/s against executors; model fitted to the {fitted} rounds")
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


def residual_table(fits: dict[str, dict[str, Fit]]) -> str:
    """Markdown: RMS and largest residual (ms) of each component's fit per setting."""
    lines = ["| setting | " + " | ".join(COMPONENTS) + " |", "|" + " --- |" * (len(COMPONENTS) + 1)]
    for setting, f in fits.items():
        cells = [
            f"{1000 * f[c].rms:.2f} (max {1000 * np.abs(f[c].residuals).max():.2f})"
            for c in COMPONENTS
        ]
        lines.append(f"| {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fmt_const(unit: str, v: float) -> str:
    if unit == "s/byte":
        return f"{v * 1e9:.3f} ns/B" + (f" ({1 / v / 1e9:.2f} GB/s)" if v > 0 else "")
    if unit == "s/image":
        return f"{v * 1e3:.3f} ms/image"
    return f"{v * 1e3:.2f} ms" + (" per task" if unit == "s/task" else "")


def constants_table(fits: dict[str, dict[str, Fit]]) -> str:
    """Markdown: every fitted constant (rows) of every setting (columns)."""
    terms = [(comp, t.name, t.unit) for comp, ts in MODEL.items() for t in ts]
    terms += [("tasks", "tau", "s/task"), ("tasks", "tau_wall", "s/task")]
    lines = ["| constant | term of | " + " | ".join(fits) + " |", "|" + " --- |" * (len(fits) + 2)]
    for comp, name, unit in terms:
        cells = [
            fmt_const(unit, f[comp].coef[name]) + (" (clamped)" if name in f[comp].clamped else "")
            for f in fits.values()
        ]
        lines.append(
            f"| {name} | {'overhead' if comp == 'tasks' else comp} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def check_table(summ: Sequence[dict], fits: dict[str, dict[str, Fit]]) -> str:
    """Markdown: each configuration's median round against its setting's model."""
    lines = [
        "| setting | mode | measured ms | modelled ms | residual |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in summ:
        k = constants(fits[s["setting"]])
        m = 1000 * predict(k, s, s["mode"], s["K"], s["b"], np.array([s["E"]]))["total"][0]
        d = s["wall"] - m
        lines.append(
            f"| {s['setting']} | {name_of(s)} | {s['wall']:.1f} | {m:.1f} | "
            f"{d:+.1f} ({d / s['wall']:+.0%}) |"
        )
    return "\n".join(lines)


def prediction_table(preds: dict, E: np.ndarray) -> str:
    """Markdown: modelled images/s at powers of two, where efficiency falls below 50 %,
    and the largest non-compute term there."""
    shown = [int(e) for e in E if (int(e) & (int(e) - 1)) == 0]
    lines = [
        "| network | gather | mode | " + " | ".join(f"E={e}" for e in shown)
        + " | below 50 % efficiency from | largest other term there |",
        "|" + " --- |" * (len(shown) + 5),
    ]  # fmt: skip
    for (scale, tree, mode, K), p in preds.items():
        stop, dom = stop_point(p, E)
        lines.append(
            f"| {'CNN' if scale == 1 else f'{BIG}x'} | {'tree' if tree else 'flat'} | "
            f"{label(mode, K)} | "
            + " | ".join(f"{p['images_per_s'][e - 1]:,.0f}" for e in shown)
            + f" | {f'E = {stop}' if stop else f'beyond {int(E[-1])}'} | {dom} |"
        )
    return "\n".join(lines)


def largest_terms(preds: dict, E: np.ndarray) -> str:
    """Markdown list: the three largest terms at the largest E (flat and tree)."""
    i = len(E) - 1
    lines = []
    for (scale, tree, mode, K), p in preds.items():
        top = sorted(("compute", *TERMS), key=lambda c: -p[c][i])[:3]
        eff = p["images_per_s"][i] / (E[i] * p["images_per_s"][0])
        lines.append(
            f"- {'CNN' if scale == 1 else f'{BIG}x network'}, {label(mode, K)}, "
            f"{'tree' if tree else 'flat'}: {1000 * p['total'][i]:,.0f} ms per round, of which "
            + ", ".join(f"{c} {1000 * p[c][i]:,.0f}" for c in top)
            + f"; {p['images_per_s'][i]:,.0f} images/s, {eff:.0%} efficiency"
        )
    return "\n".join(lines)


FORMULA = """\
Per round (one Spark job) with E executors (one core and one partition each), K
local steps of b images per executor (sync: K = 1), bc broadcast bytes, R result
bytes per task, B parameter bytes, and g results on the gather's critical path
with x extra stages (flat, as measured: g = E, x = 0; tree, as trainer.train adds
them by default (trainer/aggregate.py): depth d = ceil(log8 E), groups of
s = ceil(E^(1/d)) results, so g = (d-1) s + ceil(E / s^(d-1)) and x = d - 1):

    compute   = n (c0 + c_img K b)
    serialise = s0 + sigma (2 bc + (1 + g + x) R)
    broadcast = b0 + beta bc
    aggregate = a0 + alpha g R + upd B [sync only]
    overhead  = o0 (1 + x)            job overhead
              + tau (E - E0)          per-task scheduling
              + lam bc (1 + log2 E)   broadcast fetch
              + rho g R               gather
    T(E)      = compute + serialise + broadcast + aggregate + overhead
    images/s  = E b K / T(E)

n is the network's size (1, or 100 for the larger network: compute grows with the
FLOPs, bc, R and B with the parameters; the fixed terms stay). Every component is
fitted by least squares, constants >= 0, on its setting's measured rounds (with the
ballast sweep, so bc and R vary). tau is the driver's cost per task: the slope of its
JVM's CPU time in trivial jobs against their number of tasks (tau_wall, the slope of
their wall time, also holds the executors' share, which runs in parallel on a real
cluster); it is added for each executor beyond the E0 of the fitted setting, whose
overhead already holds E0 tasks' worth."""


def in_short(preds: dict, E: np.ndarray, fitted: str) -> str:
    """Markdown list: per network and mode, where the flat and the tree gather stop scaling
    and the term that stops them."""
    lines = []
    for scale in (1, BIG):
        for mode, K in dict.fromkeys((m, K) for (_, _, m, K) in preds):
            where = []
            for tree in (False, True):
                stop, term = stop_point(preds[scale, tree, mode, K], E)
                at = f"E = {stop}" if stop else f"not within {int(E[-1])}"
                where.append(f"{'tree' if tree else 'flat'}: {at} ({term})")
            net = "CNN" if scale == 1 else f"{BIG}x network"
            lines.append(f"- {net}, {label(mode, K)}: " + "; ".join(where))
    return (
        f"Where each mode falls below 50 % parallel efficiency by the model fitted to the "
        f"{fitted} rounds, and the largest term besides compute there (or at E = {int(E[-1])}):"
        "\n\n" + "\n".join(lines)
    )


def cpu_note(rows: Sequence[dict], fits: dict[str, dict[str, Fit]]) -> str:
    """A sentence: c_img fitted to the compute's CPU time (the cores' own speed) next to the
    wall-time fit (which holds the machine's contention)."""
    parts = []
    for setting, f in fits.items():
        got = [r for r in rows if r["setting"] == setting and "compute_cpu" in r]
        if got:
            cpu = fit_component(got, MODEL["compute"], lambda r: r["compute_cpu"]).coef["c_img"]
            wall = f["compute"].coef["c_img"]
            parts.append(f"{setting} {1e3 * cpu:.3f} ms/image (wall: {1e3 * wall:.3f})")
    if not parts:
        return ""
    return (
        "Fitted to the compute's CPU time instead of its wall time, c_img is "
        + "; ".join(parts)
        + ": the cores' own speed, without the waits for a core that the other users' jobs "
        "caused during these measurements. The model below keeps the wall-time constants."
    )


def markdown(res: dict, fits: dict[str, dict[str, Fit]], png_name: str) -> str:
    """The whole docs/scaling.md text."""
    args, cond, ms = res["settings"], res["conditions"], res["model_setting"]
    summ = summary(res["rows"])
    E = np.arange(1, args["max_executors"] + 1)
    nic = args["nic_gbit"] * 1e9 / 8
    preds = predictions([s for s in summ if s["setting"] == ms], constants(fits[ms]), E, nic)
    B = res["rows"][0]["param_bytes"]
    tasks = "; ".join(
        f"{s}: {1000 * f['tasks'].coef['tau_wall']:.2f} ms of wall time and "
        f"{1000 * f['tasks'].coef['tau']:.2f} ms of the driver JVM's CPU time per task"
        for s, f in fits.items()
    )

    return f"""\
# Scaling study: where a training round's time goes, and how far it scales

**Measured** on one of these 2-core machines, with E = 1 and 2 executors;
**modelled** beyond them, up to E = {E[-1]}. Made by `make scaling`
(`python -m bench.scaling`, {cond["seconds"] / 60:.1f} minutes); the raw measurements
are in `{args["out"]}/scaling.json` (not committed).

{in_short(preds, E, ms)}

Conditions: {cond["machine"]}, {cond["date"]}. The machine is shared with other
people's jobs, so single timings vary by 10-30 % and more; the load (`uptime`):

    before: {cond["uptime_before"]}
    after:  {cond["uptime_after"]}

## What was measured

Training rounds of the 10-layer CNN ({B:,} parameter bytes, {args["dtype"]}) on real
images (the shipped sample, repeated where K = 20 rounds of two executors need more
than its 2,000), {args["batch"]} images per executor per step. Each round is built
from `trainer.distributed`'s Layout, Recipe and sync/avg tasks as `trainer.train`'s
`sync_round` and `avg_round` run them (broadcast, one job over the round's
partitions, destroy, combine in partition order on the driver, sync's optimiser
step), the task wrapped to time its own phases. Settings: `local[1]` (E = 1),
`local[2]` (E = 2), and `standalone`: a master and two workers (1 core, 2g each) on
127.0.0.1 from the pip-installed pyspark, the executors running the driver's venv
interpreter (docs/cluster.md, case 1), E = 2. Median of {args["rounds"]} rounds after
{args["warmup"]} warm-up rounds per configuration. The components are those of the
task that finished last (the one the driver waited for), timed in the executor on
the machine's one clock, so that they add up to the round's wall time:

- **compute**: the `trainer.distributed` task: normalisation, `loss_and_grads`,
  avg's local SGD steps;
- **serialise**: pickling the broadcast value (driver), unpickling it (executor;
  timed on the driver on the same bytes), pickling the result (executor),
  unpickling the E results (driver);
- **broadcast**: `sc.broadcast` and `destroy` without the pickling; the executor's
  `bc.value` without the unpickling;
- **aggregate**: adding the E results on the driver, plus sync's optimiser step;
- **overhead**: the rest: scheduling, task launch, the executor JVM's broadcast
  fetch (it happens before the Python task starts), Python worker IPC, moving the
  results to the driver (tasks return their results pickled, so that the
  executor's pickling can be timed; Spark wraps those bytes once more).

## Measurements (ms per round, median)

{measurement_table(summ, False)}

"compute on CPU": the compute's CPU time over its wall time in the executor; below
100 % the Python worker waited for a core that other processes had (the machine's
load), and every component is inflated alike.

The ballast sweep: sync rounds with extra float32 arrays of the given multiple of
the parameter bytes in the broadcast / in each result, so that the per-byte costs
can be seen at all (the CNN's own {B / 1024:.0f} KB hide them in the noise):

{measurement_table(summ, True)}

Trivial jobs (each task counts its one cached number), against their task count
(least squares): {tasks}.

## The model

{FORMULA}

Fitted constants (per byte also as the equivalent bandwidth; "clamped": the fit
wanted a negative cost, so the term was dropped):

{constants_table(fits)}

{cpu_note(res["rows"], fits)}

Assumptions beyond these machines:

- **Sync is modelled as weak scaling**: each executor keeps its {args["batch"]} images
  per step, so the global batch grows as {args["batch"]} E ({args["batch"] * int(E[-1]):,} at
  E = {E[-1]}). That is the way to add workers without shrinking each one's work
  towards nothing; with a fixed global batch (strong scaling) the compute per
  executor falls as 1/E and meets the fixed costs within a few executors. The model
  says nothing about accuracy: large global batches need learning-rate scaling.
- **Network**: the standalone executors fetch the broadcast and send their results
  over loopback, so lam and rho measure Spark's own per-byte work (block manager,
  sockets, copies), not a wire. A real cluster's driver has one NIC, assumed
  {args["nic_gbit"]:g} Gbit/s ({nic / 1e9:.2f} GB/s): each per-byte network constant is
  taken as the larger of the fitted one and 1 / NIC bandwidth, and every byte of a
  flat gather (E R) crosses that NIC into the driver.
- **Broadcast**: Spark's torrent broadcast lets executors pass blocks on, so its
  fetch is taken to grow like 1 + log2 E hops of bc bytes; the driver's side
  (pickling, writing the blocks) is paid once.
- **Per task**: tau (E - E0): the driver schedules, launches and collects each task
  in turn, at its JVM's CPU cost per task (in the standalone setting the driver's JVM
  runs no executor; in local mode it is the executor too, so there tau is an upper
  bound).
- **Tree**: each extra level costs a stage (another o0) and its reducers' pickling;
  its per-byte costs are the flat gather's. No tree was measured here.
- **{BIG}x network**: compute x{BIG} (FLOPs), every byte term x{BIG}, the fixed costs unchanged.

## Residuals of the fit

Per component, ms (RMS over the rounds; largest):

{residual_table(fits)}

Each configuration's median round against its own setting's model:

{check_table(summ, fits)}

## Modelled images/s (constants of `{ms}`, driver NIC {args["nic_gbit"]:g} Gbit/s)

{prediction_table(preds, E)}

A mode "stops scaling" where its parallel efficiency, images/s over E times E = 1's,
falls below 50 %: from there on, the costs that grow with E take longer than the
compute. The largest terms at E = {E[-1]} (ms per round):

{largest_terms(preds, E)}

![images/s against executors: measured points, modelled lines]({png_name})
"""


def write_outputs(res: dict, docs: Path) -> dict[str, dict[str, Fit]]:
    """Fits every setting; writes scaling.md and scaling.png into `docs`; returns the fits."""
    rows, jobs = res["rows"], res["jobs"]
    fits = {
        s: fit_setting(
            [r for r in rows if r["setting"] == s], [j for j in jobs if j["setting"] == s]
        )
        for s in dict.fromkeys(r["setting"] for r in rows)
    }
    ms = res["model_setting"]
    E = np.arange(1, res["settings"]["max_executors"] + 1)
    summ = summary(rows)
    nic = res["settings"]["nic_gbit"] * 1e9 / 8
    preds = predictions([s for s in summ if s["setting"] == ms], constants(fits[ms]), E, nic)
    docs.mkdir(parents=True, exist_ok=True)
    plot(summ, preds, E, docs / "scaling.png", ms)
    (docs / "scaling.md").write_text(markdown(res, fits, "scaling.png"))
    return fits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--settings", nargs="+", default=["local[1]", "local[2]", STANDALONE],
        help=f"local[N] masters and/or {STANDALONE} (a master, two 1-core workers on 127.0.0.1)",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=64, help="images per executor per SGD step")
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5, 20], help="K values for avg")
    p.add_argument("--rounds", type=int, default=12, help="timed rounds per configuration")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds before them")
    p.add_argument(
        "--ballasts", nargs="*", type=float, default=[25, 100],
        help="ballast sweep of sync: extra bytes, as multiples of the parameter bytes",
    )  # fmt: skip
    p.add_argument(
        "--tasks", nargs="+", type=int, default=[1, 4, 16, 64], help="trivial jobs' task counts"
    )
    p.add_argument("--data", default=str(data.SAMPLE), help="training images")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--max-executors", type=int, default=256, help="the model's largest E")
    p.add_argument("--nic-gbit", type=float, default=10.0, help="assumed driver NIC, Gbit/s")
    p.add_argument(
        "--model-setting", default=None,
        help=f"whose fit the model extrapolates (default: {STANDALONE} if measured, else the last)",
    )  # fmt: skip
    p.add_argument("--out", default="runs/scaling", help="raw measurements: OUT/scaling.json")
    p.add_argument(
        "--docs",
        default=None,
        help="where scaling.md and scaling.png go (default: docs; --quick: OUT)",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="refit and rewrite the docs from an earlier scaling.json, measuring nothing",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a short run: 3 rounds, K 1 and 5, one ballast, tasks 1 2 4",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup, args.ks, args.ballasts, args.tasks = 3, 1, [1, 5], [20], [1, 2, 4]
    for s in args.settings:
        if s != STANDALONE and not re.fullmatch(r"local\[\d+\]", s):
            p.error(f"--settings: expected local[N] or {STANDALONE}, got {s!r}")
    if (
        min(args.batch, args.rounds, min(args.ks), min(args.tasks), args.max_executors) < 1
        or args.warmup < 0
    ):
        p.error("--batch, --rounds, --ks, --tasks and --max-executors must be >= 1")
    out = Path(args.out)
    docs = Path(args.docs or (out if args.quick else "docs"))

    if args.from_json:
        res = json.loads(Path(args.from_json).read_text())
    else:
        t0 = time.perf_counter()
        before = uptime()
        print(f"uptime before: {before}", flush=True)
        train = data.load(args.data, "train")
        rows, jobs = [], []
        for setting in args.settings:
            print(f"{setting}:", flush=True)
            r, j = measure_setting(args, setting, train)
            rows, jobs = rows + r, jobs + j
        after = uptime()
        print(f"uptime after: {after}", flush=True)
        measured = list(dict.fromkeys(args.settings))
        res = {
            "settings": vars(args),
            "model_setting": args.model_setting
            or (STANDALONE if STANDALONE in measured else measured[-1]),
            "conditions": {
                "uptime_before": before,
                "uptime_after": after,
                "seconds": time.perf_counter() - t0,
                "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
                f"Python {platform.python_version()}",
            },
            "rows": rows,
            "jobs": jobs,
        }
        out.mkdir(parents=True, exist_ok=True)
        (out / "scaling.json").write_text(json.dumps(res, indent=1) + "\n")
    fits = write_outputs(res, docs)
    print()
    print(measurement_table(summary(res["rows"]), False))
    print()
    print("fitted constants:")
    print(constants_table(fits))
    print()
    print("fit residuals (ms):")
    print(residual_table(fits))
    print(check_table(summary(res["rows"]), fits))
    where = "" if args.from_json else f"{out}/scaling.json, "
    print(f"wrote {where}{docs}/scaling.md, {docs}/scaling.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
