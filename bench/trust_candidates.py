"""Candidate trust scores on the robustness suite's maps: prints ONE JSON object.

The trust score (transfer/trust.py) must rank and calibrate the relative transfer error on the
test map, another day and region than the training and validation maps. This script measures
candidate scores built from what the live graph has (the corrected secondary, the model's
output, small linear pieces) with `transfer.trust_figures.score_figures` on the test map, each
head and calibration fitted on the validation map as `libs-transfer train` does:

- ``shipped``: the project's score as `libs-transfer train` ships it (transfer.trust.TrustScore);
- ``earlier``: the features of the earlier method ``shape-residual-head`` (log intensity, log
  residual of the normalised secondary outside 16 principal axes, log output norm);
- ``shape_output`` / ``shape``: without the intensity feature (and without the output norm);
- ``earlier_pcs``: those features and the 16 principal coordinates of the normalised secondary;
- ``disagree``: log d, d = ||p - q|| / ||p||, q a cheap second model (``pls8``, ``rrr16``:
  ridge of reduced rank 16, two thin matrices), with a fitted slope and intercept;
- ``disagree_shape``: log d and the log shape residual;
- ``earlier_disagree``: the earlier features and log d;
- ``proportional``: expected error = k d, k from the validation map (no head, no isotonic curve);
- ``*_augmented``: the head and calibration fitted on validation spectra whose secondary was
  changed as an instrument might change from one day to the next (intensity scale, sub-pixel
  wavelength shift, linear background), against the unchanged measured primary.

Fitting the models is the slow part, so predictions are cached per scenario and model in
``--cache`` (npz); a second run only scores. VAE + MLP takes minutes per scenario on a shared
CPU; name it only for a few scenarios (``--vae``).

Example:
    nice -n 10 python bench/trust_candidates.py --maps /tmp/suite-new/maps --cache /tmp/trust17 \\
        --scenario basalt --scenario granite --vae basalt > /tmp/trust17/candidates.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from transfer.trust import NORM_FLOOR, TrustError, relative_error
from transfer.trust_figures import score_figures

SCENARIOS = ("basalt", "granite", "slag", "basalt-few-severe", "pegmatite-broad-lowres")
MODELS = ("ds", "pls", "vae_mlp")
#: the instrument changes of the augmented calibration (per spectrum, uniform in these ranges)
AUGMENT_LOG_SCALE = np.log(1.5)        # intensity x exp(U(-a, a))
AUGMENT_SHIFT_PX = 0.5                 # wavelength shift, pixels
AUGMENT_BACKGROUND = 0.02              # linear background, a fraction of the spectrum's mean |count|


def _config():
    from bench.transfer_suite import suite_config
    return suite_config(None, quick=True, max_epochs=None)


def _data(maps: Path, scenario: str, cache: Path, seed: int):
    """Scaled arrays of the three maps and the preprocessors (cached)."""
    path = cache / f"{scenario}-data.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return pickle.load(f)
    from transfer.suite import load_maps
    loaded = load_maps(maps / f"{scenario}-train.h5", maps / f"{scenario}-val.h5", maps / f"{scenario}-test.h5",
                       _config(), seed=seed)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as f:
        pickle.dump(loaded, f)
    partial.replace(path)
    return loaded


def augment(corrected: np.ndarray, seed: int) -> np.ndarray:
    """Corrected secondary counts as another day's instrument might record them."""
    rng = np.random.default_rng([seed, 23])
    n, m = corrected.shape
    scale = np.exp(rng.uniform(-AUGMENT_LOG_SCALE, AUGMENT_LOG_SCALE, n))
    shift = rng.uniform(-AUGMENT_SHIFT_PX, AUGMENT_SHIFT_PX, n)
    pixels = np.arange(m, dtype=np.float64)
    out = np.empty_like(corrected, dtype=np.float64)
    for i in range(n):
        out[i] = np.interp(pixels - shift[i], pixels, corrected[i])
    level = np.mean(np.abs(corrected), axis=1) * AUGMENT_BACKGROUND
    ramp = (pixels / (m - 1) - 0.5)[None, :]
    background = level[:, None] * (rng.uniform(-1, 1, n)[:, None] + rng.uniform(-1, 1, n)[:, None] * ramp)
    return (out * scale[:, None] + background).astype(np.float32)


def _fit_model(name: str, data: dict, seed: int):
    from sklearn.base import clone

    from transfer.selection import choose_on_validation
    from transfer.suite import models_from_config
    config = _config()
    arrays = data["arrays"]
    train = (arrays["train"]["secondary"], arrays["train"]["primary"])
    val = (arrays["val"]["secondary"], arrays["val"]["primary"])
    prototype = models_from_config(config, data["wavelengths"], seed=seed)[name]
    if name == "ds":
        alphas = [float(a) for a in config["baselines"]["ridge_alpha_candidates"]]
        return choose_on_validation(prototype, {"alpha": alphas}, train, val,
                                    unscale=data["preprocessors"]["primary"].inverse_transform).estimator
    model = clone(prototype)
    if name == "vae_mlp":
        import torch
        torch.set_num_threads(1)
        model.fit(*train, validation=val, secondary_zero=data["preprocessors"]["secondary"].scaled_zero())
    else:
        model.fit(*train)
    return model


def predictions(maps: Path, scenario: str, model: str, cache: Path, seed: int) -> dict:
    """{"val", "test", "val_augmented"}: the model's predicted primary counts (cached)."""
    path = cache / f"{scenario}-{model}.npz"
    if path.exists():
        return dict(np.load(path))
    data = _data(maps, scenario, cache, seed)
    prep = data["preprocessors"]
    started = time.perf_counter()
    fitted = _fit_model(model, data, seed)
    fit_s = time.perf_counter() - started
    to_primary = prep["primary"].inverse_transform
    arrays = data["arrays"]
    augmented = augment(prep["secondary"].inverse_transform(arrays["val"]["secondary"]), seed)
    out = {split: to_primary(np.asarray(fitted.predict(arrays[split]["secondary"]), np.float32))
           for split in ("val", "test")}
    out["val_augmented"] = to_primary(np.asarray(fitted.predict(prep["secondary"].scaler.transform(augmented)),
                                                 np.float32))
    out["fit_s"] = np.float64(fit_s)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, **out)
    partial.replace(path)
    return out


# -- second models: cheap linear predictions of the primary, in scaled units ---------------------
def reduced_rank_ridge(X: np.ndarray, Y: np.ndarray, rank: int = 16, alpha: float = 1e-2):
    """Ridge regression of Y on X kept to its `rank` leading output directions: two thin
    matrices (n_x x rank, rank x n_y) and the means. alpha is relative to the mean of diag(X X^T)."""
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    mx, my = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - mx, Y - my
    gram = Xc @ Xc.T
    dual = np.linalg.solve(gram + alpha * np.trace(gram) / len(X) * np.eye(len(X)), Yc)
    _, _, vt = np.linalg.svd(gram @ dual, full_matrices=False)
    directions = vt[:rank]                                    # [rank, n_y]
    return {"x_mean": mx, "y_mean": my, "into": Xc.T @ (dual @ directions.T), "out": directions}


def predict_rrr(parts: dict, X: np.ndarray) -> np.ndarray:
    return ((np.asarray(X, np.float64) - parts["x_mean"]) @ parts["into"]) @ parts["out"] + parts["y_mean"]


def second_models(data: dict, seed: int) -> dict:
    """name -> scaled secondary -> primary counts."""
    from transfer.baselines import PLSTransfer
    arrays, to_primary = data["arrays"], data["preprocessors"]["primary"].inverse_transform
    Xs, Xp = arrays["train"]["secondary"], arrays["train"]["primary"]
    out = {}
    for k in (8, 16):
        pls = PLSTransfer(k, seed=seed).fit(Xs, Xp)
        out[f"pls{k}"] = lambda Z, m=pls: to_primary(np.asarray(m.predict(Z), np.float32)).astype(np.float64)
    for rank in (8, 16, 32):
        rrr = reduced_rank_ridge(Xs, Xp, rank=rank)
        out[f"rrr{rank}"] = lambda Z, r=rrr: to_primary(predict_rrr(r, Z).astype(np.float32)).astype(np.float64)
    return out


class ShapeFeatures:
    """The features of the earlier trust score (method ``shape-residual-head``): log intensity,
    log residual of the intensity-normalised spectrum outside k principal axes of the training
    spectra, log output norm; and the principal coordinates themselves."""

    def __init__(self, n_components: int = 16, seed: int = 0):
        self.n_components, self.seed = n_components, seed

    def fit(self, corrected) -> "ShapeFeatures":
        from sklearn.utils.extmath import randomized_svd
        U = _normalised_counts(corrected)
        self.shape_mean_ = U.mean(axis=0)
        _, _, self.shape_axes_ = randomized_svd(U - self.shape_mean_, self.n_components, n_iter=7,
                                                random_state=self.seed)
        return self

    def features(self, corrected, predicted) -> np.ndarray:
        C, P = np.asarray(corrected, np.float64), np.asarray(predicted, np.float64)
        d = _normalised_counts(C) - self.shape_mean_
        residual = d - (d @ self.shape_axes_.T) @ self.shape_axes_
        return np.column_stack([np.log(np.linalg.norm(C, axis=1) + 1.0),
                                np.log(np.linalg.norm(residual, axis=1) + NORM_FLOOR),
                                np.log(np.linalg.norm(P, axis=1) + 1.0)])


# -- heads and calibration -------------------------------------------------------------------------
class Head:
    """log relative error ~ features (least squares, small ridge), then the project's isotonic decile
    calibration (transfer.trust._calibration); ``proportional``: error = k d, no fit but k."""

    def __init__(self, kind: str = "linear"):
        self.kind = kind

    def fit(self, X: np.ndarray, target: np.ndarray) -> "Head":
        from transfer.trust import HEAD_RIDGE, _calibration
        log_target = np.log(np.maximum(target, NORM_FLOOR))
        if self.kind == "proportional":                       # X: [n, 1] log d
            self.log_k = float(np.log(np.mean(target) / np.mean(np.exp(X[:, 0]))))
            return self
        design = np.column_stack([X, np.ones(len(X))])
        gram = design.T @ design + HEAD_RIDGE * len(X) * np.diag([1.0] * X.shape[1] + [0.0])
        self.solution = np.linalg.solve(gram, design.T @ log_target)
        self.knots, self.values = _calibration(self.raw(X), target)
        return self

    def raw(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "proportional":
            return X[:, 0] + self.log_k
        return X @ self.solution[:-1] + self.solution[-1]

    def expected(self, X: np.ndarray) -> np.ndarray:
        score = self.raw(X)
        if self.kind == "proportional":
            return np.exp(score)
        clipped = np.clip(score, self.knots[0], self.knots[-1])
        return np.interp(clipped, self.knots, self.values) * np.exp(score - clipped)


def _log(v):
    return np.log(np.maximum(np.asarray(v, np.float64), NORM_FLOOR))


def candidate_features(trust, corrected, predicted, seconds: dict) -> dict:
    """candidate name -> (feature matrix [n, f], head kind)."""
    earlier = trust.features(corrected, predicted)
    d = _normalised_counts(corrected) - trust.shape_mean_
    pcs = d @ trust.shape_axes_.T
    out = {"earlier": (earlier, "linear"), "shape_output": (earlier[:, 1:], "linear"), "shape": (earlier[:, 1:2], "linear"),
           "earlier_pcs": (np.column_stack([earlier, pcs]), "linear")}
    p = np.asarray(predicted, np.float64)
    for name, q in seconds.items():
        log_d = _log(np.linalg.norm(p - q, axis=1) / np.maximum(np.linalg.norm(p, axis=1), NORM_FLOOR))[:, None]
        out[f"disagree_{name}"] = (log_d, "linear")
        out[f"disagree_shape_{name}"] = (np.column_stack([log_d, earlier[:, 1]]), "linear")
        out[f"earlier_disagree_{name}"] = (np.column_stack([earlier, log_d]), "linear")
        out[f"proportional_{name}"] = (log_d, "proportional")
    return out


def _normalised_counts(C):
    C = np.asarray(C, np.float64)
    return C / np.maximum(np.linalg.norm(C, axis=1, keepdims=True), NORM_FLOOR)


def _figures(expected, predicted, measured, corrected) -> dict:
    rel = relative_error(predicted, measured)
    absolute = np.linalg.norm(np.asarray(predicted, np.float64) - np.asarray(measured, np.float64), axis=1)
    f = score_figures(expected, rel, absolute, np.linalg.norm(np.asarray(corrected, np.float64), axis=1))
    keep = ("rho_relative", "rho_absolute", "top5_over_median", "deciles_within_30_percent",
            "mean_predicted_over_observed", "median_relative_error")
    out = {k: round(float(f[k]), 4) for k in keep}
    out["targets_met"] = int(f["rho_relative"] >= 0.5) + int(f["top5_over_median"] >= 2.0) \
        + int(f["deciles_within_30_percent"] == 10)
    return out


def score_scenario(maps: Path, scenario: str, models, cache: Path, seed: int) -> dict:
    from transfer.trust import TrustScore
    data = _data(maps, scenario, cache, seed)
    arrays, prep = data["arrays"], data["preprocessors"]
    to_secondary, to_primary = prep["secondary"].inverse_transform, prep["primary"].inverse_transform
    corrected = {s: to_secondary(arrays[s]["secondary"]).astype(np.float64) for s in ("train", "val", "test")}
    measured = {s: to_primary(arrays[s]["primary"]).astype(np.float64) for s in ("train", "val", "test")}
    corrected["val_augmented"] = augment(corrected["val"], seed).astype(np.float64)
    scaled = {"val": arrays["val"]["secondary"], "test": arrays["test"]["secondary"],
              "val_augmented": prep["secondary"].scaler.transform(corrected["val_augmented"].astype(np.float32))}
    trust = ShapeFeatures(seed=seed).fit(corrected["train"])
    shipped = TrustScore(seed=seed).fit(corrected["train"], measured["train"])
    seconds_models = second_models(data, seed)
    seconds = {name: {s: f(scaled[s]) for s in scaled} for name, f in seconds_models.items()}
    half = len(corrected["test"]) // 2
    first, second = np.arange(half), np.arange(half, len(corrected["test"]))
    result = {}
    for model in models:
        pred = predictions(maps, scenario, model, cache, seed)
        feats = {s: candidate_features(trust, corrected[s], pred[s],
                                       {n: v[s] for n, v in seconds.items() if not (model == "pls" and n == "pls16")})
                 for s in ("val", "test", "val_augmented")}
        target = {"val": relative_error(pred["val"], measured["val"]),
                  "val_augmented": relative_error(pred["val_augmented"], measured["val"])}
        rows = {}
        for name, (X, kind) in feats["val"].items():
            Xt = feats["test"][name][0]
            for calibration in ("val", "val_augmented"):
                label = name if calibration == "val" else f"{name}_augmented"
                try:
                    head = Head(kind).fit(feats[calibration][name][0], target[calibration])
                    row = {"validation": _figures(head.expected(Xt), pred["test"], measured["test"], corrected["test"])}
                    if calibration == "val":
                        own = Head(kind).fit(Xt[first], relative_error(pred["test"][first], measured["test"][first]))
                        row["test_half"] = _figures(own.expected(Xt[second]), pred["test"][second],
                                                    measured["test"][second], corrected["test"][second])
                except (TrustError, np.linalg.LinAlgError) as exc:
                    row = {"error": str(exc)}
                rows[label] = row
        # the project's own score, as `train` ships it (transfer.trust)
        calibrated = dataclasses.replace(shipped).calibrate(corrected["val"], pred["val"], measured["val"])
        expected = calibrated.expected_relative_error(corrected["test"], pred["test"])
        rows["shipped"] = {"validation": _figures(expected, pred["test"], measured["test"], corrected["test"]),
                           "threshold": calibrated.threshold_,
                           "flagged": float(np.mean(expected > np.float32(calibrated.threshold_)))}
        result[model] = {"test_rse_median_rel": float(np.median(relative_error(pred["test"], measured["test"]))),
                         "val_median_rel": float(np.median(target["val"])), "candidates": rows}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--maps", type=Path, default=Path("/tmp/suite-new/maps"),
                        help="folder of the suite's maps <scenario>-{train,val,test}.h5")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/trust17"), help="folder of cached predictions")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable (default: all)")
    parser.add_argument("--vae", action="append", default=[], choices=SCENARIOS,
                        help="scenarios that also fit (or read cached) VAE + MLP predictions")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    missing = [s for s in args.scenario or SCENARIOS
               if not all((args.maps / f"{s}-{k}.h5").exists() for k in ("train", "val", "test"))]
    if missing:
        print(f"error: no maps {', '.join(missing)} in {args.maps} (bench/transfer_suite.py --work writes them)",
              file=sys.stderr)
        return 2
    args.cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = {}
    for scenario in args.scenario or SCENARIOS:
        models = ["ds", "pls"] + (["vae_mlp"] if scenario in args.vae else [])
        results[scenario] = score_scenario(args.maps, scenario, models, args.cache, args.seed)
    print(json.dumps({"command": "python bench/trust_candidates.py " + " ".join(argv or sys.argv[1:]),
                      "seconds": round(time.perf_counter() - started, 1), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
