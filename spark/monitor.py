"""Training monitoring: a metrics file (one JSON line per step/epoch) and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for col, x in enumerate(("step", "time")):
        ax = axes[0, col]
        ax.plot([r[x] for r in steps], [r["loss"] for r in steps], lw=0.6)
        ax.set_ylabel("training loss")
        ax.set_xlabel("step" if x == "step" else "wall time (s)")
        ax = axes[1, col]
        ax.plot([r[x] for r in epochs], [100 * r["val_accuracy"] for r in epochs], "o-")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_xlabel("step" if x == "step" else "wall time (s)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
