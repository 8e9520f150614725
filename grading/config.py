"""The grader's configuration: reads and checks grading/grading.toml (points, visibility,
time limits per check) into a `Config`; a bad file or usage is a `GradeError`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from spark.contract import CHECKS
from util import models

MODELS = tuple(spec.name for spec in models.STEPS)  # in step order
KINDS = tuple(CHECKS)  # forward, tester_uneven_chunks, ..., spark_usage
CHECK_IDS = tuple(f"{m}.{k}" for m in MODELS for k in KINDS)

CONFIG = Path(__file__).resolve().parent / "grading.toml"
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


class GradeError(RuntimeError):
    """A configuration or usage error of the grader itself (exit status 2)."""


@dataclass(frozen=True)
class TestSpec:
    id: str
    name: str
    weight: float
    visibility: str
    time_limit: float
    number: str

    @property
    def model(self) -> str:
        return self.id.split(".", 1)[0]

    @property
    def kind(self) -> str:
        return self.id.split(".", 1)[1]


@dataclass
class Config:
    tests: list[TestSpec]
    spark_master: str = "auto"  # auto: local[1] on a machine of at most 1.5 CPUs, else local[2]
    startup_time_limit: float = 120.0  # s for a step's process to start Spark
    time_budget: float = 480.0  # s for the whole grading run, whatever the limits
    memory_limit_gb: float = 2.0  # all of a step's processes together (capped by the machine)
    student_user: str = "sparknet-student"
    leaderboard: bool = True
    rules: bool = True  # false only to test the sandbox with code the rules would refuse


def load_config(path: Path = CONFIG) -> Config:
    """Reads and checks grading/grading.toml; raises GradeError naming what is wrong."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise GradeError(f"{path}: {e}") from None
    tests_raw = raw.get("tests", {})
    unknown = sorted(set(tests_raw) - set(CHECK_IDS))
    missing = sorted(set(CHECK_IDS) - set(tests_raw))
    if unknown or missing:
        raise GradeError(
            f"{path}: tests must match the checks of grading/checks.py; "
            f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
        )
    tests = []
    per_model: dict[str, int] = {}
    for test_id, t in tests_raw.items():
        where = f'{path}: [tests."{test_id}"]'
        extra = set(t) - {"name", "weight", "visibility", "time_limit"}
        if extra:
            raise GradeError(f"{where}: unknown keys {sorted(extra)}")
        weight, limit = t.get("weight"), t.get("time_limit")
        vis = t.get("visibility", "visible")
        if not isinstance(weight, (int, float)) or weight < 0:
            raise GradeError(f"{where}: weight must be a number >= 0, got {weight!r}")
        if not isinstance(limit, (int, float)) or limit <= 0:
            raise GradeError(f"{where}: time_limit must be a number of seconds > 0, got {limit!r}")
        if vis not in VISIBILITIES:
            raise GradeError(f"{where}: visibility must be one of {VISIBILITIES}, got {vis!r}")
        model = test_id.split(".", 1)[0]
        per_model[model] = per_model.get(model, 0) + 1
        number = f"{MODELS.index(model) + 1}.{per_model[model]}"
        tests.append(
            TestSpec(test_id, t.get("name", test_id), float(weight), vis, float(limit), number)
        )
    g = raw.get("grader", {})
    defaults = Config([])
    types = {f.name: type(getattr(defaults, f.name)) for f in fields(Config) if f.name != "tests"}
    extra = set(g) - set(types)
    if extra:
        raise GradeError(f"{path}: [grader]: unknown keys {sorted(extra)}")
    values = {}
    for key, value in g.items():
        want = types[key]
        ok = isinstance(value, want) or (want is float and isinstance(value, int))
        if not ok or isinstance(value, bool) != (want is bool):
            raise GradeError(f"{path}: [grader] {key} must be a {want.__name__}, got {value!r}")
        if want is float and value <= 0:
            raise GradeError(f"{path}: [grader] {key} must be > 0, got {value!r}")
        values[key] = want(value)
    return Config(tests, **values)
