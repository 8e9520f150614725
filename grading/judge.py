"""The trusted verdicts: references computed here, in the grader's process, where no submitted
code is ever imported, and each check's raw outputs judged against them (spark/contract.py's
`reference` and `judge` halves). Nothing the step's process sends can pass a check but
numbers that agree with the references."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from spark.contract import CHECKS, ContractError, check_images, explain
from spark.tester import MismatchError

MAX_TEXT = 4000  # characters of a student-side error shown


@dataclass
class Outcome:
    passed: bool
    output: str
    seconds: float = 0.0
    status: str = "ran"  # ran | timeout | crash | memory | not_run | grader_error | rules


@functools.cache
def images() -> tuple[np.ndarray, np.ndarray]:
    """The checks' images (spark.contract.check_images), decoded once per grading."""
    return check_images()


def references(model: str, kinds: list[str]) -> dict[str, Any]:
    """kind -> what the check's outputs must be, for the student class of `model`."""
    X, y = images()
    return {kind: CHECKS[kind].reference(model, X, y) for kind in kinds}


def judge(report, reference: Any, source: tuple[str, str]) -> Outcome:
    """The verdict on one supervisor.Report; source: (the student's file text, its name)."""
    printed = report.printed.strip()
    shown = f"\n--- your code printed (last lines) ---\n{printed[-1500:]}" if printed else ""
    obs = report.observed
    if obs is None:
        return Outcome(False, report.text + shown, report.seconds, report.status)
    if "error" in obs.meta:
        return Outcome(False, str(obs.meta["error"])[:MAX_TEXT] + shown, report.seconds)
    try:
        text = CHECKS[report.kind].judge(obs, reference, source)
    except (ContractError, MismatchError) as e:
        return Outcome(False, explain(e) + shown, report.seconds)
    except Exception as e:  # noqa: BLE001 - the outputs come from an untrusted process
        return Outcome(
            False,
            f"FAILED: the check's outputs are not what the assignment's code returns "
            f"({type(e).__name__}: {str(e)[:300]})" + shown,
            report.seconds,
        )
    return Outcome(True, text, report.seconds)
