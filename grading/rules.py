"""The submission rules at grading time: `reject_rule_breakers` records every student file
that breaks them, so that it is not run. The rules themselves (`RULES`, `check_rules`) are
spark/rules.py, which students run too (`make test-<step>`, `make check-submission`)."""

from __future__ import annotations

from grading.submission import STUDENT_FILES, Submission
from spark import rules
from spark.rules import RULES

__all__ = ["RULES", "reject_rule_breakers"]


def reject_rule_breakers(sub: Submission) -> None:
    """Records in sub.problems every student file that breaks the rules (it will not run)."""
    for model, rel in STUDENT_FILES.items():
        if model in sub.problems or rel not in sub.files:
            continue
        problems = rules.check_rules(model, sub.files[rel])
        if problems:
            sub.problems[model] = (
                f"{rel} breaks the submission rules, so it was not run:\n"
                + "\n".join(f"  {rel} {p}" for p in problems)
            )
