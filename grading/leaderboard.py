"""The Gradescope leaderboard: how fast the student's Spark CNN trains (staff-only).

Run only when every check of the CNN step passed. The grader picks a random seed after the
checks and sends it to the step's process; the runner (grading/runner.py) trains the
student's class on BENCH_IMAGES images of the shipped sample chosen by that seed, from
parameters drawn with it, 1 warm-up and BENCH_ITERS timed full-batch iterations, sending
the loss of each. The grader clocks the frames' arrival itself and checks every loss
against its own matrix run with the same seed, so a value cannot be forged by reporting
early or by reporting numbers computed before the seed was known.

    images per second = BENCH_IMAGES * BENCH_ITERS / (arrival of the last loss - arrival of
                        the warm-up's loss)

(the mean over the timed iterations, not a median of per-iteration times: the arrival times
of single frames are the process's to choose; their span is not).
"""

from __future__ import annotations

import numpy as np

BENCH_IMAGES = 128
BENCH_ITERS = 2  # timed, after one warm-up iteration
BENCH_PARTITIONS = 2
LOSS_TOL = 1e-9
NAME = "CNN training, images/s (Spark, 2 partitions)"


def bench_images(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """BENCH_IMAGES of the shipped training sample chosen by seed, normalised with the whole
    sample's statistics. X: (BENCH_IMAGES, 3, 32, 32) float64, y: (BENCH_IMAGES,) int."""
    from util import data

    train = data.load(data.SAMPLE, "train")
    pick = np.random.default_rng(seed).choice(len(train.y), BENCH_IMAGES, replace=False)
    norm = data.Normalizer.fit(train.X)
    return norm.apply(train.X[pick], np.float64), train.y[pick]


def run_bench(cls, spark, seed: int, on_loss) -> None:
    """Untrusted side: trains the student class; on_loss(iteration, loss) after each."""
    X, y = bench_images(seed)
    m = cls(
        spark=spark,
        num_classes=int(y.max()) + 1,
        in_shape=X.shape[1:],
        dtype=X.dtype,
        seed=seed,
        partitions=BENCH_PARTITIONS,
    )
    m.train(X, y, 1 + BENCH_ITERS, on_iteration=lambda r: on_loss(r.iteration, r.loss))


def reference_losses(seed: int) -> list[float]:
    """Trusted side: the matrix CNN's losses on the same images from the same parameters."""
    from matrix.classifier import classifier_class
    from spark.tester import matrix_trajectory

    X, y = bench_images(seed)
    _, traj = matrix_trajectory(classifier_class("cnn"), X, y, iters=1 + BENCH_ITERS, seed=seed)
    return [loss for loss, _ in traj]


def images_per_second(arrivals: list[float], losses: list[float], seed: int) -> float | str:
    """The leaderboard value from the grader's arrival times (monotonic seconds) and the
    reported losses, or why there is none."""
    if len(losses) != 1 + BENCH_ITERS or len(arrivals) != len(losses):
        return f"the benchmark sent {len(losses)} of {1 + BENCH_ITERS} iterations"
    want = reference_losses(seed)
    for i, (got, ref) in enumerate(zip(losses, want, strict=True), start=1):
        if not abs(got - ref) <= LOSS_TOL * max(1.0, abs(ref)):
            return f"iteration {i}: loss {got!r} is not the matrix version's {ref!r}"
    span = arrivals[-1] - arrivals[0]
    if span <= 0:
        return "the timed iterations took no time"
    return BENCH_IMAGES * BENCH_ITERS / span
