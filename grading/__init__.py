"""Staff only, never in the starter: the starter generator, the grader and its checks,
the grading configuration and the Gradescope autograder templates."""
