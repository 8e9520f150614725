"""The grader's configuration: reads and checks grading/grading.toml (points, visibility,
time limits per check) into a `Config`; a bad file or usage is a `GradeError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from grading.checks import CHECK_IDS, MODELS

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


@dataclass
class Config:
    tests: list[TestSpec]
    spark_master: str = "local[2]"
    startup_time_limit: float = 240.0
    max_workers: int = 8


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
    return Config(
        tests,
        spark_master=str(g.get("spark_master", "local[2]")),
        startup_time_limit=float(g.get("startup_time_limit", 240)),
        max_workers=int(g.get("max_workers", 8)),
    )
