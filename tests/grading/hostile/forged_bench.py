"""Forge the leaderboard: replace the runner's benchmark with one that computes the losses
the grader expects (grading/leaderboard.py's reference_losses, in the tree) once the seed
arrives, and sends them all at once.

The CNN is the solution, so the step keeps its 50 points; the leaderboard value must be
the Spark training's, not the forger's.

target: cnn
base: solution
where: import
rules: off
score: 50
"""

from grading import leaderboard


def instant_bench(cls, spark, seed, on_loss):
    for i, loss in enumerate(leaderboard.reference_losses(seed), start=1):
        on_loss(i, loss)


leaderboard.run_bench = instant_bench
