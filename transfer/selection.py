"""Hyper-parameters chosen on a validation map, through scikit-learn.

`choose_on_validation` runs `GridSearchCV` with a `PredefinedSplit` (fit on the
training spectra, score on the validation spectra, once per candidate), scored by
the RSE in baseline-corrected counts of the validation primary spectra, and returns
the best candidate fitted on the training spectra with its validation RSE.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from sklearn.base import clone
from sklearn.metrics import make_scorer
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from transfer.metrics import rse

#: the transfer models `libs-transfer export` writes as live graphs (the others need torch or a
#: neighbour search at run time)
EXPORTABLE = ("vae_mlp", "ds", "pls")

log = logging.getLogger(__name__)

Unscale = Callable[[np.ndarray], np.ndarray]

#: baseline -> (its parameter, the `[baselines]` key listing the candidates chosen on validation)
VALIDATION_GRIDS = {"ds": ("alpha", "ridge_alpha_candidates"), "pds": ("alpha", "ridge_alpha_candidates"),
                    "pls": ("n_components", "pls_components_candidates")}


def validation_grid(name: str, baselines: Mapping) -> dict[str, list]:
    """The candidates a baseline's parameter is chosen from on validation ({} : none, use its setting)."""
    if name not in VALIDATION_GRIDS:
        return {}
    parameter, key = VALIDATION_GRIDS[name]
    candidates = list(baselines.get(key) or [])
    cast = int if parameter == "n_components" else float
    return {parameter: [cast(v) for v in candidates]} if candidates else {}


def rse_scorer(unscale: Unscale | None = None):
    """A scikit-learn scorer: minus the RSE, optionally after `unscale` (e.g. the primary
    preprocessor's inverse_transform, so that the RSE is in counts as reported)."""
    def score(y_true, y_pred):
        if unscale is not None:
            y_true, y_pred = unscale(y_true), unscale(y_pred)
        return rse(y_true, y_pred)
    return make_scorer(score, greater_is_better=False)


@dataclass
class Choice:
    estimator: object             # the best candidate, fitted on the training spectra
    params: dict                  # its parameters out of the grid
    validation_rse: float         # its RSE on the validation spectra
    table: list[dict]             # every candidate: params and validation RSE


def choose_on_validation(estimator, grid: Mapping[str, Sequence], train: tuple[np.ndarray, np.ndarray],
                         val: tuple[np.ndarray, np.ndarray], *, unscale: Unscale | None = None) -> Choice:
    """The candidate of `grid` with the lowest validation RSE, refitted on `train` only."""
    (xs, xp), (vs, vp) = train, val
    X, Y = np.concatenate([xs, vs]), np.concatenate([xp, vp])
    fold = np.concatenate([np.full(len(xs), -1), np.zeros(len(vs), dtype=int)])
    search = GridSearchCV(clone(estimator), {k: list(v) for k, v in grid.items()}, cv=PredefinedSplit(fold),
                          scoring=rse_scorer(unscale), refit=False, error_score="raise", n_jobs=1)
    search.fit(X, Y)
    results = search.cv_results_
    table = [{"params": dict(p), "validation_rse": float(-s)}
             for p, s in zip(results["params"], results["mean_test_score"])]
    for row in table:
        log.info("%s %s: validation RSE %.4f", type(estimator).__name__, row["params"], row["validation_rse"])
    best = dict(search.best_params_)
    fitted = clone(estimator).set_params(**best).fit(xs, xp)
    return Choice(fitted, best, float(-search.best_score_), table)
