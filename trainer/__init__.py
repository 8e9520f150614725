"""Real training on Spark: sync SGD and parameter averaging over cached partitions,
checkpoints, metrics and plots, evaluation reports (`python -m trainer`, `sparknet-train`;
`python -m trainer.evaluate`, `sparknet-evaluate`)."""
