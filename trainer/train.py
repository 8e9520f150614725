"""Real training on Spark: mini-batch SGD (sync) or parameter averaging (avg).

    python -m trainer cnn --data ../shared/data/cifar10-jpeg --val-split 5000 \
        --epochs 30 --batch 100 --partitions 2 --augment --out runs/cnn

writes into --out: checkpoints (checkpoint.npz, every --checkpoint-every
steps and at the end), metrics.jsonl, training.png, model.npz (loadable by
`python -m matrix`/`trainer.evaluate`), and the evaluation report on the
validation data. `--resume` continues from --out's checkpoint and ends with
the same parameters as an uninterrupted run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from tqdm import tqdm

from matrix.classifier import check_param_shapes, classifier_class
from spark.classifier import add_results
from spark.errors import job_error_text, python_error
from spark.session import SparkSetupError, get_session
from trainer import checkpoint, distributed, evaluate, monitor
from util import augment, data, models, numerics, optim

log = logging.getLogger(__name__)

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
)


@dataclass
class Settings:
    model: str = "cnn"
    data: str = "data/cifar10-sample"
    val_split: int = 0  # images held out of train for validation (0: use the test split)
    dtype: str = "float32"
    batch: int = 100  # images per SGD step, over all partitions
    partitions: int = 2  # workers: chunks per step
    mode: str = "sync"  # sync | avg
    avg_every: int = 1  # K: local steps between averaging (avg mode)
    epochs: int = 10
    lr: float | None = None  # None: the model's default
    lr_schedule: str = "cosine"  # constant | cosine | step
    lr_drops: tuple[int, ...] = ()  # epochs at which "step" multiplies lr by 0.1
    momentum: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    augment: bool = False
    shift: int = 2  # pixels of random shift with --augment (0: flips only)
    master: str = "local[*]"
    out: str = "runs/train"
    checkpoint_every: int = 500  # steps; 0: only at the end
    eval_every: int = 0  # steps between validations besides each epoch's end (0: epochs only)
    resume: bool = False
    export: str | None = None  # write the batched partitions here, then train from them
    from_export: str | None = None  # read the batched partitions written by --export
    max_steps: int | None = None  # stop after this many steps (testing, interruption)
    init_from: str | None = None  # start from this model.npz's parameters (fine-tuning)
    tta: bool = False  # final report with test-time augmentation (epochs validate one view)

    def trajectory(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_drops"] = list(self.lr_drops)
        return {k: d[k] for k in TRAJECTORY}


class TrainingDiverged(FloatingPointError):
    """A loss or parameter became NaN or infinite."""


class TrainingFailed(RuntimeError):
    """A Spark job failed for good (after its task retries)."""


def learning_rate(s: Settings, base: float, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate of SGD step `step` (0-based) of `total`."""
    if s.lr_schedule == "constant":
        return base
    if s.lr_schedule == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    if s.lr_schedule == "step":
        epoch = step // steps_per_epoch
        return base * 0.1 ** sum(epoch >= d for d in s.lr_drops)
    raise ValueError(f"unknown --lr-schedule {s.lr_schedule!r}")


@dataclass
class TrainingData:
    """The cached training blocks, laid out for one (batch, partitions, K), and validation data.

    rdd: one partition per block of `layout` (uint8 images); val_rdd: a few
    partitions of [(X uint8, y)] chunks. Several runs with the same layout can
    share one (the benchmark and the mode comparison do); `release()` unpersists.
    """

    rdd: Any
    val_rdd: Any
    layout: distributed.Layout
    norm: data.Normalizer
    classes: list[str]

    def release(self) -> None:
        self.rdd.unpersist()
        self.val_rdd.unpersist()


def distribute(sc, s: Settings, train: data.Dataset, val: data.Dataset) -> TrainingData:
    """Lays out `train` for s.batch/s.partitions/s.avg_every and caches it (and `val`) on Spark."""
    layout = distributed.Layout(len(train), s.batch, s.partitions, s.avg_every)
    perm = np.random.default_rng(s.seed).permutation(len(train))
    records = list(distributed.blocks(train.X, train.y, layout, perm))
    rdd = sc.parallelize(records, len(records)).cache()
    n = min(s.partitions, len(val))
    parts = np.array_split(np.arange(len(val)), n)
    val_records = [(i, [(val.X[p], val.y[p])]) for i, p in enumerate(parts)]
    val_rdd = sc.parallelize(val_records, n).cache()
    return TrainingData(rdd, val_rdd, layout, data.Normalizer.fit(train.X), train.classes)


def load_training_data(sc, s: Settings) -> TrainingData:
    """The training data named by the settings: --from-export, or --data (+ --export)."""
    if s.from_export:
        return read_export(sc, s.from_export, s)
    train = data.load(s.data, "train")
    if s.val_split:
        train, val = data.train_val_split(train, s.val_split, seed=s.seed)
    else:
        val = data.load(s.data, "test")
    td = distribute(sc, s, train, val)
    if s.export:
        write_export(sc, td, s.export, s)
    td.rdd.count()
    return td


def write_export(sc, td: TrainingData, path: str, s: Settings) -> None:
    """Saves the batched partitions and what is needed to read them back."""
    td.rdd.saveAsPickleFile(f"{path}/train")
    td.val_rdd.saveAsPickleFile(f"{path}/val")
    info = {
        "layout": asdict(td.layout),
        "normalizer": td.norm.to_meta(),
        "classes": td.classes,
        "settings": {
            k: v
            for k, v in s.trajectory().items()
            if k in ("data", "val_split", "seed", "batch", "partitions", "avg_every")
        },
    }
    sc.parallelize([json.dumps(info)], 1).saveAsTextFile(f"{path}/info")


def read_export(sc, path: str, s: Settings) -> TrainingData:
    """The batched partitions written by `write_export`, checked against the run's layout."""
    try:
        info = json.loads(sc.textFile(f"{path}/info").collect()[0])
    except Exception as e:  # noqa: BLE001 - any Hadoop read failure means the same thing
        raise ValueError(f"{path}: not a training export written by --export ({e})") from e
    layout = distributed.Layout(**info["layout"])
    if (s.batch, s.partitions, s.avg_every) != (layout.batch, layout.workers, layout.avg_every):
        raise ValueError(
            f"{path}: exported for batch {layout.batch}, {layout.workers} "
            f"partitions, avg-every {layout.avg_every}; the run asks for "
            f"{s.batch}, {s.partitions}, {s.avg_every}"
        )
    n = layout.rounds * layout.workers
    # one block per partition, partition index = block key, as the layout requires
    rdd = sc.pickleFile(f"{path}/train").partitionBy(n, lambda k: k).cache()
    val_rdd = sc.pickleFile(f"{path}/val").cache()
    rdd.count()
    norm = data.Normalizer.from_meta(info["normalizer"])
    return TrainingData(rdd, val_rdd, layout, norm, info["classes"])


class Trainer:
    """One training run: the step loop, checkpoints, monitoring.

    The data comes from the settings, or from `training_data` that the caller
    built (and releases) itself; it must be laid out for this run's settings.
    """

    def __init__(self, s: Settings, spark, training_data: TrainingData | None = None) -> None:
        if s.mode not in ("sync", "avg"):
            raise ValueError(f"--mode must be sync or avg, got {s.mode!r}")
        if s.mode == "sync" and s.avg_every != 1:
            raise ValueError("--avg-every only applies to --mode avg")
        if s.shift < 0:
            raise ValueError(f"--shift must be >= 0 pixels, got {s.shift}")
        self.s = s
        self.sc = spark.sparkContext
        self.out = Path(s.out)
        cls = classifier_class(s.model)
        self.sgd = cls.defaults.override(lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        self.owns_data = training_data is None
        td = training_data or load_training_data(self.sc, s)
        lay = td.layout
        if (lay.batch, lay.workers, lay.avg_every) != (s.batch, s.partitions, s.avg_every):
            raise ValueError(
                f"the training data is laid out for batch {lay.batch}, {lay.workers} partitions, "
                f"K={lay.avg_every}; the run asks for {s.batch}, {s.partitions}, K={s.avg_every}"
            )
        self.data = td
        self.norm = td.norm  # the data's statistics, or those of --init-from's model
        self.model = cls(num_classes=len(self.classes), dtype=s.dtype, seed=s.seed, sgd=self.sgd)
        if s.init_from:
            try:
                self._init_from(Path(s.init_from))
            except (ValueError, FileNotFoundError):
                self.close()  # nothing cached may outlive a failed start
                raise
        self.model.metadata = {"normalizer": self.norm.to_meta(), "classes": self.classes}
        self.recipe = distributed.Recipe(
            self.model.layers, self.norm, s.dtype, s.augment, s.seed, s.shift
        )
        self.step = 0
        self.elapsed = 0.0  # training wall time, carried over on resume

    @property
    def rdd(self):
        return self.data.rdd

    @property
    def val_rdd(self):
        return self.data.val_rdd

    @property
    def layout(self) -> distributed.Layout:
        return self.data.layout

    @property
    def classes(self) -> list[str]:
        return self.data.classes

    def _init_from(self, path: Path) -> None:
        """Starts from a saved model's parameters, with its preprocessing statistics."""
        meta = self.model.adopt(path, self.classes)
        if "normalizer" not in meta:
            raise ValueError(f"{path}: holds no preprocessing statistics")
        self.norm = data.Normalizer.from_meta(meta["normalizer"])

    # ------------------------------------------------------------------ steps

    def _lr(self, step: int) -> float:
        total = self.s.epochs * self.layout.steps
        return learning_rate(self.s, self.sgd.lr, step, total, self.layout.steps)

    def train_round(self, r: int) -> float:
        """One job: a sync step or an avg round on round r's partitions; returns the loss."""
        parts = self.layout.partitions_of_round(r)
        m = self.model
        if self.s.mode == "sync":
            bc = self.sc.broadcast(m.params)
            try:
                results = self._run_job(distributed.sync_task(self.recipe, bc, self.step), parts)
            finally:
                bc.destroy()
            loss_sum, n, grads = results[0]
            for res in results[1:]:
                loss_sum, n, grads = add_results((loss_sum, n, grads), res)
            grads = {k: g / n for k, g in grads.items()}
            self._check_finite(loss_sum / n, grads, "gradient")
            m.sgd = optim.SGDConfig(self._lr(self.step), self.sgd.momentum, self.sgd.weight_decay)
            new_params, new_velocity, loss = optim.sgd_step(
                m.params, grads, m.velocity, loss_sum / n, m.sgd
            )
            self._check_finite(loss, new_params, "parameter")
            m.params, m.velocity = new_params, new_velocity
            self.step += 1
            return loss
        K = self.layout.avg_every
        lrs = [self._lr(self.step + k) for k in range(K)]
        bc = self.sc.broadcast((m.params, m.velocity))
        try:
            task = distributed.avg_task(self.recipe, bc, self.step, lrs, self.sgd)
            results = self._run_job(task, parts)
        finally:
            bc.destroy()
        params = distributed.mean_of([r[0] for r in results])
        loss = sum(r[2] for r in results) / sum(r[3] for r in results)
        self._check_finite(loss, params, "parameter")
        m.params, m.velocity = params, distributed.mean_of([r[1] for r in results])
        self.step += K
        return loss

    @property
    def syncs(self) -> int:
        """Synchronisations so far: jobs whose results the driver combined (one per round)."""
        return self.step // self.layout.avg_every

    def _run_job(self, task, partitions: list[int]) -> list:
        """Runs `task` on the given partitions; a job that fails after Spark's retries
        becomes a TrainingFailed naming the step and the checkpoint to resume from."""
        try:
            return self.sc.runJob(self.rdd, task, partitions)
        except (Py4JJavaError, CapturedException) as e:
            ckpt = self.out / "checkpoint.npz"
            saved = f"resume from {ckpt} with --resume" if ckpt.exists() else "no checkpoint yet"
            cause = python_error(job_error_text(e))
            raise TrainingFailed(
                f"step {self.step + 1}: a task on partitions {partitions} failed after Spark's "
                f"retries: {cause}; {saved}"
            ) from None

    def _check_finite(self, loss: float, arrays: dict, what: str) -> None:
        bad = numerics.non_finite(arrays)
        if np.isfinite(loss) and not bad:
            return
        layers = ", ".join(f"{k} (layer {k[1:]})" for k in bad) or "none"
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}: loss {loss}, non-finite {what}s in "
            f"{layers}; the last good checkpoint is kept in {self.out}. "
            f"Try a smaller learning rate (now {self._lr(self.step):g})"
        )

    def accuracy(self, want_report: bool = False, tta: bool = False):
        bc = self.sc.broadcast(self.model.params)
        try:
            task = distributed.accuracy_task(self.model.layers, self.norm, self.s.dtype, bc, tta)
            results = self.val_rdd.mapPartitions(task).collect()  # one small tuple per chunk
        finally:
            bc.destroy()
        acc = sum(r[0] for r in results) / sum(r[1] for r in results)
        if not want_report:
            return acc
        pred = np.concatenate([r[2][0] for r in results])
        true = np.concatenate([r[2][1] for r in results])
        return acc, evaluate.report(true, pred, self.classes)

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self) -> Path:
        ckpt = checkpoint.Checkpoint(
            self.model.params,
            self.model.velocity,
            self.step,
            self.s.trajectory(),
            {
                "normalizer": self.norm.to_meta(),
                "classes": self.classes,
                "elapsed": self.elapsed,
                "rng": {"seed": self.s.seed, "step": self.step},
            },
        )
        return checkpoint.save(self.out / "checkpoint.npz", ckpt)

    def restore(self) -> None:
        path = self.out / "checkpoint.npz"
        ckpt = checkpoint.load(path)
        checkpoint.check_compatible(path, ckpt.settings, self.s.trajectory())
        try:
            check_param_shapes(path, ckpt.params, self.model.params)
        except ValueError as e:
            raise checkpoint.CheckpointError(str(e)) from None
        self.model.params = {k: v.astype(self.model.dtype) for k, v in ckpt.params.items()}
        self.model.velocity = {k: v.astype(self.model.dtype) for k, v in ckpt.velocity.items()}
        self.step = ckpt.step
        self.elapsed = float(ckpt.meta.get("elapsed", 0.0))

    # ------------------------------------------------------------------ the loop

    def run(self, quiet: bool = False) -> float:
        s, lay = self.s, self.layout
        if s.resume:
            self.restore()
        metrics = monitor.Metrics(self.out, self.step)
        total = s.epochs * lay.steps
        if lay.dropped:
            log.warning(
                "each epoch uses %d of %d images (%d left over by batch %d)",
                lay.steps * lay.batch,
                lay.n_images,
                lay.dropped,
                lay.batch,
            )
        last_ckpt = self.step
        acc = float("nan")
        while self.step < total and (s.max_steps is None or self.step < s.max_steps):
            epoch = self.step // lay.steps
            order = np.random.default_rng([s.seed, epoch]).permutation(lay.rounds)
            first = (self.step - epoch * lay.steps) // lay.avg_every
            bar = tqdm(
                total=lay.rounds,
                initial=first,
                desc=f"epoch {epoch + 1}/{s.epochs}",
                unit="job",
                disable=quiet,
                leave=True,
                dynamic_ncols=True,
            )
            for i in range(first, lay.rounds):
                t0 = time.perf_counter()
                loss = self.train_round(int(order[i]))
                dt = time.perf_counter() - t0
                self.elapsed += dt
                steps = lay.avg_every if s.mode == "avg" else 1  # SGD steps in this round
                images = lay.batch * steps
                metrics.log(
                    kind="step",
                    step=self.step,
                    epoch=epoch,
                    loss=loss,
                    lr=self._lr(self.step - 1),
                    time=self.elapsed,
                    images_per_s=images / dt,
                )
                bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{images / dt:.0f}")
                bar.update(1)
                crossed = s.eval_every and (self.step // s.eval_every) > (
                    (self.step - steps) // s.eval_every
                )
                if crossed and self.step % lay.steps:  # (an epoch's end validates anyway)
                    metrics.log(
                        kind="eval",
                        step=self.step,
                        syncs=self.syncs,
                        val_accuracy=self.accuracy(),
                        time=self.elapsed,
                    )
                if s.checkpoint_every and self.step - last_ckpt >= s.checkpoint_every:
                    self.save_checkpoint()
                    last_ckpt = self.step
                if s.max_steps is not None and self.step >= s.max_steps:
                    break
            if self.step % lay.steps == 0:  # a whole epoch is done
                acc = self.accuracy()
                metrics.log(
                    kind="epoch",
                    step=self.step,
                    syncs=self.syncs,
                    epoch=epoch + 1,
                    val_accuracy=acc,
                    time=self.elapsed,
                )
                bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{acc:.2%}")
            bar.close()
        self.save_checkpoint()
        return acc

    def finish(self, memory: dict[str, int] | None = None) -> str:
        """Writes model.npz, the plots and the evaluation report; returns the report text.

        memory: peak RSS per role (`monitor.MemoryWatch.peaks`), kept in the report."""
        self.model.save(self.out / "model.npz")
        monitor.plot(
            self.out / "metrics.jsonl", self.out / "training.png", f"{self.s.model} {self.s.mode}"
        )
        _, rep = self.accuracy(want_report=True, tta=self.s.tta)
        if self.s.tta:
            rep = evaluate.with_tta(rep, single_view_accuracy=self.accuracy())
        rep["training_seconds"] = self.elapsed
        if memory:
            rep["peak_memory_bytes"] = memory
        return evaluate.write_report(rep, self.out)

    def close(self) -> None:
        """Releases the cached data if this trainer loaded it."""
        if self.owns_data:
            self.data.release()


def parse_args(argv: list[str] | None = None) -> Settings:
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m trainer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", choices=sorted(models.MODELS), help="which classifier")
    p.add_argument("--data", default=d.data, help="CIFAR-10 batches dir or image-folder tree")
    p.add_argument(
        "--val-split",
        type=int,
        default=0,
        metavar="N",
        help="validate on N training images held out (default: the test split)",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype, help="float type")
    p.add_argument(
        "--batch", type=int, default=d.batch, help="images per SGD step (all partitions)"
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=d.partitions,
        help="workers: each step's batch is split into this many chunks",
    )
    p.add_argument(
        "--mode",
        choices=["sync", "avg"],
        default=d.mode,
        help="sync: average gradients every step; avg: average parameters every K steps",
    )
    p.add_argument(
        "--avg-every",
        type=int,
        default=d.avg_every,
        metavar="K",
        help="local steps per worker between parameter averaging (avg mode)",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training data")
    p.add_argument("--lr", type=float, help="base learning rate (default: per model)")
    p.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine", "step"],
        default=d.lr_schedule,
        help="learning-rate schedule over the whole run",
    )
    p.add_argument(
        "--lr-drops", default="", help="comma-separated epochs where 'step' divides lr by 10"
    )
    p.add_argument("--momentum", type=float, help="momentum (default: per model)")
    p.add_argument("--weight-decay", type=float, help="L2 strength (default: per model)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for init, batches, augmentation")
    p.add_argument("--augment", action="store_true", help="random flips and --shift shifts")
    p.add_argument(
        "--shift",
        type=int,
        default=d.shift,
        metavar="PIXELS",
        help="largest random shift with --augment, in pixels (0: flips only)",
    )
    p.add_argument("--master", default=d.master, help="Spark master (local[*], spark://host:port)")
    p.add_argument("--out", default=d.out, help="output directory for checkpoints, metrics, model")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=d.checkpoint_every,
        help="steps between checkpoints (0: only at the end)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=d.eval_every,
        metavar="STEPS",
        help="also validate every STEPS steps (0: only at the end of each epoch)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    p.add_argument("--export", metavar="PATH", help="also write the batched partitions to PATH")
    p.add_argument("--from-export", metavar="PATH", help="read the batched partitions from PATH")
    p.add_argument("--max-steps", type=int, help="stop after this many SGD steps")
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start from the parameters (and preprocessing) of this model.npz instead of "
        "a random initialisation, e.g. to continue training with a new schedule",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="final evaluation report with test-time augmentation (predictions averaged over "
        f"{augment.TEST_VIEWS} flipped and shifted views)",
    )
    a = p.parse_args(argv)
    try:
        drops = tuple(int(x) for x in a.lr_drops.split(",") if x.strip())
    except ValueError:
        p.error(f"--lr-drops must be comma-separated integers, got {a.lr_drops!r}")
    kw = {k: v for k, v in vars(a).items() if k != "lr_drops"}
    return Settings(**kw, lr_drops=drops)


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        spark = get_session(s.master, f"sparknet-train-{s.model}")
    except SparkSetupError as e:
        print(f"python -m trainer: error: {e}", file=sys.stderr)
        return 2
    try:
        trainer = Trainer(s, spark)
        print(
            f"{s.model}: {trainer.layout.n_images} training images, {trainer.layout.steps} steps "
            f"of {s.batch} per epoch, {s.epochs} epochs, mode {s.mode}"
            + (f" (K={s.avg_every})" if s.mode == "avg" else "")
            + f", {s.partitions} partitions"
        )
        try:
            with monitor.MemoryWatch(interval=0.05) as memory:
                trainer.run()
            print(trainer.finish(memory.peaks))
            print(f"training time {trainer.elapsed:.0f}s; wrote {s.out}/model.npz")
            print(memory.summary())
        finally:
            trainer.close()
    except (ValueError, FileNotFoundError, FloatingPointError, TrainingFailed) as e:
        print(f"python -m trainer: error: {e}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
