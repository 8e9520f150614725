"""Batch normalisation in the networks: folding into plain convolutions, population statistics
layer after layer, the matrix classifier's folded model (cnn-bn trained, cnn saved; the
trainer's is in test_train.py)."""

from __future__ import annotations

import numpy as np
import pytest

from matrix.classifier import classifier_class
from util import layer, models, network
from util.numerics import rel_error

BN = models.get("cnn-bn")


def trained_like_params(dtype=np.float64, seed=0) -> network.Params:
    """cnn-bn parameters with non-trivial scales and shifts (as after training)."""
    rng = np.random.default_rng(seed)
    params = network.init_params(BN.layers, (3, 32, 32), 10, seed, dtype)
    for k in params:
        if k[0] in "gb":
            params[k] = (params[k] + 0.5 * rng.standard_normal(params[k].shape)).astype(dtype)
    return params


def test_the_folded_table_is_the_model_it_folds_into():
    """cnn-bn folds into the registry's cnn: the same layers and parameter shapes."""
    params = trained_like_params()
    stats = {n: (np.zeros(f), np.ones(f)) for n, f in ((1, 16), (4, 20), (7, 20))}
    layers, folded = network.fold_batchnorm(BN.layers, params, stats)
    target = models.get(BN.folds_into)
    assert layers == target.layers
    expected = network.init_params(target.layers, (3, 32, 32), 10)
    assert {k: v.shape for k, v in folded.items()} == {k: v.shape for k, v in expected.items()}
    assert set(params) - set(folded) == {"g1", "g4", "g7"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_folded_network_with_the_batchs_statistics_equals_training_mode(dtype, sample64):
    """With the population statistics of exactly the images it is run on, the folded plain
    CNN gives the scores of cnn-bn in training mode (each layer normalised over that batch):
    the fold is exact. That each layer's statistics are taken with the layers before it
    already folded matters: taken through unnormalised layers (a deliberate defect), the
    scores differ."""
    X = sample64[0][:40].astype(dtype)
    params = trained_like_params(dtype)
    scores, _ = network.forward(BN.layers, params, X)
    layers, folded = network.folded(BN.layers, params, X)
    assert not network.has_batchnorm(layers)
    folded_scores = network.forward(layers, folded, X)[0]
    assert folded_scores.dtype == dtype
    assert rel_error(folded_scores, scores) < (1e-4 if dtype == np.float32 else 1e-11)

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
    params = trained_like_params()
    for fn in (network.predict, network.probabilities):
        with pytest.raises(ValueError, match="batch normalisation in training form"):
            fn(BN.layers, params, sample64[0][:4])
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


def test_matrix_classifier_folds_with_its_training_images(tmp_path, sample64):
    """The in-process cnn-bn predicts with the statistics of the images it trained on and
    saves the folded plain CNN, which predicts the same classes."""
    X, y, X_val, _ = sample64
    model = classifier_class("cnn-bn")(dtype=np.float64, seed=2)
    with pytest.raises(ValueError, match="cnn-bn: batch normalisation needs the training images"):
        model.predict(X_val)
    model.train(X[:200], y[:200], 3, batch_size=50)
    model.save(tmp_path / "bn.npz")
    plain = classifier_class("cnn").load(tmp_path / "bn.npz")
    assert set(plain.params) == {"W1", "b1", "W4", "b4", "W7", "b7", "W10", "b10"}
    assert np.array_equal(plain.predict(X_val), model.predict(X_val))
    with pytest.raises(ValueError, match="holds a 'cnn' model, not 'cnn-bn'"):
        classifier_class("cnn-bn").load(tmp_path / "bn.npz")
