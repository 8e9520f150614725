"""Staff and maintenance tools: sample generator, starter generator, grader, benchmarks."""
