"""The Spark classifier base: chunked RDD, broadcast, tree reduction, update.

A Spark classifier is its matrix twin whose gradients come from an RDD of
image chunks instead of in-process arrays:

    driver     X, y -> chunks -> RDD[(row_offset, (X_chunk, y_chunk))], P partitions, cached
    iteration  params -> broadcast (the previous one is destroyed)
               forward():  RDD[(offset, (scores, caches, y))]            lazy
               backward(): per chunk (loss_sum, n, grads), treeReduce   one Spark job
    driver     loss /= n, grads /= n, then the matrix version's update (util.optim)

Subclasses implement `forward()` and `backward()` (the students' part);
everything else lives here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from py4j.protocol import Py4JError, Py4JJavaError
from pyspark import RDD, Broadcast
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.sql import SparkSession

from matrix.classifier import Classifier, param_problems
from spark.errors import TaskFailure, job_error_text, task_failure
from spark.session import job_group
from util import models, network
from util.network import Params

# (loss_sum, number of images, summed gradients) of one or more chunks
Result = tuple[float, int, Params]
# set to 1, a SparkTaskError's message ends with the executor's whole Python traceback
FULL_TRACEBACK = "SPARKNET_FULL_TRACEBACK"
DIAGNOSIS_GROUP = "sparknet-failure-diagnosis"  # the job group of the chunk probes

log = logging.getLogger(__name__)


class SparkTaskError(RuntimeError):
    """A Spark task failed. The message names the classifier, the iteration, the chunk, the
    Python error and the deepest frame in a student's file (or where the error was raised);
    `traceback` is the executor's whole Python traceback."""

    def __init__(
        self, message: str, failure: TaskFailure | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.offset = offset  # the failing chunk's row offset (None: not found)

    @property
    def traceback(self) -> str:
        return self.failure.traceback if self.failure is not None else ""


def spark_class(name: str) -> type[SparkClassifier]:
    """The Spark version of the registry's model `name` (ValueError if it has none)."""
    spec = models.get(name)
    if spec.spark_class is None:
        raise ValueError(f"model {name!r} has no Spark classifier; see util/models.py")
    return models.import_class(spec.spark_class)


def add_results(a: Result, b: Result) -> Result:
    """Combines two chunk results into a new one (never modifies either: no aliasing)."""
    return a[0] + b[0], a[1] + b[1], {k: a[2][k] + b[2][k] for k in a[2]}


def chunk_bounds(n: int, chunks: int | Sequence[int]) -> list[tuple[int, int]]:
    """[(start, stop)] row ranges: `chunks` near-equal parts, or explicit chunk sizes."""
    if isinstance(chunks, (int, np.integer)):
        if not 1 <= chunks <= n:
            raise ValueError(f"chunks must be between 1 and the {n} images, got {chunks}")
        sizes = [len(a) for a in np.array_split(np.arange(n), chunks)]
    else:
        sizes = [int(s) for s in chunks]
        if any(s < 1 for s in sizes) or sum(sizes) != n:
            raise ValueError(f"chunk sizes {sizes} must be positive and add up to the {n} images")
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for s, b in zip(sizes, stops, strict=True)]


def select_rows(record: tuple[int, tuple], batch: np.ndarray) -> tuple[int, tuple]:
    """Keeps the rows of a chunk whose global index (offset + i) is in the sorted `batch`."""
    offset, (X, y) = record
    lo, hi = np.searchsorted(batch, [offset, offset + len(y)])
    rows = batch[lo:hi] - offset
    return offset, (X[rows], y[rows])


class SparkClassifier(Classifier):
    """Base of the Spark classifiers; pair it with a matrix class for name, layers, defaults."""

    def __init__(
        self,
        params: Params | None = None,
        *,
        spark: SparkSession,
        partitions: int | None = None,
        chunks: int | Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        """spark: the session; partitions: RDD partitions (default: Spark's parallelism);
        chunks: number of chunks or explicit chunk sizes (default: one chunk per partition)."""
        super().__init__(params, **kwargs)
        self.spark = spark
        self.sc = spark.sparkContext
        self.partitions = partitions or self.sc.defaultParallelism
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        self.chunks = chunks
        self.iteration = 0
        self._broadcast: Broadcast | None = None
        self._layouts: dict[int, list[list[int]]] = {}
        self._layout: list[list[int]] = []  # of the RDD in use

    # ------------------------------------------------------------------ the students' part

    def forward(self, data: RDD, params: Broadcast) -> RDD:
        """data: RDD[(offset, (X (n, C, H, W), y (n,)))] -> RDD[(offset, (scores, caches, y))]."""
        raise NotImplementedError

    def backward(self, forwarded: RDD, params: Broadcast) -> Result:
        """forwarded: forward()'s RDD -> (loss_sum, n, grads summed over all chunks)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ data

    def parallelize(self, X: np.ndarray, y: np.ndarray) -> RDD:
        """A cached RDD[(row_offset, (X_chunk, y_chunk))] in `self.partitions` partitions."""
        if len(X) != len(y):
            raise ValueError(f"X has {len(X)} images but y has {len(y)} labels")
        if len(y) == 0:
            raise ValueError(f"{self.name}: no images to train or validate on")
        if self.partitions > len(y):
            raise ValueError(
                f"{self.name}: {self.partitions} partitions for only {len(y)} images; "
                "use fewer partitions"
            )
        bounds = chunk_bounds(len(y), self.chunks or self.partitions)
        records = [(a, (X[a:b], y[a:b])) for a, b in bounds]
        rdd = self.sc.parallelize(records, self.partitions).cache()
        rdd.count()  # materialise the cache now, not inside the first timed iteration
        # chunk offsets per partition, to name the chunks of a failed task
        self._layouts[rdd.id()] = rdd.glom().map(lambda part: [k for k, _ in part]).collect()
        return rdd

    def prepare(self, X: np.ndarray, y: np.ndarray) -> RDD:
        return self.parallelize(X, y)

    def release(self, data: RDD) -> None:
        self._layouts.pop(data.id(), None)
        data.unpersist()
        if self._broadcast is not None:
            self._broadcast.destroy()
            self._broadcast = None

    def broadcast_params(self) -> Broadcast:
        """Broadcasts the current parameters, destroying the previous broadcast."""
        if self._broadcast is not None:
            self._broadcast.destroy()
        self._broadcast = self.sc.broadcast(self.params)
        return self._broadcast

    # ------------------------------------------------------------------ gradients

    def gradients(self, data: RDD, batch: np.ndarray | None) -> tuple[float, Params]:
        """Mean loss and gradients over the batch rows (None: all) by one Spark job."""
        self.iteration += 1
        self._layout = self._layouts.get(data.id(), [])
        if batch is not None:
            batch_bc = self.sc.broadcast(np.asarray(batch))
            data = data.map(lambda r: select_rows(r, batch_bc.value)).filter(
                lambda r: len(r[1][1]) > 0
            )
        params = self.broadcast_params()
        loss_sum, n, grads = self._run(
            lambda d: self.backward(self.forward(d, params), params), data
        )
        if batch is not None:
            batch_bc.destroy()
        self._check_gradients(grads)
        return loss_sum / n, {k: g / n for k, g in grads.items()}

    def _check_gradients(self, grads: Params) -> None:
        """backward() must return one gradient per parameter, of its parameter's shape: a
        ValueError naming each one that does not fit (before the update fails obscurely)."""
        problems = param_problems(grads, self.params)
        if problems:
            raise ValueError(
                f"{self.name}: iteration {self.iteration}: backward() returned gradients that "
                f"do not fit the parameters: {'; '.join(problems)}"
            )

    def accuracy_on(self, data: RDD, tta: bool = False) -> float:
        """Fraction of correct predictions over a chunk RDD (forward only, one job); `tta`:
        by `network.predict`'s test-time augmentation instead of `forward()`."""
        self._layout = self._layouts.get(data.id(), [])
        params = self.broadcast_params()
        layers = self.layers

        def hits(pred: np.ndarray, y: np.ndarray) -> tuple[int, int]:
            return int(np.sum(pred == y)), len(y)

        def counts(d: RDD) -> RDD:
            if tta:
                return d.map(
                    lambda r: hits(network.predict(layers, params.value, r[1][0], True), r[1][1])
                )
            return self.forward(d, params).map(lambda r: hits(r[1][0].argmax(axis=1), r[1][2]))

        correct, n = self._run(
            lambda d: counts(d).treeReduce(lambda a, b: (a[0] + b[0], a[1] + b[1])), data
        )
        return correct / n

    def _run(self, job: Callable[[RDD], Any], data: RDD) -> Any:
        """Runs job(data), one Spark job; a failed task becomes a SparkTaskError naming the
        classifier, the iteration, the chunk that failed, the Python error and the deepest
        frame in a student's file (with the executor's traceback on the exception)."""
        try:
            return job(data)
        except (Py4JJavaError, CapturedException) as e:
            text = job_error_text(e)
        log.debug("%s: iteration %d: a Spark job failed:\n%s", self.name, self.iteration, text)
        failure = task_failure(text)
        offset, where = self._failing_chunk(job, data, failure)
        message = (
            f"{self.name}: iteration {self.iteration}: a Spark task failed{where}: "
            + failure.summary()
        )
        if os.environ.get(FULL_TRACEBACK, "") not in ("", "0"):
            message += "\n--- the executor's traceback ---\n" + (failure.traceback or text)
        raise SparkTaskError(message, failure, offset)

    def _failing_chunk(
        self, job: Callable[[RDD], Any], data: RDD, failure: TaskFailure
    ) -> tuple[int | None, str]:
        """(row offset or None, words for the message) of the chunk whose task failed.

        Spark reports which task (partition) failed but not which record raised: a partition
        of one chunk names its chunk outright; otherwise the job is re-run chunk by chunk
        (error path only), over the failed partition's chunks where it is known. The probes
        run in their own job group, so job counts of the caller's group stay those of training.
        """
        partition = self._failed_partition(failure)
        chunks = self._layout[partition] if partition is not None else []
        if len(chunks) == 1:
            return chunks[0], f" in the chunk at row offset {chunks[0]}"
        candidates = chunks[:64] if chunks else [k for ks in self._layout for k in ks[:64]]
        with job_group(self.sc, DIAGNOSIS_GROUP, "finding the chunk that failed"):
            for offset in candidates:
                try:
                    job(data.filter(lambda r, k=offset: r[0] == k))
                except (Py4JJavaError, CapturedException):
                    return offset, f" in the chunk at row offset {offset}"
                except Exception:  # noqa: BLE001 - the chunk ran; its result alone is unusable
                    continue
        if chunks:  # no chunk fails alone: the failure needs the partition's chunks together
            offsets = ", ".join(map(str, chunks))
            return None, f" in the partition of the chunks at row offsets {offsets}"
        return None, ""

    def _failed_partition(self, failure: TaskFailure) -> int | None:
        """The data partition of the task that failed with `failure`'s error, from Spark's
        status store; None when it cannot tell (the failed stage is not the one over the data's
        partitions, or the store, internal to Spark and reached through py4j, does not answer:
        then the chunks are probed)."""
        if not self._layout:
            return None
        sc, tracker = self.sc, self.sc.statusTracker()
        try:
            # the failed task's end reaches the store through the listener bus, asynchronously
            sc._jsc.sc().listenerBus().waitUntilEmpty(10_000)
            group = sc.getLocalProperty("spark.jobGroup.id")
            failed_jobs = [
                info
                for j in tracker.getJobIdsForGroup(group)
                if (info := tracker.getJobInfo(j)) is not None and info.status == "FAILED"
            ]
            if not failed_jobs:
                return None
            # parents get lower stage ids: the job's first stage runs over the data's partitions
            job = max(failed_jobs, key=lambda info: info.jobId)
            stage = tracker.getStageInfo(min(job.stageIds))
            if stage is None or stage.numTasks != len(self._layout):
                return None
            tasks = (
                sc._jsc.sc().statusStore().taskList(stage.stageId, stage.currentAttemptId, 1 << 30)
            )
            failed: dict[int, str] = {}  # partition -> its task's error message
            for i in range(tasks.size()):
                task = tasks.apply(i)
                if task.status() == "FAILED":
                    message = task.errorMessage()
                    failed[task.index()] = message.get() if message.isDefined() else ""
        except (Py4JError, AttributeError) as e:
            log.debug("%s: no failed task in Spark's status store (%s); probing", self.name, e)
            return None
        same_error = [p for p, message in failed.items() if failure.error in message]
        # of several, one with the fewest chunks to probe
        return min(same_error or failed, key=lambda p: (len(self._layout[p]), p), default=None)
