"""The matrix classifiers: full-loss gradient checks, training on real images, persistence, CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest

from matrix.classifier import classifier_class, load_params
from util import models, network, optim
from util.numerics import rel_error

SMALL = {
    "linear": (3, 5, 4),
    "nn": (3, 4, 5),
    "cnn": (3, 8, 8),
    "cnn-wide": (3, 8, 8),
    "cnn-bn": (3, 8, 8),
    "cnn-bn-3x3": (3, 8, 8),
}


def full_loss(model, X, y):
    """Regularised mean loss and its gradients, as one training step sees them."""
    loss, grads = network.loss_and_grads(model.layers, model.params, X, y)
    loss = optim.regularise(loss, grads, model.params, model.sgd.weight_decay)
    return loss, grads


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_full_loss_gradient(name):
    """Central differences on sampled entries of every parameter; relative error < 1e-7."""
    rng = np.random.default_rng(7)
    in_shape = SMALL[name]
    X = rng.standard_normal((3, *in_shape))
    y = rng.integers(0, 4, 3)
    model = classifier_class(name)(num_classes=4, in_shape=in_shape, dtype=np.float64, seed=1)
    model.sgd.weight_decay = 0.1  # make the regularisation term matter
    for k in model.params:  # non-zero biases exercise their gradients fully
        model.params[k] = model.params[k] + 0.1 * rng.standard_normal(model.params[k].shape)
    _, grads = full_loss(model, X, y)
    h = 1e-5
    for k, p in model.params.items():
        flat = p.reshape(-1)
        idx = rng.choice(flat.size, size=min(12, flat.size), replace=False)
        numeric = np.empty(len(idx))
        for j, i in enumerate(idx):
            old = flat[i]
            flat[i] = old + h
            fp = full_loss(model, X, y)[0]
            flat[i] = old - h
            fm = full_loss(model, X, y)[0]
            flat[i] = old
            numeric[j] = (fp - fm) / (2 * h)
        err = rel_error(numeric, grads[k].reshape(-1)[idx])
        assert err < 1e-7, f"{name}: {k} relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_relu_and_maxpool_give_the_same_results(dtype):
    """loss_and_grads runs each ReLU and the max-pool after it as one layer: scores and
    every gradient equal the table's order (up to the sign of zeros), on inputs with windows
    of only negative values; moving a ReLU before a conv instead would differ."""
    layers = models.get("cnn").layers
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 3, 32, 32)).astype(dtype)
    dscores = rng.standard_normal((6, 10)).astype(dtype)
    params = network.init_params(layers, (3, 32, 32), 10, seed=2, dtype=dtype)

    def run(order):
        scores, caches = network.forward(order, params, X)
        return scores, network.backward(order, dscores, caches)

    order = network.fused(layers)
    assert [s.kind for s in order][:3] == ["conv", "relu+maxpool", "conv"] and len(order) == 7
    table, fused = run(layers), run(order)
    np.testing.assert_array_equal(fused[0], table[0])
    for k, g in table[1].items():
        np.testing.assert_array_equal(fused[1][k], g)
    wrong = run([layers[1], layers[0], *layers[2:]])  # ReLU before the first conv
    assert not np.array_equal(wrong[0], table[0])


@pytest.mark.parametrize("name", ["linear", "nn"])
def test_training_lowers_the_loss(name, sample32):
    X, y, _, _ = sample32
    model = classifier_class(name)(seed=0)
    history = model.train(X[:1000], y[:1000], 5)
    losses = [r.loss for r in history]
    assert losses[-1] < 0.9 * losses[0], losses


def test_cnn_learns_better_than_chance(sample32):
    """A short mini-batch run on the 2000 sample images beats chance (10%) clearly."""
    X, y, Xv, yv = sample32
    model = classifier_class("cnn")(seed=0)
    history = model.train(X, y, 60, batch_size=100, seed=0)
    first = np.mean([r.loss for r in history[:5]])
    last = np.mean([r.loss for r in history[-5:]])
    assert last < first
    acc = model.validate(Xv, yv)
    assert acc > 0.25, f"validation accuracy {acc:.2%}"


def test_float32_training_stays_float32(sample32):
    X, y, _, _ = sample32
    model = classifier_class("cnn")(seed=0)
    model.train(X[:20], y[:20], 1)
    assert {p.dtype for p in model.params.values()} == {np.dtype(np.float32)}


def test_verbose_reports_per_layer_times(sample32):
    X, y, _, _ = sample32
    model = classifier_class("cnn")(seed=0, verbose=True)
    (report,) = model.train(X[:150], y[:150], 1)  # 3 sub-batches, on 2 threads if BLAS has 2
    names = list(report.layer_seconds)
    assert names[0] == " 1 conv forward" and names[-1] == " 1 conv backward"
    assert names[7] == "loss" and len(names) == 15  # (ReLU and max-pool fused: 7 layers)
    assert " 3 relu+maxpool forward" in names
    assert all(s >= 0 for s in report.layer_seconds.values())


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_divergence_is_reported(sample32):
    X, y, _, _ = sample32
    model = classifier_class("nn")(seed=0)
    model.params["W1"] = model.params["W1"] * np.float32(np.inf)
    with pytest.raises(FloatingPointError, match="iteration 1.*learning rate"):
        model.train(X[:10], y[:10], 1)


def test_save_load_roundtrip(tmp_path, sample32):
    X, y, Xv, yv = sample32
    model = classifier_class("nn")(seed=3)
    model.train(X[:200], y[:200], 2)
    model.metadata = {"normalizer": {"mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}}
    path = tmp_path / "nn.npz"
    model.save(path)
    loaded = classifier_class("nn").load(path)
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    assert loaded.metadata["normalizer"]["mean"] == [0.1, 0.2, 0.3]
    assert loaded.validate(Xv, yv) == model.validate(Xv, yv)


def test_load_rejects_wrong_files(tmp_path):
    classifier_class("linear")(seed=0).save(tmp_path / "linear.npz")
    with pytest.raises(ValueError, match="holds a 'linear' model, not 'cnn'"):
        classifier_class("cnn").load(tmp_path / "linear.npz")
    params, meta = load_params(tmp_path / "linear.npz")
    np.savez(
        tmp_path / "bad.npz",
        meta=np.array('{"model": "linear", "num_classes": 10}'),
        **{"param/W1": params["W1"][:5], "param/b1": params["b1"]},
    )
    with pytest.raises(ValueError, match=r"W1 has shape \(5, 10\), expected \(3072, 10\)"):
        classifier_class("linear").load(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz: not a model file") as e:
        classifier_class("linear").load(tmp_path / "junk.npz")
    assert "not an .npz archive" in str(e.value) and "pickle" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        classifier_class("linear").load(tmp_path / "missing.npz")


@pytest.fixture
def run_cli(run_main):
    """`python -m matrix ARGS`, in this process."""
    from matrix.__main__ import main

    return lambda *args: run_main(main, *args)


def test_cli_prints_one_line_per_iteration(run_cli):
    out = run_cli("linear", "--iters", "3")
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("iter")]
    assert len(lines) == 3 and "val acc" in lines[0]
    assert "final validation accuracy" in out.stdout


def test_cli_bad_data_path_is_one_clear_line(tmp_path, run_cli):
    out = run_cli("linear", "--data", str(tmp_path / "nowhere"))
    assert out.returncode == 2
    assert "nowhere" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(
    not models.get("cnn").pretrained_path.is_file(), reason="no shipped pre-trained CNN"
)
def test_cli_cnn_validates_the_shipped_pretrained_model(run_cli, accuracy_line):
    """`make matrix-cnn` loads data/cnn-pretrained.npz and reports its accuracy on the
    sample's 500 test images (which its training never saw); --from-scratch trains."""
    out = run_cli("cnn")
    assert out.returncode == 0, out.stderr
    assert "cnn-pretrained.npz" in out.stdout and "iter" not in out.stdout
    assert accuracy_line(out.stdout) >= 0.77
    tta = re.search(r"(\d+\.\d+)% with test-time augmentation", out.stdout)
    assert tta and float(tta.group(1)) / 100 > accuracy_line(out.stdout), out.stdout
    out = run_cli("cnn", "--from-scratch", "--iters", "1")
    assert out.returncode == 0, out.stderr
    assert "iter    1" in out.stdout and "cnn-pretrained" not in out.stdout


def test_cli_model_file_errors_are_one_clear_line(tmp_path, run_cli):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    out = run_cli("cnn", "--model-file", str(tmp_path / "junk.npz"))
    assert out.returncode == 2 and "junk.npz: not a model file" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli("linear", "--iters", "1", "--save", str(tmp_path / "linear.npz"))
    assert out.returncode == 0, out.stderr
    out = run_cli("cnn", "--model-file", str(tmp_path / "linear.npz"))
    assert out.returncode == 2 and "holds a 'linear' model, not 'cnn'" in out.stderr
    out = run_cli("cnn", "--model-file", str(tmp_path / "linear.npz"), "--from-scratch")
    assert out.returncode == 2 and "exclude each other" in out.stderr
