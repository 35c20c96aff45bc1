"""How well the trust score measures trust: the figures of docs/novelty.md for one map.

`score_figures` compares a score (the expected relative error, or any other) with
the actual errors of every spectrum of a paired map: Spearman ρ with the relative
and the absolute error, ρ within intensity deciles, the relative error of the 5 %
highest scores against the median, and — for a calibrated score — the reliability
per score decile (mean predicted against mean observed relative error).

`trust_on_maps` fits and calibrates the project's own `TrustScore` for one fitted
transfer model exactly as `libs-transfer train` does (second model on the
training pairs, head and calibration on the validation map) and scores it on the
test map; the robustness suite (bench/transfer_suite.py) reports it for every
exportable model. It also calibrates a copy on one half of the test map and scores
the other half: what `libs-transfer calibrate` on a short map of the test's own day
would give at best.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping

import numpy as np
from scipy.stats import spearmanr

from transfer.day_change import day_changed
from transfer.trust import DEFAULT_COMPONENTS, TrustError, TrustScore, relative_error

#: the score deciles of the reliability check and the intensity deciles of ρ
DECILES = 10
#: a decile is calibrated when its mean predicted error is within this fraction of the observed mean
CALIBRATION_TOLERANCE = 0.30
#: the fraction of highest scores compared with the median relative error
TOP_FRACTION = 0.05


def _rho(a, b) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b)[0])


def _decile_index(values: np.ndarray) -> np.ndarray:
    """Decile 0..9 of every value (by rank, so that ties do not empty a decile)."""
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return np.minimum(ranks * DECILES // len(values), DECILES - 1)


def score_figures(score, relative, absolute, intensity, *, calibrated: bool = True) -> dict:
    """The figures of one score on one map (float64 arrays of one value per spectrum).

    Keys: rho_relative, rho_absolute, rho_intensity, rho_within_intensity_deciles (list),
    rho_within_deciles_median, top5_over_median (mean relative error of the 5 % highest
    scores / median relative error), top5_possible_over_median (the same for the 5 % highest
    errors: the most any score can reach on this map), median_relative_error; with `calibrated` (the score is
    an expected relative error) also reliability {"predicted", "observed"} per score decile,
    deciles_within_30_percent, fraction_of_deciles_within_30_percent and
    mean_predicted_over_observed."""
    score, relative, absolute, intensity = (np.asarray(v, np.float64) for v in (score, relative, absolute, intensity))
    if not (len(score) == len(relative) == len(absolute) == len(intensity)) or len(score) < 2 * DECILES:
        raise TrustError(f"trust figures need {2 * DECILES} or more spectra with one value each, got "
                         f"{len(score)} scores, {len(relative)} relative errors, {len(absolute)} absolute "
                         f"errors and {len(intensity)} intensities")
    by_intensity = _decile_index(intensity)
    within = [_rho(score[by_intensity == d], relative[by_intensity == d]) for d in range(DECILES)]
    top = score >= np.quantile(score, 1 - TOP_FRACTION)
    median = float(np.median(relative))
    out = {"n": int(len(score)), "rho_relative": _rho(score, relative), "rho_absolute": _rho(score, absolute),
           "rho_intensity": _rho(score, intensity), "rho_within_intensity_deciles": within,
           "rho_within_deciles_median": float(np.nanmedian(within)) if np.any(np.isfinite(within)) else float("nan"),
           "median_relative_error": median, "top5_mean_relative_error": float(np.mean(relative[top])),
           "top5_over_median": float(np.mean(relative[top]) / median) if median > 0 else float("nan")}
    worst = relative >= np.quantile(relative, 1 - TOP_FRACTION)
    out["top5_possible_over_median"] = float(np.mean(relative[worst]) / median) if median > 0 else float("nan")
    if calibrated:
        by_score = _decile_index(score)
        predicted = np.array([np.mean(score[by_score == d]) for d in range(DECILES)])
        observed = np.array([np.mean(relative[by_score == d]) for d in range(DECILES)])
        within_tolerance = int(np.sum(np.abs(predicted / observed - 1) <= CALIBRATION_TOLERANCE))
        out.update(reliability={"predicted": predicted.tolist(), "observed": observed.tolist()},
                   deciles_within_30_percent=within_tolerance,
                   fraction_of_deciles_within_30_percent=within_tolerance / DECILES,
                   mean_predicted_over_observed=float(np.mean(score) / np.mean(relative)))
    return out


def _errors(trust: TrustScore, corrected, predicted, measured) -> dict:
    expected = trust.expected_relative_error(corrected, predicted).astype(np.float64)
    absolute = np.linalg.norm(np.asarray(predicted, np.float64) - np.asarray(measured, np.float64), axis=1)
    figures = score_figures(expected, relative_error(predicted, measured), absolute,
                            np.linalg.norm(np.asarray(corrected, np.float64), axis=1))
    figures.update(threshold=float(trust.threshold_), flagged=float(np.mean(expected > trust.threshold_)))
    return figures


def trust_on_maps(predict: Callable[[np.ndarray], np.ndarray], maps: Mapping, *, seed: int = 0,
                  max_spots: int = 5000, n_components: int = DEFAULT_COMPONENTS, day_change: float = 0.0) -> dict:
    """The trust score of one fitted model, as `train` ships it, measured on the test map.

    `predict`: scaled secondary -> scaled primary; `maps`: what `transfer.suite.load_maps`
    returns; `day_change`: the amplitude of the simulated day change the validation map is
    calibrated under (`transfer.selection.calibration_day_change`). {"validation": figures on
    the whole test map with the calibration on the validation map, "test_half": figures on the
    second half of the test map (file order: a spatial half) with a calibration on its first
    half, as measured}."""
    arrays, prep = maps["arrays"], maps["preprocessors"]
    to_secondary, to_primary = prep["secondary"].inverse_transform, prep["primary"].inverse_transform
    rng = np.random.default_rng([seed, 17])

    def counts(split: str, rows=None, change: float = 0.0):
        secondary, primary = arrays[split]["secondary"], arrays[split]["primary"]
        if rows is not None:
            secondary, primary = secondary[rows], primary[rows]
        if change > 0:
            secondary = day_changed(secondary, prep["secondary"].scaled_zero(), change)
        return to_secondary(secondary), to_primary(np.asarray(predict(secondary), np.float32)), to_primary(primary)

    train = arrays["train"]["secondary"]
    rows = np.sort(rng.choice(len(train), min(max_spots, len(train)), replace=False))
    trust = TrustScore(n_components, seed=seed).fit(to_secondary(train[rows]),
                                                    to_primary(arrays["train"]["primary"][rows]))
    n_val = len(arrays["val"]["secondary"])
    trust.calibrate(*counts("val", np.sort(rng.choice(n_val, min(max_spots, n_val), replace=False)), day_change))
    out = {"validation": _errors(trust, *counts("test"))}
    n_test = len(arrays["test"]["secondary"])
    half = n_test // 2
    try:
        on_test_day = dataclasses.replace(trust).calibrate(*counts("test", np.arange(half)))
        out["test_half"] = _errors(on_test_day, *counts("test", np.arange(half, n_test)))
    except TrustError as exc:     # a test map too small to split: say so in the report
        out["test_half"] = {"error": str(exc)}
    return out
