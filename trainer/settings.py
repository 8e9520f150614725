"""A training run's settings, and the command line generated from them.

Each `Settings` field is written once: its default, help text and argparse
extras (choices, metavar, ...) live in the field, and `parser()` turns the
fields into options (`lr_schedule` -> `--lr-schedule`), so `--help` shows the
defaults the dataclass has. A `Settings` checks itself when it is made, so a
bad command line fails in `parse_args`, before Spark starts.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from trainer import distributed
from util import models
from util.augment import TEST_VIEWS

DESCRIPTION = """\
Real training on Spark: mini-batch SGD (sync) or parameter averaging (avg).

    python -m trainer cnn --data ../shared/data/cifar10-jpeg --val-split 5000 \\
        --epochs 30 --batch 100 --partitions 2 --augment --out runs/cnn

writes into --out: checkpoints (checkpoint.npz, every --checkpoint-every
steps and at the end), metrics.jsonl, training.png, model.npz (loadable by
`python -m matrix`/`trainer.evaluate`), and the evaluation report on the
validation data. `--resume` continues from --out's checkpoint and ends with
the same parameters as an uninterrupted run.
"""

# settings that the trajectory depends on: a checkpoint only resumes a run with equal ones
TRAJECTORY = (
    "model",
    "data",
    "val_split",
    "dtype",
    "batch",
    "partitions",
    "mode",
    "avg_every",
    "epochs",
    "lr",
    "lr_schedule",
    "lr_drops",
    "momentum",
    "weight_decay",
    "seed",
    "augment",
    "shift",
    "init_from",
    "average_from",
    "teacher",
    "teacher_weight",
    "label_smoothing",
)


class SettingsError(ValueError):
    """A setting out of its range, or settings that do not go together."""


def int_list(text: str) -> tuple[int, ...]:
    """Parses --lr-drops: "10,20" -> (10, 20); "" -> ()."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers, got {text!r}"
        ) from None


def option(
    default: Any, help: str, *, shown: str | None = None, least: int | None = None, **cli: Any
) -> Any:
    """A Settings field with its command-line help.

    shown: how --help names the default (else the default itself); least: the smallest
    value allowed (checked for every Settings); cli: more `add_argument` keywords
    (choices, metavar, type); choices are checked for every Settings too.
    """
    return field(default=default, metadata={"help": help, "shown": shown, "least": least, **cli})


@dataclass
class Settings:
    model: str = option("cnn", "which classifier", choices=sorted(models.MODELS))
    data: str = option(
        "data/cifar10-sample",
        "a local CIFAR-10 batches dir or image-folder tree (the driver loads it); a Parquet "
        "data set (parquet:URL, any hdfs://, file://, s3a:// URL, or a local *.parquet set) "
        "or binaryfile:URL (image folders), read by Spark's executors: docs/data.md",
    )
    val_split: int = option(
        0,
        "validate on N training images held out of the training split",
        shown="0: validate on the test split",
        least=0,
        metavar="N",
    )
    dtype: str = option("float32", "float type", choices=["float32", "float64"])
    batch: int = option(100, "images per SGD step (all partitions)", least=1)
    partitions: int = option(
        2, "workers: each step's batch is split into this many chunks", least=1
    )
    mode: str = option(
        "sync",
        "sync: average gradients every step; avg: average parameters every K steps",
        choices=["sync", "avg"],
    )
    avg_every: int = option(
        1,
        "local steps per worker between parameter averaging (avg mode)",
        least=1,
        metavar="K",
    )
    tree_depth: int = option(
        0,
        "levels of the tree that adds the partitions' results each round (1: the driver "
        "adds them all)",
        shown="0: from --partitions: 1 up to 8, 2 up to 64, 3 up to 512",
        least=0,
        metavar="D",
    )
    epochs: int = option(10, "passes over the training data", least=1)
    lr: float | None = option(None, "base learning rate", shown="per model")
    lr_schedule: str = option(
        "cosine",
        "learning-rate schedule over the whole run",
        choices=["constant", "cosine", "step"],
    )
    lr_drops: tuple[int, ...] = option(
        (),
        "comma-separated epochs where 'step' divides lr by 10",
        shown="none",
        type=int_list,
        metavar="EPOCHS",
    )
    momentum: float | None = option(None, "momentum", shown="per model")
    weight_decay: float | None = option(None, "L2 strength", shown="per model")
    seed: int = option(0, "seed for init, batches, augmentation", least=0)
    augment: bool = option(False, "random flips and --shift shifts")
    shift: int = option(
        2,
        "largest random shift with --augment, in pixels (0: flips only)",
        least=0,
        metavar="PIXELS",
    )
    master: str | None = option(
        None,
        "Spark master (local[*], local[N], spark://host:port)",
        shown="spark-submit's --master, else local[*]",
    )
    out: str = option("runs/train", "output directory for checkpoints, metrics, model")
    checkpoint_every: int = option(
        500, "steps between checkpoints (0: only at the end)", least=0, metavar="STEPS"
    )
    eval_every: int = option(
        0,
        "also validate every STEPS steps (0: only at the end of each epoch)",
        least=0,
        metavar="STEPS",
    )
    no_val: bool = option(
        False,
        "no validation during the run (no accuracy at epochs' ends or --eval-every): the "
        "validation data (--val-split's images, else the test split) is measured once, in the "
        "final report; e.g. to refit on the whole training split with settings chosen on a "
        "validation split",
    )
    resume: bool = option(False, "continue from --out's checkpoint")
    export: str | None = option(
        None, "also write the batched partitions to PATH", shown="none", metavar="PATH"
    )
    from_export: str | None = option(
        None,
        "read the batched partitions written by --export from PATH",
        shown="none: read --data",
        metavar="PATH",
    )
    max_steps: int | None = option(
        None,
        "stop after this many SGD steps (testing, interruption)",
        shown="no limit",
        least=0,
        metavar="STEPS",
    )
    init_from: str | None = option(
        None,
        "start from the parameters (and preprocessing) of this model.npz, or of a "
        "checkpoint.npz of a run of the same model (in its training form: cnn-bn's "
        "normalisation), instead of a random initialisation, e.g. to continue training "
        "with a new schedule",
        shown="random initialisation",
        metavar="FILE",
    )
    average_from: int = option(
        0,
        "from the end of this epoch on, also keep the mean of the parameters at every "
        "epoch's end (stochastic weight averaging); the model saved and reported is that "
        "mean",
        shown="0: off",
        least=0,
        metavar="EPOCH",
    )
    teacher: str | None = option(
        None,
        "distillation: train on soft targets, the class probabilities that this model.npz "
        "(of any of the networks) gives each training image with test-time augmentation, "
        "mixed with the labels (--teacher-weight); several comma-separated: the mean of "
        "their probabilities; computed on the driver before training (in-memory --data)",
        shown="none: the labels",
        metavar="MODEL[,MODEL...]",
    )
    teacher_weight: float = option(
        0.5, "the teacher's share of each soft target (the label's is the rest)", metavar="W"
    )
    label_smoothing: float = option(
        0.0,
        "train on targets that give this share of each label's probability to all classes "
        "equally (in-memory --data)",
        metavar="EPS",
    )
    tta: bool = option(
        False,
        "final evaluation report with test-time augmentation (predictions averaged over "
        f"{TEST_VIEWS} flipped and shifted views; epochs validate one view)",
    )

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            least, choices = f.metadata["least"], f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise SettingsError(f"{flag(f.name)} must be one of {choices}, got {value!r}")
            if least is not None and value is not None and value < least:
                raise SettingsError(f"{flag(f.name)} must be >= {least}, got {value}")
        for name in ("teacher_weight", "label_smoothing"):
            if not 0 <= getattr(self, name) <= 1:
                raise SettingsError(f"{flag(name)} must be in [0, 1], got {getattr(self, name)}")
        if self.teacher is not None and any(not t.strip() for t in self.teacher.split(",")):
            raise SettingsError(
                f"--teacher must be model files separated by commas, got {self.teacher!r} "
                f"(an empty name; without a teacher, leave the option out)"
            )
        if self.average_from > self.epochs:
            raise SettingsError(
                f"--average-from {self.average_from} is after the last epoch ({self.epochs})"
            )
        if self.no_val and self.eval_every:
            raise SettingsError(
                "--eval-every validates during the run, --no-val does not: give one"
            )
        if self.mode == "sync" and self.avg_every != 1:
            raise SettingsError("--avg-every only applies to --mode avg")
        try:
            distributed.check_split(self.batch, self.partitions, self.avg_every)
        except ValueError as e:
            raise SettingsError(str(e)) from None

    @property
    def teachers(self) -> list[str]:
        """The model files of --teacher (comma-separated)."""
        return [t.strip() for t in self.teacher.split(",")] if self.teacher else []

    def trajectory(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_drops"] = list(self.lr_drops)
        return {k: d[k] for k in TRAJECTORY}


def flag(name: str) -> str:
    """The command-line name of a Settings field: "lr_schedule" -> "--lr-schedule"; "model"
    (the positional argument) -> "model"."""
    return name if name == "model" else "--" + name.replace("_", "-")


class OneLineParser(argparse.ArgumentParser):
    """Errors in one line (the full usage is long), pointing at --help."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    """The command line of `python -m trainer`: the model, then one option per field."""
    p = OneLineParser(
        prog="python -m trainer",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(Settings)
    for f in fields(Settings):
        meta = dict(f.metadata)
        help_text, shown, _ = meta.pop("help"), meta.pop("shown"), meta.pop("least")
        if f.name == "model":  # the one positional argument: required, so no default
            p.add_argument("model", help=help_text, **meta)
            continue
        assert f.default is not MISSING, f"Settings.{f.name} needs a default"
        default = f.default if shown is None else shown
        if hints[f.name] is bool:
            assert f.default is False, f"Settings.{f.name}: a flag is off by default"
            meta["action"] = "store_true"
            default = "off"
        else:
            meta.setdefault("type", _value_type(hints[f.name]))
        help_text = f"{help_text} (default: {default})".replace("%", "%%")
        p.add_argument(flag(f.name), default=f.default, help=help_text, **meta)
    return p


def _value_type(hint: Any) -> type:
    """int for `int` and `int | None`."""
    types = [t for t in typing.get_args(hint) if t is not type(None)]
    return types[0] if types else hint


def parse_args(argv: list[str] | None = None) -> Settings:
    """The settings of a command line; a bad one exits with status 2 and a one-line error."""
    p = parser()
    args = p.parse_args(argv)
    try:
        return Settings(**vars(args))
    except SettingsError as e:
        p.error(str(e))
