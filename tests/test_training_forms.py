"""The networks' training forms (`network.Conv`): batch normalisation (folding into plain
convolutions, population statistics layer after layer) and factored convolutions (collapsing
exactly); the matrix classifier's plain model (cnn-bn and cnn-bn-3x3 trained, cnn saved; the
trainer's is in test_train.py)."""

from __future__ import annotations

import numpy as np
import pytest

from matrix.classifier import classifier_class
from util import layer, models, network
from util.numerics import rel_error

BN = models.get("cnn-bn")
BN3 = models.get("cnn-bn-3x3")


def trained_like_params(dtype=np.float64, seed=0, model=BN) -> network.Params:
    """Parameters of a batch-normalised model with non-trivial scales and shifts (as after
    training)."""
    rng = np.random.default_rng(seed)
    params = network.init_params(model.layers, (3, 32, 32), 10, seed, dtype)
    for k in params:
        if k[0] in "gb":
            params[k] = (params[k] + 0.5 * rng.standard_normal(params[k].shape)).astype(dtype)
    return params


@pytest.mark.parametrize("model", [BN, BN3], ids=lambda m: m.name)
def test_the_plain_table_is_the_model_it_folds_into(model):
    """cnn-bn and cnn-bn-3x3 collapse and fold into the registry's cnn: the same layers and
    parameter shapes."""
    params = trained_like_params(model=model)
    stats = {n: (np.zeros(f), np.ones(f)) for n, f in ((1, 16), (4, 20), (7, 20))}
    layers, folded = network.fold_batchnorm(*network.collapse(model.layers, params), stats)
    target = models.get(model.folds_into)
    assert layers == target.layers
    expected = network.init_params(target.layers, (3, 32, 32), 10)
    assert {k: v.shape for k, v in folded.items()} == {k: v.shape for k, v in expected.items()}
    extra = {"g1", "g4", "g7"} | ({"V1", "V4", "V7"} if model is BN3 else set())
    assert set(params) - set(folded) == extra


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_collapsed_network_with_the_batchs_statistics_equals_training_mode(dtype, sample64):
    """cnn-bn-3x3 made plain (factors collapsed, batch normalisation folded with the population
    statistics of exactly the images it is run on) gives the scores of its training form."""
    X = sample64[0][:40].astype(dtype)
    params = trained_like_params(dtype, model=BN3)
    scores, layers = training_and_folded_scores_agree(BN3, params, X)
    assert not network.is_training_form(layers)


def training_and_folded_scores_agree(model, params, X):
    """Asserts that `model` in training mode and `network.folded` with the statistics of X
    score X alike; returns (the training-mode scores, the folded layers)."""
    scores, _ = network.forward(model.layers, params, X)
    layers, folded = network.folded(model.layers, params, X)
    folded_scores = network.forward(layers, folded, X)[0]
    assert folded_scores.dtype == X.dtype
    assert rel_error(folded_scores, scores) < (1e-4 if X.dtype == np.float32 else 1e-11)
    return scores, layers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_factored_conv_collapses_exactly(dtype, sample64):
    """A factored 5x5 conv (a 3x3 conv padded by 2, then a 3x3 conv unpadded) is one 5x5 conv
    padded by 2, border included. A collapse that composes the factors' offsets wrongly (the
    second factor's kernel not flipped into place, a deliberate defect) is caught."""
    rng = np.random.default_rng(5)
    spec = network.Conv(1, filters=6, size=5, pad=2, factored=True)
    X = sample64[0][:5].astype(dtype)
    params = network.init_params((spec,), X.shape[1:], 6, dtype=dtype)
    params["b1"] = rng.standard_normal(6).astype(dtype)
    out, _ = spec.forward(X, params)
    assert out.shape == (5, 6, 32, 32) and out.dtype == dtype
    (plain,), collapsed = network.collapse((spec,), params)
    assert plain == network.Conv(1, filters=6, size=5, pad=2)
    assert collapsed["W1"].shape == (6, 3, 5, 5) and collapsed["W1"].dtype == dtype
    assert set(collapsed) == {"W1", "b1"}
    assert rel_error(plain.forward(X, collapsed)[0], out) < (1e-5 if dtype == np.float32 else 1e-12)
    assert "V1" in params  # the argument is not modified

    wrong = dict(collapsed)
    W, V = params["W1"].astype(np.float64), params["V1"].astype(np.float64)
    K = np.zeros((6, 3, 5, 5))
    for i in range(3):
        for j in range(3):
            K[:, :, i : i + 3, j : j + 3] += np.einsum("fm,mcuv->fcuv", W[:, :, 2 - i, 2 - j], V)
    wrong["W1"] = K.astype(dtype)
    assert rel_error(plain.forward(X, wrong)[0], out) > 1e-2


def test_factored_needs_stride_1_and_a_kernel_of_at_least_4():
    with pytest.raises(ValueError, match="Conv 4: factored needs stride 1 and size >= 4"):
        network.Conv(4, filters=8, size=5, stride=2, factored=True)
    with pytest.raises(ValueError, match="got stride 1, size 3"):
        network.Conv(4, filters=8, size=3, factored=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_network_with_the_batchs_statistics_equals_training_mode(dtype, sample64):
    """With the population statistics of exactly the images it is run on, the folded plain
    CNN gives the scores of cnn-bn in training mode (each layer normalised over that batch):
    the fold is exact. That each layer's statistics are taken with the layers before it
    already folded matters: taken through unnormalised layers (a deliberate defect), the
    scores differ."""
    X = sample64[0][:40].astype(dtype)
    params = trained_like_params(dtype)
    scores, layers = training_and_folded_scores_agree(BN, params, X)
    assert not network.has_batchnorm(layers)

    def unnormalised_prefix(lays, p, i):  # the defect: ignores the statistics found so far
        unit = {s.n: (np.zeros(s.filters), np.ones(s.filters)) for s in BN.layers[:i]
                if network.has_batchnorm([s])}  # fmt: skip
        prefix, pp = network.fold_batchnorm(BN.layers[:i], params, unit)
        return network.conv_moments((*prefix, *BN.layers[i:]), pp, i, X)

    stats = network.batchnorm_statistics(BN.layers, params, unnormalised_prefix)
    wrong = network.fold_batchnorm(BN.layers, params, stats)
    assert rel_error(network.forward(*wrong, X)[0], scores) > 1e-3


def test_statistics_added_over_pieces_equal_those_of_the_whole(sample64):
    """batchnorm_statistics adds (sum, sum of squares, count) over pieces of the data, as the
    trainer adds them over partitions: the same statistics as the whole in one piece."""
    X = sample64[0][:60]
    params = trained_like_params()

    def whole(lays, p, i):
        return network.conv_moments(lays, p, i, X)

    def pieces(lays, p, i):
        parts = [network.conv_moments(lays, p, i, X[a : a + 13]) for a in range(0, 60, 13)]
        return tuple(sum(part[j] for part in parts) for j in range(3))

    a = network.batchnorm_statistics(BN.layers, params, whole)
    b = network.batchnorm_statistics(BN.layers, params, pieces)
    assert sorted(a) == [1, 4, 7]
    for n in a:
        assert rel_error(a[n][0], b[n][0]) < 1e-10 and rel_error(a[n][1], b[n][1]) < 1e-10
        assert np.all(a[n][1] > 0)


def test_inference_functions_refuse_the_training_form(sample64):
    for model in (BN, BN3, models.get("cnn")):
        for fn in (network.predict, network.probabilities):
            params = network.init_params(model.layers, (3, 32, 32), 10)
            if model.folds_into is None:  # the plain network: accepted
                assert len(fn(model.layers, params, sample64[0][:4])) == 4
                continue
            with pytest.raises(ValueError, match="the layer table is in training form"):
                fn(model.layers, params, sample64[0][:4])
    params = trained_like_params()
    with pytest.raises(ValueError, match="no statistics for layer 4"):
        network.fold_batchnorm(BN.layers, params, {1: (np.zeros(16), np.ones(16))})


def test_a_batch_normalised_network_runs_the_batch_in_one_piece(sample64):
    """Sub-batches would normalise each with its own statistics: loss_and_grads runs the
    batch whole whatever sub_batch says, so the result is the whole batch's."""
    X, y = sample64[0][:24], sample64[1][:24]
    params = trained_like_params()
    whole = network.loss_and_grads(BN.layers, params, X, y)
    split = network.loss_and_grads(BN.layers, params, X, y, sub_batch=5)
    assert whole[0] == split[0]
    assert all(np.array_equal(whole[1][k], split[1][k]) for k in whole[1])
    # the same split of a network without batch normalisation does run in pieces (differs in
    # the last digits), so the comparison above could fail
    plain = models.get("cnn").layers
    p = network.init_params(plain, (3, 32, 32), 10)
    a = network.loss_and_grads(plain, p, X, y)[1]["W1"]
    b = network.loss_and_grads(plain, p, X, y, sub_batch=5)[1]["W1"]
    assert not np.array_equal(a, b) and rel_error(a, b) < 1e-10


def test_batchnorm_layer_after_folding_is_the_affine_map(sample64):
    """One conv+bn layer alone: the folded conv gives g * (z - mean) / sqrt(var + eps) + b."""
    X = sample64[0][:8]
    conv = BN.layers[0]
    params = trained_like_params()
    out, _ = conv.forward(X, params)
    layers, folded = network.folded((conv,), params, X)
    z, _ = layer.conv_forward(X, params["W1"], np.zeros(16), 1, 2)
    mean, var = z.mean(axis=(0, 2, 3)), z.var(axis=(0, 2, 3))
    s = params["g1"] / np.sqrt(var + layer.BATCHNORM_EPS)
    expected = (z - mean[:, None, None]) * s[:, None, None] + params["b1"][:, None, None]
    assert rel_error(layers[0].forward(X, folded)[0], expected) < 1e-12
    assert rel_error(out, expected) < 1e-12


@pytest.mark.parametrize("name", ["cnn-bn", "cnn-bn-3x3"])
def test_matrix_classifier_folds_with_its_training_images(name, tmp_path, sample64):
    """The in-process cnn-bn (and cnn-bn-3x3) predicts with the statistics of the images it
    trained on and saves the plain CNN, which predicts the same classes."""
    X, y, X_val, _ = sample64
    model = classifier_class(name)(dtype=np.float64, seed=2)
    with pytest.raises(ValueError, match=f"{name}: batch normalisation needs the training images"):
        model.predict(X_val)
    model.train(X[:200], y[:200], 3, batch_size=50)
    model.save(tmp_path / "bn.npz")
    plain = classifier_class("cnn").load(tmp_path / "bn.npz")
    assert set(plain.params) == {"W1", "b1", "W4", "b4", "W7", "b7", "W10", "b10"}
    assert np.array_equal(plain.predict(X_val), model.predict(X_val))
    with pytest.raises(ValueError, match=f"holds a 'cnn' model, not '{name}'"):
        classifier_class(name).load(tmp_path / "bn.npz")
