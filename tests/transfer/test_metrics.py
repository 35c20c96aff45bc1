import numpy as np
import pytest

from transfer.metrics import (TransferMetrics, compression_ratio, cosine_distance, euclidean_distance,
                              k_score, rse)
from transfer.preprocess import SpectraError


def test_euclidean_hand_case():
    np.testing.assert_allclose(euclidean_distance([[3.0, 4.0], [1.0, 1.0]], [[0.0, 0.0], [1.0, 1.0]]), [5.0, 0.0])


def test_cosine_sign_convention():
    x = np.array([[1.0, 2.0, 3.0]] * 4)
    pred = np.array([[2.0, 4.0, 6.0],          # same direction   -> -1 (best)
                     [-1.0, -2.0, -3.0],       # opposite         -> +1
                     [2.0, -1.0, 0.0],         # orthogonal       -> 0
                     [0.0, 0.0, 0.0]])         # no direction     -> 0 by definition
    np.testing.assert_allclose(cosine_distance(x, pred), [-1.0, 1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(cosine_distance([[1.0, 0.0]], [[1.0, 1.0]]), [-np.sqrt(0.5)])


def test_rse_hand_cases():
    X = np.array([[0.0, 2.0], [2.0, 4.0]])          # mean spectrum [1, 3]; naive SSE = 4
    assert rse(X, X) == 0.0
    assert rse(X, np.array([[1.0, 3.0], [1.0, 3.0]])) == pytest.approx(1.0)
    assert rse(X, X + np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.25)


def test_k_score_and_compression_ratio():
    assert k_score([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    # eq 1: CR = M_X N / (M_L N + P)
    assert compression_ratio(10, 100, 4, 60) == pytest.approx(10.0)
    paper_like = compression_ratio(250_000, 4062, 64, 64 * 512 + 512 + 512 * 1024 + 1024 + 1024 * 4062 + 4062)
    assert 40 < paper_like < 60          # the paper: "about 50 times"
    with pytest.raises(ValueError):
        k_score([0, 1], [0])


def test_streaming_equals_batch():
    rng = np.random.default_rng(0)
    X = rng.normal(100, 20, (300, 40)).astype(np.float32)
    P = X + rng.normal(0, 5, X.shape).astype(np.float32)
    lt, lp = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    acc = TransferMetrics()
    euclid_parts = []
    for rows in np.array_split(np.arange(300), [1, 2, 100, 250]):
        e, c = acc.update(X[rows], P[rows])
        acc.update_labels(lt[rows], lp[rows])
        euclid_parts.append(e)
    result = acc.result()
    assert result["n_spectra"] == 300
    assert result["euclid"] == pytest.approx(euclidean_distance(X, P).mean(), rel=1e-12)
    assert result["cosine"] == pytest.approx(cosine_distance(X, P).mean(), rel=1e-12)
    assert result["rse"] == pytest.approx(rse(X, P), rel=1e-9)
    assert result["k_score"] == pytest.approx(k_score(lt, lp))
    np.testing.assert_allclose(np.concatenate(euclid_parts), euclidean_distance(X, P))
    np.testing.assert_allclose(acc.mean_spectrum, X.astype(np.float64).mean(0), rtol=1e-12)


def test_metric_errors():
    with pytest.raises(SpectraError, match="expected 3 pixels"):
        euclidean_distance(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(SpectraError, match="2 true spectra but 3 predicted"):
        rse(np.ones((2, 3)), np.ones((3, 3)))
    with pytest.raises(SpectraError, match="NaN"):
        cosine_distance(np.ones((2, 3)), np.full((2, 3), np.nan))
    acc = TransferMetrics()
    acc.update(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(SpectraError, match="earlier chunks had 3"):
        acc.update(np.ones((2, 4)), np.ones((2, 4)))
    assert TransferMetrics().update(np.ones((1, 2)), np.ones((1, 2)))[0][0] == 0
    with pytest.raises(ValueError, match="no spectra"):
        TransferMetrics().result()
