"""Training checkpoints: parameters, optimiser state, preprocessing, step, settings.

A checkpoint is one .npz written atomically (temporary file, fsync, rename),
so a crash while writing leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from util import npz
from util.network import Params

FORMAT = "sparknet-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to another run."""


class NotACheckpoint(CheckpointError):
    """The file is missing or is not a checkpoint at all (e.g. a model file)."""


@dataclass
class Checkpoint:
    params: Params
    velocity: Params
    step: int  # SGD steps completed
    settings: dict[str, Any]  # the run's settings that the trajectory depends on
    meta: dict[str, Any]  # normaliser, classes, wall time, ...
    average: Params | None = None  # --average-from's running mean of the parameters


def save(path: str | Path, ckpt: Checkpoint) -> Path:
    """Writes `ckpt` to `path` atomically; returns the path."""
    header = {"format": FORMAT, "step": ckpt.step, "settings": ckpt.settings, "meta": ckpt.meta}
    arrays = {f"param/{k}": v for k, v in ckpt.params.items()}
    arrays.update({f"velocity/{k}": v for k, v in ckpt.velocity.items()})
    arrays.update({f"average/{k}": v for k, v in (ckpt.average or {}).items()})
    return npz.write(path, "header", header, arrays)


def load(path: str | Path) -> Checkpoint:
    """Reads a checkpoint; CheckpointError names the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise NotACheckpoint(f"{path}: no such checkpoint")
    try:
        header, arrays = npz.read(path, "header")
    except npz.Unreadable as e:
        raise NotACheckpoint(
            f"{path}: not a readable checkpoint (corrupt or truncated: {e})"
        ) from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise NotACheckpoint(f"{path}: not a {FORMAT} file")
    params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
    velocity = {k[9:]: v for k, v in arrays.items() if k.startswith("velocity/")}
    average = {k[8:]: v for k, v in arrays.items() if k.startswith("average/")} or None
    if not params or set(params) != set(velocity) or set(average or params) != set(params):
        raise CheckpointError(f"{path}: parameters and optimiser state do not match")
    return Checkpoint(
        params, velocity, int(header["step"]), header["settings"], header["meta"], average
    )


def check_compatible(path: Any, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """Raises CheckpointError listing every setting that differs from the checkpoint's run."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r}, now {current.get(k)!r}"
        for k in sorted(set(saved) | set(current))
        if saved.get(k) != current.get(k)
    ]
    if diffs:
        raise CheckpointError(
            f"{path}: cannot resume, the checkpoint was made with other settings: "
            + "; ".join(diffs)
        )
