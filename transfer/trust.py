"""Trust score: the expected relative transfer error of one spectrum.

The novelty output (`transfer.novelty`) ranks spectra by how far their scaled
input lies from the training data; under global scaling that residual grows
with the brightness of the spectrum, and so does the absolute transfer error,
but not the relative one (docs/novelty.md). The trust score answers the
operator's question instead: *how wrong, relative to the spectrum itself, is
this transfer likely to be?*

It asks a second, cheap model the same question and measures how much the two
answers differ. The second model is a ridge regression of the training pairs
kept to its ``k`` leading output directions (reduced rank: two thin matrices);
where the transfer model extrapolates — another day, another phase — the two
extrapolate differently and their disagreement grows with the error. From the
baseline-corrected secondary counts ``c`` [n_secondary] and the model's own
predicted primary counts ``p`` [n_primary]::

    q            = (c - m_c) A B + m_p                 A [n_secondary, k], B [k, n_primary]
    disagreement = min(||p - q|| / max(||p||, eps), 10)
    feature      = log(disagreement + 1e-6)

(the cap keeps an empty spectrum finite). On the robustness suite's test maps —
another day and region than training and calibration — this feature ranks the
relative error better than the intensity and input-shape features it replaced
(bench/trust_candidates.py; docs/novelty.md, "Choosing the features").

A linear head, fitted on held-out paired spectra (the validation map, or any
map given to `calibrate`), maps it to a score, the predicted log relative
error::

    score = w . [feature] + b
    rel   = ||p - primary|| / ||primary||               (primary: measured, baseline corrected)

and a monotone piecewise-linear calibration, fitted on the same held-out
spectra (isotonic regression of the relative error on the score, then the
mean of each score decile), turns the score into the number published live::

    s'                 = clip(score, knots[0], knots[-1])
    expected_rel_error = interp(s', knots, values) * exp(score - s')

(beyond the held-out range the head's own meaning, a log relative error, carries on).

`threshold` is the default "do not trust" level of expected_rel_error,
published with the model (`to_metadata`). Everything here is numpy; the ONNX
export appends the same formula to any pipeline graph through
`transfer.onnx_graph.trust_outputs` from the plain arrays of `to_onnx_parts`.
A state of the earlier method (``shape-residual-head``) is refused with
`OutdatedTrust`; bundles load without it and `libs-transfer calibrate` refits it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.utils.extmath import randomized_svd

from transfer.day_change import day_changed
from transfer.preprocess import check_spectra

METHOD = "disagreement-head"
#: methods of earlier releases: their states are refused with the fix named (OutdatedTrust)
OUTDATED_METHODS = ("shape-residual-head",)
FEATURES = ("log_disagreement",)
#: the rank of the second model
DEFAULT_COMPONENTS = 16
#: the second model's ridge, relative to the mean squared norm of the centred training spectra
SECOND_MODEL_RIDGE = 1e-2
#: the disagreement's cap: keeps an empty or all-but-empty spectrum's score finite
DISAGREEMENT_CAP = 10.0
#: knots of the calibration: score deciles of the held-out spectra
CALIBRATION_BINS = 10
#: the least relative rise from one calibration knot to the next
CALIBRATION_STEP = 1e-3
#: the default "do not trust" threshold: this multiple of the held-out median relative error
THRESHOLD_FACTOR = 2.0
#: the regulariser of the head's least squares (features are O(1) logs)
HEAD_RIDGE = 1e-3
NORM_FLOOR = 1e-6
#: keys of the ONNX metadata_props and the bundle record (docs/novelty.md)
META_KEYS = {"threshold": "twinplume.trust_threshold", "calibration": "twinplume.trust_calibration",
             "output": "twinplume.trust_output"}
OUTPUT = "expected_rel_error"
REFIT_HINT = ("refit it with `libs-transfer calibrate MODEL HELD_OUT.h5` (it needs the training map named in "
              "the bundle's provenance) or retrain the model")


class TrustError(ValueError):
    """Trust statistics cannot be fitted or used; the message says why."""


class OutdatedTrust(TrustError):
    """A trust state of an earlier method: the message names the fix."""


def relative_error(predicted, measured) -> np.ndarray:
    """||predicted - measured|| / ||measured|| per spectrum (float64)."""
    predicted = np.asarray(predicted, np.float64)
    measured = np.asarray(measured, np.float64)
    return np.linalg.norm(predicted - measured, axis=1) / np.maximum(np.linalg.norm(measured, axis=1), NORM_FLOOR)


@dataclass
class TrustScore:
    """Expected relative transfer error from the disagreement of the model with a reduced-rank
    ridge regression (module docstring). ``fit`` on training pairs, ``calibrate`` on held-out ones."""

    n_components: int = DEFAULT_COMPONENTS         # the rank k of the second model
    seed: int = 0
    # fitted on training pairs: the second model q = (c - m_c) A B + m_p, in counts
    secondary_mean_: np.ndarray | None = None      # m_c [n_secondary]
    into_: np.ndarray | None = None                # A [n_secondary, k]
    out_: np.ndarray | None = None                 # B [k, n_primary], orthonormal rows
    primary_mean_: np.ndarray | None = None        # m_p [n_primary]
    # fitted on held-out spectra
    weights_: np.ndarray | None = None             # w [n_features]
    intercept_: float = 0.0                        # b
    knots_: np.ndarray | None = None               # calibration scores, increasing
    values_: np.ndarray | None = None              # expected relative error at each knot
    threshold_: float = float("nan")               # default "do not trust" expected relative error
    report_: dict = field(default_factory=dict)    # what the calibration saw

    # -- fitting ---------------------------------------------------------------------
    def fit(self, corrected_secondary, measured_primary) -> "TrustScore":
        """The second model on training pairs (baseline-corrected counts of both systems).

        Ridge regression in its dual form (n spectra x n spectra), then the k leading right
        singular vectors of its fitted values: the output directions it keeps. The ridge is
        relative to the spectra's own mean squared norm, so a global scaling of either system
        gives the same model."""
        C = check_spectra(corrected_secondary, name="corrected training spectra for the trust score"
                          ).astype(np.float64)
        Y = check_spectra(measured_primary, name="measured training primary spectra for the trust score"
                          ).astype(np.float64)
        if Y.shape[0] != C.shape[0]:
            raise TrustError(f"{C.shape[0]} training secondary spectra but {Y.shape[0]} primary spectra")
        if C.shape[0] < self.n_components + 2:
            raise TrustError(f"the trust score with {self.n_components} components needs at least "
                             f"{self.n_components + 2} training spectra, got {C.shape[0]}")
        self.secondary_mean_, self.primary_mean_ = C.mean(axis=0), Y.mean(axis=0)
        C, Y = C - self.secondary_mean_, Y - self.primary_mean_
        gram = C @ C.T
        ridge = SECOND_MODEL_RIDGE * max(float(np.trace(gram)) / len(C), NORM_FLOOR)
        dual = np.linalg.solve(gram + ridge * np.eye(len(C)), Y)
        _, _, directions = randomized_svd(gram @ dual, int(self.n_components), n_iter=7, random_state=self.seed)
        self.out_ = directions
        self.into_ = C.T @ (dual @ directions.T)
        return self

    def calibrate(self, corrected_secondary, predicted_primary, measured_primary) -> "TrustScore":
        """Head and calibration on held-out paired spectra (not those the model was fitted on)."""
        self._check_fitted(calibrated=False)
        X = self.features(corrected_secondary, predicted_primary)
        target = relative_error(predicted_primary, measured_primary)
        if X.shape[0] < 5 * CALIBRATION_BINS:
            raise TrustError(f"calibrating the trust score needs at least {5 * CALIBRATION_BINS} held-out "
                             f"spectra, got {X.shape[0]}")
        design = np.column_stack([X, np.ones(len(X))])
        log_target = np.log(np.maximum(target, NORM_FLOOR))
        gram = design.T @ design + HEAD_RIDGE * len(X) * np.diag([1.0] * X.shape[1] + [0.0])
        solution = np.linalg.solve(gram, design.T @ log_target)
        self.weights_, self.intercept_ = solution[:-1], float(solution[-1])
        score = X @ self.weights_ + self.intercept_
        self.knots_, self.values_ = _calibration(score, target)
        self.threshold_ = float(THRESHOLD_FACTOR * np.median(target))
        self.report_ = {"n_spectra": int(len(target)), "median_relative_error": float(np.median(target)),
                        "mean_relative_error": float(np.mean(target)),
                        "fraction_flagged": float(np.mean(self._interp(score) > self.threshold_))}
        return self

    # -- scoring -----------------------------------------------------------------------
    def second_model(self, corrected_secondary) -> np.ndarray:
        """q [n, n_primary] float64: the second model's primary counts."""
        self._check_fitted(calibrated=False)
        C = check_spectra(corrected_secondary, self.secondary_mean_.shape[0], name="corrected secondary spectra",
                          allow_1d=True).astype(np.float64)
        return ((np.atleast_2d(C) - self.secondary_mean_) @ self.into_) @ self.out_ + self.primary_mean_

    def disagreement(self, corrected_secondary, predicted_primary) -> np.ndarray:
        """min(||p - q|| / max(||p||, eps), cap) per spectrum (float64)."""
        q = self.second_model(corrected_secondary)
        P = np.atleast_2d(np.asarray(predicted_primary, np.float64))
        if P.shape[0] != q.shape[0]:
            raise TrustError(f"{q.shape[0]} secondary spectra but {P.shape[0]} predicted primary spectra")
        if P.shape[1] != q.shape[1]:
            raise TrustError(f"predicted primary spectra of {P.shape[1]} pixels, the trust score's second model "
                             f"predicts {q.shape[1]}")
        ratio = np.linalg.norm(P - q, axis=1) / np.maximum(np.linalg.norm(P, axis=1), NORM_FLOOR)
        return np.minimum(ratio, DISAGREEMENT_CAP)

    def features(self, corrected_secondary, predicted_primary) -> np.ndarray:
        """[n, 1] float64: log disagreement."""
        return np.log(self.disagreement(corrected_secondary, predicted_primary) + NORM_FLOOR)[:, None]

    def score(self, corrected_secondary, predicted_primary) -> np.ndarray:
        """The head's output: the predicted log relative error (uncalibrated)."""
        self._check_fitted(calibrated=True)
        return self.features(corrected_secondary, predicted_primary) @ self.weights_ + self.intercept_

    def expected_relative_error(self, corrected_secondary, predicted_primary) -> np.ndarray:
        """Calibrated expected relative error per spectrum, float32 (0.12 = 12 %)."""
        return self._interp(self.score(corrected_secondary, predicted_primary)).astype(np.float32)

    def untrusted(self, corrected_secondary, predicted_primary) -> np.ndarray:
        """True where the expected relative error exceeds the published threshold."""
        return self.expected_relative_error(corrected_secondary, predicted_primary) > np.float32(self.threshold_)

    def _interp(self, score: np.ndarray) -> np.ndarray:
        # beyond the held-out range the head's own meaning (log relative error) carries on
        clipped = np.clip(score, self.knots_[0], self.knots_[-1])
        return np.interp(clipped, self.knots_, self.values_) * np.exp(score - clipped)

    def _check_fitted(self, *, calibrated: bool) -> None:
        if self.into_ is None:
            raise TrustError("the trust score is not fitted: call fit() on training pairs first")
        if calibrated and self.knots_ is None:
            raise TrustError("the trust score is not calibrated: call calibrate() on held-out spectra first")

    @property
    def n_secondary(self) -> int:
        return int(self.secondary_mean_.shape[0])

    # -- export and storage ----------------------------------------------------------------
    def to_onnx_parts(self) -> dict[str, np.ndarray | float]:
        """Plain arrays for transfer.onnx_graph.trust_outputs. The calibration curve as hinges:
        interp(clip(s)) = values[0] + sum_i slopes_delta[i] * relu(clip(s) - knots[i]), then times
        exp(s - clip(s)) beyond the ends."""
        self._check_fitted(calibrated=True)
        knots, values = self.knots_, self.values_
        slopes = np.diff(values) / np.diff(knots)
        delta = np.diff(np.concatenate([[0.0], slopes]))
        return {"secondary_mean": self.secondary_mean_, "into": self.into_, "out": self.out_,
                "primary_mean": self.primary_mean_, "disagreement_cap": DISAGREEMENT_CAP, "norm_floor": NORM_FLOOR,
                "weights": self.weights_,
                "intercept": self.intercept_, "knots": knots[:-1], "slopes_delta": delta,
                "first_knot": float(knots[0]), "last_knot": float(knots[-1]), "first_value": float(values[0])}

    def to_metadata(self) -> dict[str, str]:
        """ONNX metadata_props (and the bundle's record): threshold, calibration, output name."""
        self._check_fitted(calibrated=True)
        return {META_KEYS["threshold"]: repr(float(self.threshold_)),
                META_KEYS["output"]: OUTPUT,
                META_KEYS["calibration"]: json.dumps(self.describe(), sort_keys=True)}

    def describe(self) -> dict:
        return {"method": METHOD, "features": list(FEATURES), "components": int(self.out_.shape[0]),
                "second_model": f"ridge regression of the training pairs, rank {int(self.out_.shape[0])}",
                "disagreement_cap": DISAGREEMENT_CAP,
                "weights": [float(v) for v in self.weights_], "intercept": self.intercept_,
                "knots": [float(v) for v in self.knots_], "values": [float(v) for v in self.values_],
                "threshold": float(self.threshold_), "threshold_rule": f"{THRESHOLD_FACTOR:g} x held-out median "
                "relative error", "held_out": self.report_,
                "meaning": "expected ||transferred - measured primary|| / ||measured primary|| of this spectrum "
                           "(mean over held-out spectra of similar score; 0.12 = 12 %), from the disagreement "
                           "||transferred - second model|| / ||transferred||"}

    def get_state(self) -> dict:
        self._check_fitted(calibrated=True)
        return {"method": METHOD, "secondary_mean": self.secondary_mean_.copy(), "into": self.into_.copy(),
                "out": self.out_.copy(), "primary_mean": self.primary_mean_.copy(),
                "weights": self.weights_.copy(), "intercept": self.intercept_, "knots": self.knots_.copy(),
                "values": self.values_.copy(), "threshold": self.threshold_, "report": json.dumps(self.report_),
                "seed": self.seed}

    @classmethod
    def from_state(cls, state: dict) -> "TrustScore":
        method = state.get("method")
        if method in OUTDATED_METHODS:
            raise OutdatedTrust(f"trust state of the earlier method {method!r} (now {METHOD!r}): {REFIT_HINT}")
        if method != METHOD:
            raise TrustError(f"trust state of method {method!r}, expected {METHOD!r}")
        m_c, into = np.asarray(state["secondary_mean"], np.float64), np.asarray(state["into"], np.float64)
        out, m_p = np.asarray(state["out"], np.float64), np.asarray(state["primary_mean"], np.float64)
        knots = np.asarray(state["knots"], np.float64)
        values = np.asarray(state["values"], np.float64)
        weights = np.asarray(state["weights"], np.float64)
        if into.ndim != 2 or out.ndim != 2 or m_c.shape != (into.shape[0],) or into.shape[1] != out.shape[0] \
                or m_p.shape != (out.shape[1],) or weights.shape != (len(FEATURES),) \
                or knots.shape != values.shape or knots.size < 2 or np.any(np.diff(knots) <= 0):
            raise TrustError(f"trust state: shapes do not fit (secondary mean {m_c.shape}, into {into.shape}, "
                             f"out {out.shape}, primary mean {m_p.shape}, weights {weights.shape}, "
                             f"knots {knots.shape}, values {values.shape})")
        return cls(n_components=out.shape[0], seed=int(state.get("seed", 0)), secondary_mean_=m_c, into_=into,
                   out_=out, primary_mean_=m_p, weights_=weights, intercept_=float(state["intercept"]),
                   knots_=knots, values_=values, threshold_=float(state["threshold"]),
                   report_=json.loads(state.get("report", "{}")))


def _calibration(score: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots at the score deciles' mean score, values the isotonic fit's mean error there."""
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(score, target).predict(score)
    order = np.argsort(score)
    knots, values = [], []
    for part in np.array_split(order, CALIBRATION_BINS):
        knots.append(float(np.mean(score[part])))
        values.append(float(np.mean(fitted[part])))
    knots, values = np.asarray(knots), np.maximum.accumulate(np.asarray(values))
    # strictly increasing, so that the calibration keeps the head's order (a tie per plateau of
    # the isotonic fit would throw away what the head knows)
    for i in range(1, len(values)):
        values[i] = max(values[i], values[i - 1] * (1 + CALIBRATION_STEP))
    keep = np.concatenate([[True], np.diff(knots) > 1e-9])
    return knots[keep], values[keep]


def fit_from_maps(train_paths, held_out_paths, secondary, primary, transfer, *,
                  n_components: int = DEFAULT_COMPONENTS, max_spots: int = 5000, seed: int = 0,
                  chunk_spots: int = 4096, progress: bool = False, day_change: float = 0.0) -> TrustScore:
    """A trust score fitted on a seeded sample of pairs of `train_paths` and calibrated on one of
    `held_out_paths` (`calibrate_from_maps`).

    `secondary`, `primary`: the model's SpectrumPreprocessors (training statistics);
    `transfer`: scaled secondary spectra -> scaled primary spectra (the model being scored).
    """
    from transfer.data import sample_preprocessed
    train = sample_preprocessed(list(train_paths), {"secondary": secondary, "primary": primary}, max_spots, seed,
                                chunk_spots, progress)
    score = TrustScore(n_components, seed=seed).fit(secondary.inverse_transform(train["secondary"]),
                                                    primary.inverse_transform(train["primary"]))
    return calibrate_from_maps(score, held_out_paths, secondary, primary, transfer, max_spots=max_spots, seed=seed,
                               chunk_spots=chunk_spots, progress=progress, day_change=day_change)


def calibrate_from_maps(score: TrustScore, held_out_paths, secondary, primary, transfer, *, max_spots: int = 5000,
                        seed: int = 0, chunk_spots: int = 4096, progress: bool = False,
                        day_change: float = 0.0) -> TrustScore:
    """`score` (fitted) calibrated, in place, on a seeded sample (seed + 1) of `held_out_paths`, paired
    maps the model was not fitted on; `transfer` as for `fit_from_maps`.

    `day_change` > 0: the held-out secondaries are seen through the simulated day change of
    that amplitude (`transfer.day_change`), for a model that was not trained against it and
    whose held-out map is of the training day (docs/novelty.md, "Calibrated for another day").
    The amplitude is recorded in ``report_["day_change"]``.
    """
    from transfer.data import sample_preprocessed
    held = sample_preprocessed(list(held_out_paths), {"secondary": secondary, "primary": primary}, max_spots,
                               seed + 1, chunk_spots, progress)
    if day_change > 0:
        held["secondary"] = day_changed(held["secondary"], secondary.scaled_zero(), day_change)
    predicted = primary.inverse_transform(np.asarray(transfer(held["secondary"]), np.float32))
    score.calibrate(secondary.inverse_transform(held["secondary"]), predicted, primary.inverse_transform(held["primary"]))
    score.report_["day_change"] = float(day_change)
    return score
