"""k-means of primary spectra for the k-score and the live label output.

Fitted on primary *training* spectra in the space the models see (baseline-corrected
and scaled); k is chosen among candidates by the silhouette score of a random subset
of *validation* spectra. The paper (section 4.4.1) says k was chosen to "minimize" the
silhouette score, but a higher silhouette means better separated clusters, so it is
maximised here. Labels are the nearest centroid::

    label = argmin_j ( ||c_j||^2 - 2 x . c_j )

which the ONNX export computes in-graph from ``centroids_`` (a MatMul, an Add and an
ArgMin); ``predict`` uses the same formula.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from transfer.preprocess import check_spectra

log = logging.getLogger(__name__)

PAPER_K_CANDIDATES = (3, 4, 5, 6, 7, 8, 9, 10, 15, 20)


def silhouette_scores(X, labelings: dict, *, block_rows: int = 256) -> dict:
    """Mean silhouette (Euclidean) of X under several labelings at once.

    ``labelings`` maps a name (e.g. k) to int labels [n]. The pairwise distances are
    computed once, block by block, and never held whole (memory O(n * sum k)).
    A labeling with fewer than two clusters present scores -1. Spectra alone in their
    cluster score 0, as in scikit-learn.
    """
    X = check_spectra(X, name="spectra for the silhouette")
    n = X.shape[0]
    onehots, sums = {}, {}
    for name, labels in labelings.items():
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"labeling {name!r}: expected {n} labels, got {labels.shape}")
        _, codes = np.unique(labels, return_inverse=True)
        onehot = np.zeros((n, codes.max() + 1), dtype=X.dtype)
        onehot[np.arange(n), codes] = 1
        onehots[name] = (codes, onehot)
        sums[name] = np.empty((n, onehot.shape[1]))
    # Distances do not change under a shift; centring limits the cancellation in
    # |a|^2 + |b|^2 - 2 a.b when the spectra share a large common part.
    X = X - X.mean(axis=0, dtype=np.float64).astype(X.dtype)
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    for start in range(0, n, block_rows):
        stop = min(start + block_rows, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (X[start:stop] @ X.T)
        d = np.sqrt(np.maximum(d2, 0.0)).astype(X.dtype)
        d[np.arange(stop - start), np.arange(start, stop)] = 0   # exact zero self-distance
        for name, (_, onehot) in onehots.items():
            sums[name][start:stop] = d @ onehot
    scores = {}
    for name, (codes, onehot) in onehots.items():
        sizes = onehot.sum(axis=0)
        if sizes.size < 2:
            scores[name] = -1.0
            continue
        own = sums[name][np.arange(n), codes]
        own_size = sizes[codes]
        a = np.divide(own, own_size - 1, out=np.zeros(n), where=own_size > 1)
        means = sums[name] / sizes
        means[np.arange(n), codes] = np.inf
        b = means.min(axis=1)
        s = np.divide(b - a, np.maximum(a, b), out=np.zeros(n), where=np.maximum(a, b) > 0)
        s[own_size <= 1] = 0.0
        scores[name] = float(s.mean())
    return scores


class SpectralClusters:
    """k-means of primary spectra with k chosen by the validation silhouette.

    Parameters: ``k`` fixes k (no search); otherwise each of ``candidates`` is fitted
    on the training spectra and scored on up to ``silhouette_spectra`` random
    validation spectra (paper: 25,000; the pairwise distances cost
    O(silhouette_spectra^2 * n_pixels)). At most ``max_fit_spectra`` random training
    spectra are used for fitting; above ``minibatch_above`` MiniBatchKMeans replaces
    KMeans.

    Attributes after ``fit``: ``k_``, ``centroids_`` float64 [k, n_pixels],
    ``silhouette_scores_`` {k: score} (empty when k was fixed).
    """

    def __init__(self, k: int | None = None, candidates=PAPER_K_CANDIDATES, *,
                 silhouette_spectra: int = 25_000, max_fit_spectra: int = 200_000,
                 minibatch_above: int = 50_000, seed: int = 0):
        self.k = k
        self.candidates = tuple(candidates)
        self.silhouette_spectra = silhouette_spectra
        self.max_fit_spectra = max_fit_spectra
        self.minibatch_above = minibatch_above
        self.seed = seed

    def _kmeans(self, k: int, X: np.ndarray):
        if X.shape[0] < k:
            raise ValueError(f"k-means with k={k} needs at least {k} spectra, got {X.shape[0]}")
        if X.shape[0] > self.minibatch_above:
            model = MiniBatchKMeans(n_clusters=k, random_state=self.seed, n_init=3,
                                    batch_size=4096)
        else:
            model = KMeans(n_clusters=k, random_state=self.seed, n_init="auto")
        return model.fit(X)

    def fit(self, X_train, X_val=None) -> "SpectralClusters":
        X_train = check_spectra(X_train, name="training spectra for k-means")
        rng = np.random.default_rng(self.seed)
        if X_train.shape[0] > self.max_fit_spectra:
            X_train = X_train[np.sort(rng.choice(X_train.shape[0], self.max_fit_spectra, replace=False))]
        self.silhouette_scores_ = {}
        if self.k is not None:
            chosen = self._kmeans(int(self.k), X_train)
        else:
            if X_val is None:
                raise ValueError("choosing k needs validation spectra (X_val), or give k")
            X_val = check_spectra(X_val, X_train.shape[1], name="validation spectra for k-means")
            if X_val.shape[0] > self.silhouette_spectra:
                X_val = X_val[np.sort(rng.choice(X_val.shape[0], self.silhouette_spectra, replace=False))]
            candidates = [k for k in self.candidates if k <= X_train.shape[0]]
            if not candidates:
                raise ValueError(f"no candidate k in {self.candidates} fits {X_train.shape[0]} spectra")
            models = {k: self._kmeans(k, X_train) for k in candidates}
            labelings = {k: _nearest(X_val, m.cluster_centers_) for k, m in models.items()}
            self.silhouette_scores_ = silhouette_scores(X_val, labelings)
            best = max(candidates, key=lambda k: self.silhouette_scores_[k])
            log.info("k-means: silhouette per k %s -> k=%d",
                     {k: round(v, 4) for k, v in self.silhouette_scores_.items()}, best)
            chosen = models[best]
        self.centroids_ = np.asarray(chosen.cluster_centers_, dtype=np.float64)
        self.k_ = self.centroids_.shape[0]
        return self

    def predict(self, X) -> np.ndarray:
        """Nearest-centroid labels, int64 [n]."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("SpectralClusters is not fitted yet")
        X = check_spectra(X, self.centroids_.shape[1], name="spectra to cluster", allow_1d=True)
        return _nearest(X, self.centroids_)

    def get_state(self) -> dict:
        """{"centroids": float64 [k, n]} plus, when k was searched, "silhouette_k" and
        "silhouette_score" arrays."""
        if not hasattr(self, "centroids_"):
            raise RuntimeError("SpectralClusters is not fitted yet")
        state = {"centroids": self.centroids_.copy()}
        if self.silhouette_scores_:
            ks = sorted(self.silhouette_scores_)
            state["silhouette_k"] = np.array(ks, dtype=np.int64)
            state["silhouette_score"] = np.array([self.silhouette_scores_[k] for k in ks])
        return state

    @classmethod
    def from_state(cls, state: dict) -> "SpectralClusters":
        centroids = np.asarray(state["centroids"], dtype=np.float64)
        if centroids.ndim != 2 or centroids.shape[0] < 1 or not np.all(np.isfinite(centroids)):
            raise ValueError(f"cluster state: centroids must be a finite 2-D array, got {centroids.shape}")
        clusters = cls(k=centroids.shape[0])
        clusters.centroids_, clusters.k_ = centroids, centroids.shape[0]
        ks = np.asarray(state.get("silhouette_k", []), dtype=np.int64)
        scores = np.asarray(state.get("silhouette_score", []), dtype=np.float64)
        clusters.silhouette_scores_ = {int(k): float(s) for k, s in zip(ks, scores)}
        return clusters


def _nearest(X: np.ndarray, centroids: np.ndarray, block_rows: int = 8192) -> np.ndarray:
    centroids = centroids.astype(X.dtype)
    c2 = np.einsum("ij,ij->i", centroids, centroids)
    labels = np.empty(X.shape[0], dtype=np.int64)
    for start in range(0, X.shape[0], block_rows):
        block = X[start:start + block_rows]
        labels[start:start + block_rows] = np.argmin(c2[None, :] - 2.0 * (block @ centroids.T), axis=1)
    return labels
