"""Novelty of secondary spectra: how much of a spectrum the training data cannot explain.

The score is the residual of the scaled secondary spectrum outside the leading
principal subspace of the training spectra (the Q statistic, or squared
prediction error, of PCA process monitoring)::

    z  = scaled secondary spectrum (baseline corrected, training statistics)
    r  = (z - mean) - P^T P (z - mean)      P: k orthonormal principal axes [k, n]
    Q  = mean(r ** 2)                       over the n pixels
    novelty = sqrt(Q / Q_ref)               Q_ref: median Q of the training spectra

so a typical training spectrum scores about 1; new emission lines (a phase
absent from training), a shifted wavelength axis or a changed line shape put
signal where the training spectra had only noise and raise it. Why this rather
than a distance in the latent space, with the evidence: docs/novelty.md.

Everything here is numpy (no torch); the ONNX export builds the same formula
into the graph in `transfer.onnx_graph`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.utils.extmath import randomized_svd

from transfer.data import check_axis, inspect_map, sample_preprocessed
from transfer.preprocess import SpectrumPreprocessor, check_spectra

METHOD = "pca-residual"
DEFAULT_COMPONENTS = 16
DEFAULT_MAX_SPOTS = 5000


class NoveltyError(ValueError):
    """Novelty statistics cannot be computed or used; the message says why."""


class NoveltyModel:
    """PCA-residual novelty of scaled secondary spectra (see the module docstring).

    ``NoveltyModel(n_components, seed=...).fit(scaled)`` fits the statistics; fitted, it holds
    ``mean`` (float64 [n]: mean scaled training spectrum), ``components`` (float64 [k, n]:
    orthonormal principal axes), ``reference`` (median Q of the training spectra),
    ``n_spectra`` and ``explained_variance`` (fraction of the training variance inside the
    subspace).
    """

    def __init__(self, n_components: int = DEFAULT_COMPONENTS, *, seed: int = 0):
        self.n_components_requested = n_components
        self.seed = seed

    @property
    def n_pixels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    def fit(self, scaled) -> "NoveltyModel":
        """Statistics of scaled training spectra [n_spectra, n_pixels]."""
        n_components = self.n_components_requested
        X = check_spectra(scaled, name="scaled training spectra for novelty").astype(np.float64)
        n, n_pixels = X.shape
        if int(n_components) != n_components or n_components < 1:
            raise NoveltyError(f"novelty components must be a positive integer, got {n_components!r}")
        if n < n_components + 2:
            raise NoveltyError(f"novelty with {n_components} principal components needs at least "
                               f"{n_components + 2} training spectra, got {n}")
        mean = X.mean(axis=0)
        centred = X - mean
        _, singular, axes = randomized_svd(centred, int(n_components), n_iter=7, random_state=self.seed)
        total = float(np.sum(centred * centred))
        explained = float(np.sum(singular ** 2) / total) if total > 0 else 1.0
        q = _residual(centred, axes)
        reference = float(np.median(q))
        if not reference > 0:
            raise NoveltyError("the training spectra lie entirely in the principal subspace: "
                               "use fewer novelty components")
        self.mean, self.components, self.reference = mean, axes, reference
        self.n_spectra, self.explained_variance = int(n), explained
        return self

    def residual(self, scaled) -> np.ndarray:
        """Q per spectrum: mean squared residual outside the principal subspace (float64)."""
        X = check_spectra(scaled, self.n_pixels, name="scaled spectra for novelty", allow_1d=True)
        return _residual(X.astype(np.float64) - self.mean, self.components)

    def score(self, scaled) -> np.ndarray:
        """The novelty score, float32 [n_spectra]; about 1 for typical training spectra."""
        return np.sqrt(self.residual(scaled) / self.reference).astype(np.float32)

    def describe(self) -> dict:
        """What the exported model's provenance says about its novelty output."""
        return {"method": METHOD, "components": self.n_components, "n_spectra": self.n_spectra,
                "reference_q": self.reference, "explained_variance": round(self.explained_variance, 6),
                "definition": "sqrt(Q / reference_q); Q = mean squared residual of the scaled secondary "
                              "spectrum outside the training spectra's leading principal components"}

    def get_state(self) -> dict:
        return {"method": METHOD, "mean": self.mean.copy(), "components": self.components.copy(),
                "reference": self.reference, "n_spectra": self.n_spectra,
                "explained_variance": self.explained_variance}

    @classmethod
    def from_state(cls, state: dict) -> "NoveltyModel":
        if state.get("method") != METHOD:
            raise NoveltyError(f"novelty state of method {state.get('method')!r}, expected {METHOD!r}")
        mean = np.asarray(state["mean"], dtype=np.float64)
        components = np.asarray(state["components"], dtype=np.float64)
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0]:
            raise NoveltyError(f"novelty state: mean {mean.shape} and components {components.shape} do not fit")
        model = cls(components.shape[0])
        model.mean, model.components, model.reference = mean, components, float(state["reference"])
        model.n_spectra, model.explained_variance = int(state["n_spectra"]), float(state["explained_variance"])
        return model


def _residual(centred: np.ndarray, axes: np.ndarray) -> np.ndarray:
    residual = centred - (centred @ axes.T) @ axes
    return np.mean(residual * residual, axis=1)


def fit_from_maps(paths: Sequence[str | Path], preprocess: SpectrumPreprocessor, *,
                  n_components: int = DEFAULT_COMPONENTS, max_spots: int = DEFAULT_MAX_SPOTS,
                  seed: int = 0, chunk_spots: int = 4096, progress: bool = True) -> NoveltyModel:
    """Novelty statistics of a seeded random sample of the secondary spectra of `paths`,
    scaled with the model's own (training) preprocessing."""
    for path in paths:
        check_axis(path, "secondary", inspect_map(path, ["secondary"]).wavelengths["secondary"],
                   preprocess.wavelengths)
    sample = sample_preprocessed(list(paths), {"secondary": preprocess}, max_spots, seed, chunk_spots, progress)
    return NoveltyModel(n_components, seed=seed).fit(sample["secondary"])
