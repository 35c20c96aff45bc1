import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from transfer.clustering import PAPER_K_CANDIDATES, SpectralClusters, silhouette_scores
from transfer.preprocess import SpectraError


def blobs(n, k, dim=40, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 5, (k, dim))
    labels = rng.integers(0, k, n)
    return centres[labels] + rng.normal(0, spread, (n, dim)), labels


def test_silhouette_matches_scikit_learn():
    X, _ = blobs(300, 3, spread=3.0)
    rng = np.random.default_rng(1)
    labelings = {"a": rng.integers(0, 3, 300), "b": rng.integers(0, 5, 300)}
    ours = silhouette_scores(X, labelings, block_rows=64)
    for name, labels in labelings.items():
        assert ours[name] == pytest.approx(silhouette_score(X, labels), abs=1e-9)


@pytest.mark.parametrize("true_k", [4, 6])
def test_k_chosen_by_silhouette_recovers_separated_clusters(true_k):
    X_train, _ = blobs(600, true_k, seed=0)
    X_val, _ = blobs(300, true_k, seed=1)
    clusters = SpectralClusters(candidates=(3, 4, 5, 6, 8, 10), seed=0).fit(X_train, X_val)
    assert clusters.k_ == true_k
    # maximised, not minimised
    assert clusters.silhouette_scores_[true_k] == max(clusters.silhouette_scores_.values())
    assert clusters.centroids_.shape == (true_k, 40)


def test_predict_is_nearest_centroid_and_state_round_trips():
    X, _ = blobs(400, 4, spread=2.0)
    clusters = SpectralClusters(k=4).fit(X)
    distances = ((X[:, None, :] - clusters.centroids_[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(clusters.predict(X), distances.argmin(axis=1))
    restored = SpectralClusters.from_state(clusters.get_state())
    np.testing.assert_array_equal(restored.predict(X.astype(np.float32)), clusters.predict(X))


def test_silhouette_subset_and_minibatch_paths():
    X_train, _ = blobs(900, 3, seed=2)
    X_val, _ = blobs(500, 3, seed=3)
    clusters = SpectralClusters(candidates=(2, 3, 4), silhouette_spectra=200, max_fit_spectra=800,
                                minibatch_above=500, seed=0).fit(X_train, X_val)
    assert clusters.k_ == 3
    state = clusters.get_state()
    assert list(state["silhouette_k"]) == [2, 3, 4]


def test_clear_errors():
    X, _ = blobs(50, 3)
    with pytest.raises(ValueError, match="validation spectra"):
        SpectralClusters().fit(X)
    clusters = SpectralClusters(k=3).fit(X)
    with pytest.raises(SpectraError, match="expected 40 pixels"):
        clusters.predict(X[:, :39])
    with pytest.raises(RuntimeError, match="not fitted"):
        SpectralClusters().predict(X)
    assert PAPER_K_CANDIDATES == (3, 4, 5, 6, 7, 8, 9, 10, 15, 20)
