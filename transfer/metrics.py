"""Figures of merit of a spectral transfer (Vrábel et al. 2023, eqs 1-6).

All take the true primary spectra and the predicted ones in the same, unscaled units
(baseline-corrected counts), shaped [n_spectra, n_pixels].

- ``euclidean_distance`` (eq 2) and ``cosine_distance`` (eq 3) per spectrum.
  The paper's cosine "distance" is the *negative* cosine similarity: -1 is a perfect
  match in shape, 0 orthogonal, +1 opposite; lower is better. A spectrum with zero norm
  has no direction, and its cosine distance is defined here as 0 (orthogonal).
- ``rse`` (eq 4): squared error relative to that of the naive prediction, the mean
  spectrum of the evaluated set. (The paper prints the denominator with a typo; the
  text defines it as the naive baseline's error, sum_ij (x_ij - mean_j)^2.)
- ``k_score`` (eqs 5-6): the share of spectra whose k-means label is unchanged.
- ``compression_ratio`` (eq 1).
- :class:`TransferMetrics`: the same numbers accumulated chunk by chunk, for maps that
  do not fit in memory; equal to the batch functions on the concatenated data.
"""
from __future__ import annotations

import numpy as np

from transfer.preprocess import SpectraError, check_spectra


def _pair(X_true, X_pred) -> tuple[np.ndarray, np.ndarray]:
    X_true = check_spectra(X_true, name="true spectra", allow_1d=True)
    X_pred = check_spectra(X_pred, X_true.shape[1], name="predicted spectra", allow_1d=True)
    if X_true.shape[0] != X_pred.shape[0]:
        raise SpectraError(f"{X_true.shape[0]} true spectra but {X_pred.shape[0]} predicted ones")
    return X_true.astype(np.float64, copy=False), X_pred.astype(np.float64, copy=False)


def _euclid(X_true: np.ndarray, X_pred: np.ndarray) -> np.ndarray:
    diff = X_true - X_pred
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


def _cosine(X_true: np.ndarray, X_pred: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X_true, axis=1) * np.linalg.norm(X_pred, axis=1)
    out = np.zeros(X_true.shape[0])
    np.divide(-np.einsum("ij,ij->i", X_true, X_pred), norms, out=out, where=norms > 0)
    return np.clip(out, -1.0, 1.0)


def euclidean_distance(X_true, X_pred) -> np.ndarray:
    """Eq 2: ||x_i - x_hat_i||_2 per spectrum, float64 [n_spectra]."""
    return _euclid(*_pair(X_true, X_pred))


def cosine_distance(X_true, X_pred) -> np.ndarray:
    """Eq 3: -(x_i . x_hat_i) / (|x_i| |x_hat_i|) per spectrum, in [-1, 1]; -1 is best."""
    return _cosine(*_pair(X_true, X_pred))


def rse(X_true, X_pred) -> float:
    """Eq 4: sum (x - x_hat)^2 / sum (x - mean spectrum of X_true)^2 (0 perfect, 1 naive)."""
    X_true, X_pred = _pair(X_true, X_pred)
    naive = ((X_true - X_true.mean(axis=0)) ** 2).sum()
    return float(((X_true - X_pred) ** 2).sum() / naive) if naive > 0 else float("nan")


def k_score(labels_true, labels_pred) -> float:
    """Eqs 5-6: fraction of spectra whose cluster label is the same in both."""
    labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
    if labels_true.shape != labels_pred.shape or labels_true.ndim != 1:
        raise ValueError(f"label arrays must be 1-D and equal in length, got "
                         f"{labels_true.shape} and {labels_pred.shape}")
    if labels_true.size == 0:
        raise ValueError("k-score of no spectra")
    return float(np.mean(labels_true == labels_pred))


def compression_ratio(n_spectra: int, n_primary: int, n_latent: int,
                      n_decoder_params: int) -> float:
    """Eq 1: CR = M_X N / (M_L N + P): sharing latent vectors plus the decoder instead
    of primary spectra (N spectra, M_X primary pixels, M_L latent size, P decoder
    parameters)."""
    if min(n_spectra, n_primary, n_latent) <= 0 or n_decoder_params < 0:
        raise ValueError("compression_ratio: sizes must be positive")
    return n_primary * n_spectra / (n_latent * n_spectra + n_decoder_params)


class TransferMetrics:
    """Streaming Euclid / cosine / RSE / k-score over chunks of one evaluated set.

    ``update`` returns the per-spectrum Euclidean and cosine distances of the chunk
    (for error maps); ``result()`` gives the set's means. The RSE denominator needs
    the mean spectrum of the whole set, so per-pixel mean and sum of squared deviations
    are merged chunk by chunk (Chan et al.) instead of storing spectra.
    """

    def __init__(self):
        self.n_spectra = 0
        self._sum_euclid = 0.0
        self._sum_cosine = 0.0
        self._sse = 0.0
        self._mean = None
        self._m2 = None
        self._n_labels = 0
        self._n_same_label = 0

    _block_rows = 1024     # float64 copies are made per block, not per chunk

    def update(self, X_true, X_pred) -> tuple[np.ndarray, np.ndarray]:
        X_true = check_spectra(X_true, name="true spectra", allow_1d=True)
        X_pred = check_spectra(X_pred, X_true.shape[1], name="predicted spectra", allow_1d=True)
        if X_true.shape[0] != X_pred.shape[0]:
            raise SpectraError(f"{X_true.shape[0]} true spectra but {X_pred.shape[0]} predicted ones")
        if self._mean is not None and X_true.shape[1] != self._mean.size:
            raise SpectraError(f"chunk has {X_true.shape[1]} pixels, earlier chunks had {self._mean.size}")
        parts = [self._update_block(X_true[s:s + self._block_rows], X_pred[s:s + self._block_rows])
                 for s in range(0, X_true.shape[0], self._block_rows)]
        if not parts:
            return np.zeros(0), np.zeros(0)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _update_block(self, X_true, X_pred):
        X_true, X_pred = X_true.astype(np.float64), X_pred.astype(np.float64)
        euclid, cosine = _euclid(X_true, X_pred), _cosine(X_true, X_pred)
        k = X_true.shape[0]
        self._sum_euclid += float(euclid.sum())
        self._sum_cosine += float(cosine.sum())
        self._sse += float((euclid ** 2).sum())
        chunk_mean = X_true.mean(axis=0)
        chunk_m2 = ((X_true - chunk_mean) ** 2).sum(axis=0)
        if self._mean is None:
            self._mean, self._m2 = chunk_mean, chunk_m2
        else:
            total = self.n_spectra + k
            delta = chunk_mean - self._mean
            self._mean = self._mean + delta * (k / total)
            self._m2 = self._m2 + chunk_m2 + delta ** 2 * (self.n_spectra * k / total)
        self.n_spectra += k
        return euclid, cosine

    def update_labels(self, labels_true, labels_pred) -> np.ndarray:
        """Add k-means labels of true and predicted spectra; returns the per-spectrum
        mismatch mask."""
        labels_true, labels_pred = np.asarray(labels_true), np.asarray(labels_pred)
        if labels_true.shape != labels_pred.shape or labels_true.ndim != 1:
            raise ValueError(f"label arrays must be 1-D and equal in length, got "
                             f"{labels_true.shape} and {labels_pred.shape}")
        same = labels_true == labels_pred
        self._n_labels += same.size
        self._n_same_label += int(same.sum())
        return ~same

    @property
    def mean_spectrum(self) -> np.ndarray | None:
        return None if self._mean is None else self._mean.copy()

    def result(self) -> dict:
        """{"euclid", "cosine", "rse", "k_score", "n_spectra"}; k_score is None when no
        labels were given."""
        if self.n_spectra == 0:
            raise ValueError("no spectra were added to the metrics")
        naive = float(self._m2.sum())
        return {
            "euclid": self._sum_euclid / self.n_spectra,
            "cosine": self._sum_cosine / self.n_spectra,
            "rse": self._sse / naive if naive > 0 else float("nan"),
            "k_score": self._n_same_label / self._n_labels if self._n_labels else None,
            "n_spectra": self.n_spectra,
        }
