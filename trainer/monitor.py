"""Training monitoring: a metrics file (one JSON line per step/epoch) and PNG plots."""

from __future__ import annotations

import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil


class Metrics:
    """Appends records to `<out>/metrics.jsonl`; a resumed run continues the same file."""

    def __init__(self, out: str | Path, resume_step: int = 0) -> None:
        self.path = Path(out) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step and self.path.exists():
            # drop records past the checkpoint so a resumed run does not duplicate steps
            kept = [r for r in read(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        elif not resume_step:
            self.path.write_text("")

    def log(self, **record: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot(metrics_path: str | Path, out_png: str | Path, title: str = "") -> None:
    """Training loss and validation accuracy against steps and wall time, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read(metrics_path)
    steps = [r for r in records if r.get("kind") == "step"]
    # validations: the epochs' ends (none with --no-val) and --eval-every's
    epochs = sorted((r for r in records if "val_accuracy" in r), key=lambda r: r["step"])
    loss = np.array([r["loss"] for r in steps])
    w = max(1, len(loss) // 100)  # a moving mean over ~1% of the run shows the trend
    smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for col, x in enumerate(("step", "time")):
        ax = axes[0, col]
        xs = [r[x] for r in steps]
        ax.plot(xs, loss, lw=0.4, alpha=0.35, label="per step")
        ax.plot(xs[w - 1 :], smooth, lw=1.2, label=f"mean of {w} steps")
        ax.legend()
        ax.grid(alpha=0.3)
        ax.set_ylabel("training loss")
        ax.set_xlabel("step" if x == "step" else "wall time (s)")
        ax = axes[1, col]
        ax.plot([r[x] for r in epochs], [100 * r["val_accuracy"] for r in epochs], "o-")
        if not epochs:
            ax.text(0.5, 0.5, "not validated during the run", ha="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_ylabel("validation accuracy (%)")
        ax.set_xlabel("step" if x == "step" else "wall time (s)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)


class MemoryWatch:
    """Peak resident memory (RSS) of this process and the processes it started, sampled.

    Roles: "driver" (this Python process; its lifetime peak), "jvm" (the Java process: in local mode
    both the Spark driver and the executor), "worker" (the largest single Spark
    Python worker) and "workers" (all Python workers together; forked workers share
    pages, so this overstates their sum). On a cluster, executors run on other
    machines and are not seen. Use as a context manager; `peaks` maps role -> bytes,
    `start` holds the same sums just before the watch began.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.me = psutil.Process()
        self.children: list = []
        self._listed = 0.0  # when self.children was last refreshed (listing costs ~1 ms)
        self.start = self._sample()
        self.peaks = dict(self.start)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> dict[str, int]:
        now = {"driver": self.me.memory_info().rss, "jvm": 0, "worker": 0, "workers": 0}
        if time.monotonic() - self._listed > 0.2:  # workers come and go; re-list them now and then
            self.children = self.me.children(recursive=True)
            self._listed = time.monotonic()
        for p in self.children:
            try:
                rss, name = p.memory_info().rss, p.name()
            except psutil.Error:  # the process ended between listing and reading
                continue
            if name.startswith("java"):
                now["jvm"] += rss
            else:
                now["worker"] = max(now["worker"], rss)
                now["workers"] += rss
        return now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for role, rss in self._sample().items():
                self.peaks[role] = max(self.peaks[role], rss)

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for role, rss in self._sample().items():
            self.peaks[role] = max(self.peaks[role], rss)
        # the driver's lifetime peak, e.g. while it loaded the data before the watch began
        lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux
        self.peaks["driver"] = max(self.peaks["driver"], lifetime)

    def summary(self) -> str:
        mb = {k: v / 2**20 for k, v in self.peaks.items()}
        return (
            f"peak memory (RSS): driver {mb['driver']:.0f} MB, JVM {mb['jvm']:.0f} MB, "
            f"largest Python worker {mb['worker']:.0f} MB (all workers {mb['workers']:.0f} MB)"
        )
