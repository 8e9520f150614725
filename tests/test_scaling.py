"""The scaling study (bench.scaling): its least-squares fit on synthetic rounds with known
constants, a wrong model caught by its residuals, the model's tree and stop point, the
table and plot writing, and one short end-to-end run on local[1] (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import scaling

B = 90_000  # parameter bytes, about the CNN's in float32
TRUE = {  # seconds, seconds per image, seconds per byte
    "c0": 0.002, "c_img": 0.0005, "s0": 0.0004, "sigma": 0.3e-9, "b0": 0.004, "beta": 1.5e-9,
    "a0": 0.0003, "alpha": 0.2e-9, "upd": 2e-9, "o0": 0.060, "lam": 4e-9, "rho": 6e-9,
}  # fmt: skip
NOISE = 0.0002  # 0.2 ms of timing noise


def synthetic_rounds(E: int = 2, noise: float = NOISE, seed: int = 0, extra=None) -> list[dict]:
    """Rounds of one setting like measure_setting's: sync with a ballast sweep, avg K=1,5,20;
    each component from the model's own features and TRUE, plus Gaussian noise;
    extra(row) -> seconds added to the overhead (a law the model does not have)."""
    rng = np.random.default_rng(seed)
    configs = [("sync", 1, 0, 0)] + [("sync", 1, m, r) for m, r in ((100, 0), (0, 100), (25, 25))]
    configs += [("avg", k, 0, 0) for k in (1, 5, 20)]
    rows = []
    for mode, K, bcm, resm in configs:
        payload = B if mode == "sync" else 2 * B
        for _ in range(8):
            r = {
                "setting": "synthetic", "mode": mode, "K": K, "E": E, "b": 64,
                "param_bytes": B, "bc_ballast": bcm, "result_ballast": resm,
                "bc_bytes": payload + bcm * B, "result_bytes": payload + resm * B,
            }  # fmt: skip
            for comp, terms in scaling.MODEL.items():
                r[comp] = sum(TRUE[t.name] * t.feature(r) for t in terms) + noise * rng.normal()
            if extra:
                r["overhead"] += extra(r)
            r["wall"] = sum(r[c] for c in scaling.COMPONENTS)
            rows.append(r)
    return rows


def trivial() -> list[dict]:
    """Trivial jobs: 3 ms of wall time and 2 ms of the driver's CPU per task."""
    return [
        {"setting": "synthetic", "tasks": P, "wall": 0.05 + 0.003 * P, "driver_cpu": 0.002 * P}
        for P in (1, 2, 4, 8, 16)
    ]


def test_the_fit_recovers_known_constants():
    fits = scaling.fit_setting(synthetic_rounds(), trivial())
    got = scaling.constants(fits)
    for name, want in TRUE.items():
        # the fixed terms are a few ms against 0.2 ms noise; the slopes are well spread
        assert got[name] == pytest.approx(want, rel=0.1, abs=3 * NOISE), name
    assert got["tau"] == pytest.approx(0.002) and got["tau_wall"] == pytest.approx(0.003)
    assert got["E0"] == 2
    for comp in scaling.COMPONENTS:
        assert fits[comp].rms < 2 * NOISE, comp


def test_a_wrong_model_leaves_large_residuals():
    # the overhead really grows with the square of the result bytes: the model's linear
    # terms cannot follow it, and the residuals say so
    rows = synthetic_rounds(extra=lambda r: 2e-15 * r["result_bytes"] ** 2)
    fits = scaling.fit_setting(rows, trivial())
    assert fits["overhead"].rms > 10 * NOISE
    assert scaling.fit_setting(synthetic_rounds(), trivial())["overhead"].rms < 2 * NOISE
    # and a model without the gather term (rho) fails on data that has one
    terms = tuple(t for t in scaling.MODEL["overhead"] if t.name != "rho")
    fit = scaling.fit_component(synthetic_rounds(), terms, lambda r: r["overhead"])
    assert fit.rms > 10 * NOISE


def test_a_negative_cost_is_clamped_to_zero():
    rows = synthetic_rounds()
    for r in rows:  # a broadcast that gets *cheaper* with more bytes: noise, not a cost
        r["broadcast"] = 0.01 - 1e-9 * r["bc_bytes"]
    fit = scaling.fit_setting(rows, trivial())["broadcast"]
    assert fit.coef["beta"] == 0 and fit.clamped == ["beta"]
    assert fit.coef["b0"] == pytest.approx(np.mean([r["broadcast"] for r in rows]))


def test_predict_is_the_fitted_model_at_the_measured_executors():
    # the model that extrapolates must be the one that was fitted: at E = E0, flat, its
    # total is the sum of the components' features times the constants
    rows = synthetic_rounds(noise=0.0)
    k = {**TRUE, "tau": 0.003, "E0": 2.0}
    for r in rows:
        total = scaling.predict(k, r, r["mode"], r["K"], r["b"], np.array([2]))["total"][0]
        assert total == pytest.approx(r["wall"], rel=1e-12)


def test_tree_shape_follows_the_fan_in():
    assert scaling.tree_shape(256, tree=False) == (256, 0)
    assert scaling.tree_shape(8, tree=True) == (8, 0)  # one level: the driver adds all
    assert scaling.tree_shape(64, tree=True) == (8 + 8, 1)  # 8 groups of 8, then the driver
    # depth 3 for 65..512: groups of ceil(256^(1/3)) = 7, twice, then ceil(256/49) = 6
    assert scaling.tree_shape(256, tree=True) == (7 + 7 + 6, 2)


def test_stop_point_is_where_efficiency_halves():
    # compute 100 ms per round, 10 ms per task beyond the first: efficiency
    # 0.1 / (0.1 + 0.01 (E - 1)) falls below 1/2 once E - 1 > 10
    k = dict.fromkeys(TRUE, 0.0) | {"c0": 0.1, "tau": 0.01, "E0": 1.0}
    sizes = {"bc_bytes": B, "result_bytes": B, "param_bytes": B}
    E = np.arange(1, 257)
    pred = scaling.predict(k, sizes, "sync", 1, 64, E)
    assert scaling.stop_point(pred, E) == (12, "per-task scheduling")
    # the 100x network has 100x the compute: the same per-task cost halves it much later
    big = scaling.predict(k, sizes, "sync", 1, 64, E, scale=100)
    assert scaling.stop_point(big, E) == (None, "per-task scheduling")


def test_table_model_and_plot_are_written(tmp_path):
    rows = synthetic_rounds()
    for r in rows:
        r["setting"] = "standalone"
    res = {
        "settings": {
            "out": "runs/scaling", "dtype": "float32", "batch": 64, "rounds": 8, "warmup": 1,
            "max_executors": 64, "nic_gbit": 10.0,
        },
        "model_setting": "standalone",
        "conditions": {
            "uptime_before": "load average: 0.50", "uptime_after": "load average: 0.70",
            "seconds": 60.0, "date": "today", "machine": "2 cores",
        },
        "rows": rows,
        "jobs": [{**j, "setting": "standalone"} for j in trivial()],
    }  # fmt: skip
    fits = scaling.write_outputs(res, tmp_path)
    md = (tmp_path / "scaling.md").read_text()
    png = (tmp_path / "scaling.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "**Measured**" in md and "**modelled**" in md and "load average: 0.70" in md
    # the measurement table: one row per mode, the sweep's rows in their own table; each
    # configuration again in the table of residuals
    lines = md.splitlines()
    assert sum(line.startswith("| standalone | sync | 2 | 128 | ") for line in lines) == 1
    assert (
        sum(line.startswith("| standalone | sync + ballast 100x/0x | 2 |") for line in lines) == 1
    )
    assert sum(line.startswith("| standalone | avg K=20 | ") for line in lines) == 2
    assert "| rho | overhead |" in md and "GB/s" in md
    assert f"{1000 * fits['standalone']['overhead'].rms:.2f}" in md  # the residuals are printed
    # modelled images/s per network, gather and mode, up to E = 64
    assert md.count("| 100x | tree |") == 4 and "E=64" in md and "E=128" not in md


@pytest.mark.slow
def test_quick_run_on_local1(tmp_path, run_module):
    # its own process: the study starts and stops its own SparkSession
    res = run_module(
        "bench.scaling", "--quick", "--settings", "local[1]", "--out", str(tmp_path),
        "--docs", str(tmp_path), timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    raw = json.loads((tmp_path / "scaling.json").read_text())
    rows = raw["rows"]
    assert {(r["mode"], r["K"]) for r in rows} == {("sync", 1), ("avg", 1), ("avg", 5)}
    for r in rows:
        assert r["E"] == 1 and r["compute"] > 0 and r["serialise"] > 0 and r["wall"] > 0
        assert sum(r[c] for c in scaling.COMPONENTS) == pytest.approx(r["wall"], rel=1e-9)
        assert 0 < r["compute_cpu"] <= r["compute"] + 0.005  # one thread: CPU <= wall
    avg5 = [r for r in rows if r["K"] == 5]
    sync = [r for r in rows if r["mode"] == "sync" and not r["bc_ballast"]]
    # five local steps compute more than one; avg returns parameters and velocity
    assert np.median([r["compute"] for r in avg5]) > np.median([r["compute"] for r in sync])
    assert avg5[0]["result_bytes"] > 1.8 * sync[0]["result_bytes"]
    assert any(r["bc_ballast"] == 20 for r in rows)
    assert {j["tasks"] for j in raw["jobs"]} == {1, 2, 4}
    assert all(j["wall"] > 0 and j["driver_cpu"] >= 0 for j in raw["jobs"])
    assert (tmp_path / "scaling.png").stat().st_size > 20_000
    assert "| local[1] | sync | 1 | 64 |" in (tmp_path / "scaling.md").read_text()
