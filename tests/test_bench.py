"""The benchmark and profiling tools: their arithmetic, their reference network, and a
small end-to-end run of each (timings are printed, never asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench import steps as bench
from matrix.classifier import classifier_class
from util import models, network
from util.data import SAMPLE


def test_step_flops_counts_forward_and_both_backward_gemms():
    # linear: X @ W forward, X.T @ dout for dW, no input gradient for the first layer
    assert bench.step_flops(models.get("linear").layers, 100) == 2 * (2 * 100 * 3072 * 10)
    # nn: the second layer also needs dX
    first, second = 2 * 100 * 3072 * 100, 2 * 100 * 100 * 10
    assert bench.step_flops(models.get("nn").layers, 100) == 2 * first + 3 * second
    # cnn: conv 1 forward is 2 * N * F * (C*k*k) * (Ho*Wo)
    conv1 = 2 * 10 * 16 * 75 * 1024
    assert bench.step_flops(models.get("cnn").layers[:1], 10) == 2 * conv1


@pytest.mark.parametrize("name", ["linear", "nn", "cnn", "cnn-bn", "cnn-bn-3x3"])
def test_the_pytorch_reference_is_the_same_network(name):
    torch = pytest.importorskip("torch")
    model = classifier_class(name)(dtype=np.float64)
    X = np.random.default_rng(0).standard_normal((4, 3, 32, 32))
    scores, _ = network.forward(model.layers, model.params, X)
    with torch.no_grad():
        theirs = bench.torch_network(model.layers, model.params).double()(torch.from_numpy(X))
    assert np.allclose(theirs.numpy(), scores, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["cnn-bn", "cnn-bn-3x3"])
def test_training_form_gradients_equal_pytorchs(name):
    """cnn-bn's loss gradients (batch statistics, biased variance) equal PyTorch autograd's
    through BatchNorm2d in training mode: an independent check of batchnorm_backward; and
    cnn-bn-3x3's through its two Conv2d per conv, of the factored conv's backward."""
    torch = pytest.importorskip("torch")
    model = classifier_class(name)(dtype=np.float64, seed=3)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 3, 32, 32)), rng.integers(0, 10, 6)
    loss, grads = network.loss_and_grads(model.layers, model.params, X, y)
    net = bench.torch_network(model.layers, model.params).double()
    theirs = torch.nn.functional.cross_entropy(net(torch.from_numpy(X)), torch.from_numpy(y))
    theirs.backward()
    assert abs(theirs.item() - loss) < 1e-10
    bn = [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]
    for spec, m in zip([s for s in model.layers if s.param_names][:3], bn, strict=True):
        assert np.allclose(m.weight.grad.numpy(), grads[f"g{spec.n}"], rtol=1e-8, atol=1e-12)
        assert np.allclose(m.bias.grad.numpy(), grads[f"b{spec.n}"], rtol=1e-8, atol=1e-12)
    convs = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    first = ["V1", "W1"] if name == "cnn-bn-3x3" else ["W1"]
    for m, k in zip(convs, first, strict=False):
        assert np.allclose(m.weight.grad.numpy(), grads[k], rtol=1e-8, atol=1e-12)


def test_bench_runs_end_to_end(tmp_path, run_module):
    # its own process: the benchmark starts and stops its own SparkSessions
    out = tmp_path / "bench.json"
    res = run_module(
        "bench.steps", "--models", "linear", "--batches", "8", "--dtypes", "float64",
        "--masters", "local[1]", "--repeat", "1", "--no-torch", "--data", str(SAMPLE),
        "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    (row,) = results["rows"]
    assert results["columns"] == ["matrix", "layers", "local[1]"]
    assert min(row[c]["median"] for c in results["columns"]) > 0
    assert row["gflop"] > 0 and results["gemm_gflops"]["float64"] > 0
    assert "fixed cost" in res.stdout


def test_bench_rejects_bad_arguments(run_main):
    res = run_main(bench.main, "--masters", "spark://x:7077", "--data", str(SAMPLE))
    assert res.returncode == 2 and "expected local[N]" in res.stderr


def test_profile_runs_end_to_end(run_main):
    from bench import profile_cnn

    res = run_main(
        profile_cnn.main, "--batch", "40", "--repeat", "1", "--no-spark", "--data", str(SAMPLE)
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for row in (" 1 conv", " 3 relu+maxpool", "10 linear", "loss", "update", "direct kernels"):
        assert row in res.stdout
    inside = res.stdout.split("direct kernels")[1].splitlines()[2:]
    assert [line.split()[0] for line in inside] == ["1", "4", "7"]  # one row per conv layer
