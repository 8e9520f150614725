"""The training run: the step loop, one round per mode, checkpoints and resume, the CLI.

    python -m trainer cnn --data ../shared/data/cifar10-jpeg --val-split 5000 --epochs 30 ...

(`python -m trainer --help`: every option with its default, from trainer/settings.py).
A round is one Spark job on one round's partitions (`distributed.Layout`): one SGD step in
sync mode, K local steps and an average in avg mode; `ROUNDS` has the driver side of each.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import fields
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np
from py4j.protocol import Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from tqdm import tqdm

from matrix.classifier import check_param_shapes, classifier_class, load_params
from spark.errors import job_error_text, python_error
from spark.session import SparkSetupError, get_session, stop_quietly, submitted_master
from trainer import aggregate, checkpoint, distributed, evaluate, executors, monitor
from trainer.data import TrainingData, check_layout, check_targets_source, load_training_data
from trainer.schedule import learning_rate
from trainer.settings import Settings, parse_args
from util import data, kernels, network, numerics, optim

log = logging.getLogger(__name__)


class TrainingDiverged(FloatingPointError):
    """A loss or parameter became NaN or infinite."""


class TrainingFailed(RuntimeError):
    """A Spark job failed for good (after its task retries)."""


# ---------------------------------------------------------------------- one round per mode


def sync_round(t: Trainer, partitions: list[int]) -> float:
    """sync: one SGD step. Each partition returns its chunk's summed loss and gradients; they
    are added in a fixed tree in partition order (`aggregate.tree_sum`), the driver divides by
    the batch size and steps (util.optim): exactly single-process mini-batch SGD. Returns the
    step's loss."""
    m = t.model
    bc = t.sc.broadcast(m.params)
    try:
        loss_sum, n, grads = t.run_round(distributed.sync_task(t.recipe, bc, t.step), partitions)
    finally:
        bc.destroy()
    grads = {k: g / n for k, g in grads.items()}
    t.check_finite(loss_sum / n, grads, "gradient")
    m.sgd = t.sgd.override(lr=t.lr_at(t.step))
    new_params, new_velocity, loss = optim.sgd_step(
        m.params, grads, m.velocity, loss_sum / n, m.sgd
    )
    t.check_finite(loss, new_params, "parameter")
    m.params, m.velocity = new_params, new_velocity
    t.step += 1
    return loss


def avg_round(t: Trainer, partitions: list[int]) -> float:
    """avg: K local SGD steps per partition from the broadcast parameters and velocity; the
    partitions' parameters and velocities are added in the same tree as sync's gradients and
    divided by their number on the driver. Returns the mean loss of the K steps over all
    partitions."""
    m = t.model
    K = t.layout.avg_every
    lrs = [t.lr_at(t.step + k) for k in range(K)]
    bc = t.sc.broadcast((m.params, m.velocity))
    try:
        task = distributed.avg_task(t.recipe, bc, t.step, lrs, t.sgd)
        params, velocity, loss_sum, n = t.run_round(task, partitions)
    finally:
        bc.destroy()
    W = len(partitions)
    params = {k: v / W for k, v in params.items()}
    loss = loss_sum / n
    t.check_finite(loss, params, "parameter")
    m.params, m.velocity = params, {k: v / W for k, v in velocity.items()}
    t.step += K
    return loss


ROUNDS: dict[str, Callable[[Trainer, list[int]], float]] = {"sync": sync_round, "avg": avg_round}


# ---------------------------------------------------------------------- the run


# training images whose statistics fold a batch-normalised network for validation and saving
BATCHNORM_IMAGES = 10_000

# settings newer than the first checkpoints: missing from a checkpoint, they take their defaults
ADDED_SETTINGS = ("average_from", "teacher", "teacher_weight", "label_smoothing")


class Trainer:
    """One training run: the step loop, checkpoints, monitoring.

    The data comes from the settings, or from `training_data` that the caller
    built (and releases) itself; it must be laid out for this run's settings.
    """

    def __init__(self, s: Settings, spark, training_data: TrainingData | None = None) -> None:
        self.s = s  # checked when it was made (Settings.__post_init__)
        self._round = ROUNDS[s.mode]
        self.sc = spark.sparkContext
        self.out = Path(s.out)
        cls = classifier_class(s.model)
        self.sgd = cls.defaults.override(lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
        self.owns_data = training_data is None
        td = training_data or load_training_data(self.sc, s)
        check_layout(td.layout, s, "the training data is laid out")
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
        # what every task's executor must run too (taken once per process, as `check` took it)
        self.driver_fingerprint = executors.own_fingerprint()
        self.recipe = distributed.Recipe(
            self.model.layers, self.norm, s.dtype, s.augment, s.seed, s.shift
        )
        self.step = 0
        self.elapsed = 0.0  # training wall time, carried over on resume
        # --average-from: the mean of the parameters at the ends of the epochs averaged so far
        self.average: dict[str, np.ndarray] | None = None
        self.averaged = 0
        self._selected: dict[tuple[int, ...], Any] = {}  # round's partitions -> their RDD

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
        """Starts from a saved model's or a checkpoint's parameters (`starting_point`), with
        their preprocessing statistics."""
        meta = self.model.adopt(path, self.classes, saved=starting_point(path))
        if "normalizer" not in meta:
            raise ValueError(f"{path}: holds no preprocessing statistics")
        self.norm = data.Normalizer.from_meta(meta["normalizer"])

    # ------------------------------------------------------------------ steps

    def lr_at(self, step: int) -> float:
        """The learning rate of SGD step `step` (0-based) of the whole run."""
        total = self.s.epochs * self.layout.steps
        return learning_rate(self.s, self.sgd.lr, step, total, self.layout.steps)

    def train_round(self, r: int) -> float:
        """One job on round r's partitions: this mode's round (`ROUNDS`); returns the loss."""
        return self._round(self, self.layout.partitions_of_round(r))

    @property
    def syncs(self) -> int:
        """Synchronisations so far: jobs whose results the driver combined (one per round)."""
        return self.step // self.layout.avg_every

    def run_round(self, task, partitions: list[int]):
        """One job: `task` on the given partitions, its results added in a tree
        (`aggregate.tree_sum`, depth --tree-depth). A job that fails after Spark's retries
        becomes a TrainingFailed naming the step and the checkpoint to resume from."""
        depth = self.s.tree_depth or aggregate.auto_depth(len(partitions))
        with self._job_errors(partitions):
            return aggregate.tree_sum(
                self._mapped(self._rdd_of(partitions), task), distributed.add, depth
            )

    def _mapped(self, rdd, task):
        """rdd.mapPartitions(task), each task first checking that its executor runs what
        the driver runs (`executors.checked`: executors that joined after the start)."""
        return rdd.mapPartitions(executors.checked(task, self.driver_fingerprint))

    def _rdd_of(self, partitions: list[int]):
        key = tuple(partitions)  # a round's RDD is made once (W calls into the JVM)
        if key not in self._selected:
            self._selected[key] = aggregate.select(self.rdd, partitions)
        return self._selected[key]

    @contextmanager
    def _job_errors(self, partitions: list[int], kind: str = ""):
        """A failed job as a TrainingFailed; kind: what the task is ("validation")."""
        try:
            yield
        except (Py4JJavaError, CapturedException) as e:
            ckpt = self.out / "checkpoint.npz"
            saved = f"resume from {ckpt} with --resume" if ckpt.exists() else "no checkpoint yet"
            cause = python_error(job_error_text(e))
            raise TrainingFailed(
                f"step {self.step + 1}: a {kind + ' ' if kind else ''}task on partitions "
                f"{partitions} failed after Spark's retries: {cause}; {saved}"
            ) from None

    def check_finite(self, loss: float, arrays: dict, what: str) -> None:
        bad = numerics.non_finite(arrays)
        if np.isfinite(loss) and not bad:
            return
        layers = ", ".join(f"{k} (layer {k[1:]})" for k in bad) or "none"
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}: loss {loss}, non-finite {what}s in "
            f"{layers}; the last good checkpoint is kept in {self.out}. "
            f"Try a smaller learning rate (now {self.lr_at(self.step):g})"
        )

    def inference(self, params: network.Params | None = None):
        """(layers, params) of `params` (default: the model's) as validation runs them and
        finish() saves them: factored convolutions collapsed (`network.collapse`), batch
        normalisation folded with the population statistics of the training images of the
        first partitions (about BATCHNORM_IMAGES of them, without augmentation; one Spark job
        per batch normalisation)."""
        layers, params = network.collapse(
            self.model.layers, self.model.params if params is None else params
        )
        if not network.has_batchnorm(layers):
            return layers, params
        block = self.layout.avg_every * self.layout.chunk  # images per partition
        parts = list(range(min(self.rdd.getNumPartitions(), -(-BATCHNORM_IMAGES // block))))

        def moments(lays, p, i):
            # a few numbers per chunk: on one task per core (not one per partition), added
            # on the driver in the chunks' order
            bc = self.sc.broadcast((lays, p))
            try:
                with self._job_errors(parts):
                    rdd = self._rdd_of(parts).coalesce(self.sc.defaultParallelism)
                    results = self._mapped(rdd, distributed.moments_task(self.recipe, bc, i))
                    ordered = sorted(results.collect(), key=lambda r: r[0])
                    return reduce(distributed.add, (m for _, m in ordered))
            finally:
                bc.destroy()

        stats = network.batchnorm_statistics(layers, params, moments)
        return network.fold_batchnorm(layers, params, stats)

    def accuracy(self, want_report: bool = False, tta: bool = False, params=None, net=None):
        """Validation accuracy of `params` (default: the model's; `net`: (layers, params)
        already as `inference` makes them), with the report if asked."""
        layers, params = net or self.inference(params)
        bc = self.sc.broadcast(params)
        try:
            task = distributed.accuracy_task(layers, self.norm, self.s.dtype, bc, tta)
            with self._job_errors(list(range(self.val_rdd.getNumPartitions())), "validation"):
                results = self._mapped(self.val_rdd, task).collect()  # a small tuple per chunk
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
                "averaged": self.averaged,
            },
            self.average,
        )
        return checkpoint.save(self.out / "checkpoint.npz", ckpt)

    def restore(self) -> None:
        path = self.out / "checkpoint.npz"
        ckpt = checkpoint.load(path)
        # checkpoints from before these options were added trained as their defaults do
        before = {f.name: f.default for f in fields(Settings) if f.name in ADDED_SETTINGS}
        saved = {**before, **ckpt.settings}
        checkpoint.check_compatible(path, saved, self.s.trajectory())
        try:
            check_param_shapes(path, ckpt.params, self.model.params)
        except ValueError as e:
            raise checkpoint.CheckpointError(str(e)) from None
        self.model.params = {k: v.astype(self.model.dtype) for k, v in ckpt.params.items()}
        self.model.velocity = {k: v.astype(self.model.dtype) for k, v in ckpt.velocity.items()}
        self.step = ckpt.step
        self.elapsed = float(ckpt.meta.get("elapsed", 0.0))
        self.averaged = int(ckpt.meta.get("averaged", 0))
        self.average = ckpt.average and {
            k: v.astype(self.model.dtype) for k, v in ckpt.average.items()
        }

    def add_to_average(self) -> None:
        """Adds the parameters at an epoch's end to the running mean (--average-from)."""
        self.averaged += 1
        p = self.model.params
        if self.average is None:
            self.average = {k: v.copy() for k, v in p.items()}
        else:
            self.average = {k: a + (p[k] - a) / self.averaged for k, a in self.average.items()}

    # ------------------------------------------------------------------ the loop

    def run(self, quiet: bool = False) -> float:
        """Trains to the end (or --max-steps); returns the last epoch's validation accuracy
        (nan with --no-val or before an epoch ends)."""
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
                before = self.step
                loss = self.train_round(int(order[i]))
                dt = time.perf_counter() - t0
                self.elapsed += dt
                steps = self.step - before  # SGD steps in this round
                images = lay.batch * steps
                metrics.log(
                    kind="step",
                    step=self.step,
                    epoch=epoch,
                    loss=loss,
                    lr=self.lr_at(self.step - 1),
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
                # (at an epoch's end the checkpoint follows the epoch's averaging, below)
                due = s.checkpoint_every and self.step - last_ckpt >= s.checkpoint_every
                if due and self.step % lay.steps:
                    self.save_checkpoint()
                    last_ckpt = self.step
                if s.max_steps is not None and self.step >= s.max_steps:
                    break
            if self.step % lay.steps == 0:  # a whole epoch is done
                logged = {}  # the epoch line's validation (not with --no-val) and average
                if not s.no_val:
                    acc = self.accuracy()
                    logged["val_accuracy"] = acc
                    bar.set_postfix(loss=f"{loss:.3f}", val_acc=f"{acc:.2%}")
                if s.average_from and epoch + 1 >= s.average_from:
                    self.add_to_average()
                    logged["averaged"] = self.averaged
                    if not s.no_val:
                        logged["average_val_accuracy"] = self.accuracy(params=self.average)
                metrics.log(
                    kind="epoch",
                    step=self.step,
                    syncs=self.syncs,
                    epoch=epoch + 1,
                    time=self.elapsed,
                    **logged,
                )
                if s.checkpoint_every and self.step - last_ckpt >= s.checkpoint_every:
                    self.save_checkpoint()
                    last_ckpt = self.step
            bar.close()
        self.save_checkpoint()
        return acc

    def finish(self, memory: dict[str, int] | None = None) -> str:
        """Writes model.npz, the plots and the evaluation report; returns the report text.

        memory: peak RSS per role (`monitor.MemoryWatch.peaks`), kept in the report. With
        --average-from, the model is the mean of the averaged epochs' parameters."""
        if self.average is not None:
            self.model.params = self.average
        net = self.inference()
        self.saved_model(net[1]).save(self.out / "model.npz")
        monitor.plot(
            self.out / "metrics.jsonl", self.out / "training.png", f"{self.s.model} {self.s.mode}"
        )
        _, rep = self.accuracy(want_report=True, tta=self.s.tta, net=net)
        if self.s.tta:
            rep = evaluate.with_tta(rep, single_view_accuracy=self.accuracy(net=net))
        rep["training_seconds"] = self.elapsed
        if memory:
            rep["peak_memory_bytes"] = memory
        return evaluate.write_report(rep, self.out)

    def saved_model(self, params: network.Params):
        """The classifier that model.npz holds: the trained model, or for a batch-normalised
        one the plain model it folds into (`ModelSpec.folds_into`), with `params`."""
        m = self.model
        saved = classifier_class(m.saved_as)(params, num_classes=m.num_classes, dtype=m.dtype)
        saved.metadata = m.metadata
        return saved

    def close(self) -> None:
        """Releases the cached data if this trainer loaded it."""
        if self.owns_data:
            self.data.release()


def starting_point(path: str | Path) -> tuple[network.Params, dict[str, Any]]:
    """The parameters and metadata --init-from starts from: a model file's (`save()`), or a
    trainer checkpoint's, whose parameters are in the model's training form (cnn-bn's
    normalisation scales, cnn-bn-3x3's factors), which a saved model has folded away."""
    try:
        ckpt = checkpoint.load(path)
    except checkpoint.NotACheckpoint:
        return load_params(path)  # a model file, or the error naming it as one
    return ckpt.params, {**ckpt.meta, "model": ckpt.settings.get("model")}


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    kernels.keep_freed_memory()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:  # the files the run starts from, before Spark starts
        if s.init_from:
            starting_point(s.init_from)
        for model_file in s.teachers:
            load_params(model_file)
        check_targets_source(s)
        if s.resume:
            checkpoint.load(Path(s.out) / "checkpoint.npz")
        spark = get_session(s.master or submitted_master(), f"sparknet-train-{s.model}")
    except (SparkSetupError, ValueError, FileNotFoundError) as e:
        print(f"python -m trainer: error: {e}", file=sys.stderr)
        return 2
    try:
        for line in executors.check(spark.sparkContext):
            print(line, flush=True)
        trainer = Trainer(s, spark)
        print(
            f"{s.model}: {trainer.layout.n_images} training images, {trainer.layout.steps} steps "
            f"of {s.batch} per epoch, {s.epochs} epochs, mode {s.mode}"
            + (f" (K={s.avg_every})" if s.mode == "avg" else "")
            + f", {s.partitions} partitions, master {spark.sparkContext.master}"
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
        stop_quietly(spark)
    return 0


if __name__ == "__main__":
    sys.exit(main())
