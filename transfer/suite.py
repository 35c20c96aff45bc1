"""Every transfer model trained and scored on one set of paired maps, in memory.

The robustness suite (bench/transfer_suite.py) and `libs-transfer evaluate
--learning-curve` use this: the maps are preprocessed with the configuration's
scaling (training statistics, causal protocol), every model of
`models_from_config` is fitted on the training pairs (early stopping and ridge
choice on the validation map), and each is scored on the test map by RSE in
baseline-corrected primary counts and k-score (k-means of the training primary
counts, k by the validation silhouette).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sklearn.base import clone

from transfer.baselines import baselines_from_config
from transfer.clustering import SpectralClusters
from transfer.config import TransferConfig
from transfer.data import check_axis, fit_preprocessors, inspect_map, sample_preprocessed
from transfer.estimators import OneStepMLPTransfer, VAEMLPTransfer
from transfer.metrics import k_score, rse
from transfer.selection import (MODEL_NAMES, NETWORKS, blend, calibration_day_change, fit_on_validation, kept_blend,
                                selection_inputs)
from transfer.trust_figures import trust_on_maps

log = logging.getLogger(__name__)

def _cap(*sections) -> int:
    """The tightest epoch cap of these sections (0: none)."""
    caps = [int(s["max_epochs"]) for s in sections if int(s["max_epochs"]) > 0]
    return min(caps) if caps else 0


def models_from_config(config: TransferConfig, wavelengths: Mapping[str, np.ndarray], *, seed: int = 0,
                       device: str = "cpu", n_fit: int | None = None) -> dict:
    """Unfitted estimators with the configuration's settings (what `train` fits); `n_fit`, the
    training spectra they will see, caps KNN's neighbour count as in `train`."""
    vae, mlp, finetune, one_step, base = (config[k] for k in ("vae", "mlp", "finetune", "one_step", "baselines"))
    models = {
        "vae_mlp": VAEMLPTransfer(
            vae_hidden=tuple(vae["hidden"]), latent=vae["latent"], mlp_hidden=tuple(mlp["hidden"]),
            vae_epochs=vae["epochs"], mlp_epochs=mlp["epochs"], finetune_epochs=finetune["epochs"],
            learning_rate=mlp["learning_rate"], finetune_learning_rate=finetune["learning_rate"],
            batch_size=mlp["batch_size"], l2=mlp["l2"], kl_max=vae["kl_max"], kl_cycles=vae["kl_cycles"],
            negative_slope=vae["negative_slope"], patience=mlp["patience"],
            clip_grad_norm=max(mlp["clip_grad_norm"], vae["clip_grad_norm"]), noise=mlp["noise"],
            gain_augment=mlp["gain_augment"],
            size=vae["size"], min_steps=max(vae["min_steps"], mlp["min_steps"]),
            max_epochs=_cap(vae, mlp, finetune), seed=seed, device=device),
        "one_step_mlp": OneStepMLPTransfer(
            vae_hidden=tuple(vae["hidden"]), latent=vae["latent"], mlp_hidden=tuple(mlp["hidden"]),
            epochs=one_step["epochs"], learning_rate=one_step["learning_rate"], batch_size=one_step["batch_size"],
            l2=one_step["l2"], negative_slope=vae["negative_slope"], patience=one_step["patience"],
            clip_grad_norm=one_step["clip_grad_norm"], noise=mlp["noise"], gain_augment=mlp["gain_augment"],
            size=vae["size"],
            min_steps=mlp["min_steps"], max_epochs=_cap(one_step), seed=seed, device=device),
        **baselines_from_config(base, wavelengths["secondary"], wavelengths["primary"], seed=seed, n_fit=n_fit),
    }
    return models


def load_maps(train: Path, val: Path, test: Path, config: TransferConfig, *, max_train: int | None = None,
              seed: int = 0, align: bool = True) -> dict:
    """Preprocessed arrays {"train"|"val"|"test": {system: [n, pixels]}}, the preprocessors and axes.

    The scalers are fitted on the whole training map; `max_train` keeps a seeded subset of
    its pairs for fitting (a learning curve draws several subsets of one map). ``align``: each
    map's lines aligned onto the training map's, as every command reads maps
    (transfer.data.iter_raw_chunks)."""
    info = inspect_map(train)
    for path in (val, test):
        other = inspect_map(path).wavelengths
        for system in ("primary", "secondary"):
            check_axis(path, system, other[system], info.wavelengths[system], "the training map")
    chunk = config["data"]["chunk_spots"]
    prep = fit_preprocessors([train], info.wavelengths, chunk, False, scaling=config["data"]["scaling"])
    everything = 1 << 40
    data = {"train": sample_preprocessed([train], prep, max_train or everything, seed, chunk, align=align),
            "val": sample_preprocessed([val], prep, everything, seed, chunk, align=align),
            "test": sample_preprocessed([test], prep, everything, seed, chunk, align=align)}
    return {"arrays": data, "preprocessors": prep, "wavelengths": info.wavelengths}


def _clusters(maps: Mapping, config: TransferConfig, seed: int) -> SpectralClusters:
    unscale = maps["preprocessors"]["primary"].inverse_transform
    cfg = config["kmeans"]
    return SpectralClusters(candidates=cfg["k_candidates"], silhouette_spectra=cfg["silhouette_spots"],
                            max_fit_spectra=cfg["max_fit_spots"], seed=seed).fit(
        unscale(maps["arrays"]["train"]["primary"]).astype(np.float64),
        unscale(maps["arrays"]["val"]["primary"]).astype(np.float64))


#: spectra the decoder floor is estimated on (a latent search per spectrum costs a decoder pass a step)
FLOOR_SPECTRA = 1000


def _subsample(n: int, at_most: int, seed: int) -> np.ndarray:
    """Sorted seeded indices of at most `at_most` of `n` spectra."""
    if n <= at_most:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, at_most, replace=False))


class FittedBlend:
    """w * VAE + MLP + (1 - w) * DS of two fitted models, as a bundle's blend transfers."""

    def __init__(self, vae_mlp, ds, weight: float):
        self.vae_mlp, self.ds, self.weight = vae_mlp, ds, float(weight)

    def predict(self, X_secondary: np.ndarray) -> np.ndarray:
        return blend(self.vae_mlp.predict(X_secondary), self.ds.predict(X_secondary), self.weight)


def fit_and_score(models: Mapping, maps: Mapping, config: TransferConfig, *, seed: int = 0,
                  clusters: SpectralClusters | None = None, trust_models: Sequence[str] = (),
                  decoder_floor: bool = False) -> dict[str, dict]:
    """{model: {"rse", "k_score", "validation_rse", "fit_s", "params", "rse_test_halves"}} on the test map
    ("rse_test_halves": on its first and second half in file order). Every model is fitted on the
    training map alone; `train` refits PLS and KNN on training + validation. The linear
    baselines also have "day_change_rse": their validation RSE under the simulated day change, where
    `[baselines] validation_gain` is set; with
    `decoder_floor`, VAE + MLP also "decoder_floor_rse" and "decoder_floor_validation_rse": the RSE of its decoder's best reconstruction
    of the measured primaries, the floor no MLP onto its latent space can pass, on a seeded sample of
    FLOOR_SPECTRA spectra; "blend" where VAE + MLP and DS are both fitted and a weight strictly
    between 0 and 1 validates best, as `train` decides it (transfer.selection.kept_blend;
    its "params": {"weight": w}); the models
    named in `trust_models` also get "trust": their trust score, fitted and calibrated as `train`
    does, measured on the test map (`transfer.trust_figures.trust_on_maps`)."""
    arrays = maps["arrays"]
    unscale = maps["preprocessors"]["primary"].inverse_transform
    train = (arrays["train"]["secondary"], arrays["train"]["primary"])
    val = (arrays["val"]["secondary"], arrays["val"]["primary"])
    truth = unscale(arrays["test"]["primary"]).astype(np.float64)
    half = len(truth) // 2          # the test map's two halves in file order: two regions of the map
    val_truth = unscale(val[1])
    changed_val = selection_inputs(config["baselines"], val[0], maps["preprocessors"]["secondary"].scaled_zero())
    clusters = clusters or _clusters(maps, config, seed)
    labels_true = clusters.predict(truth)
    results, fitted = {}, {}

    def score(name: str, model, validation_rse: float, params: Mapping, day_change_rse: float | None,
              started: float) -> None:
        predicted = unscale(model.predict(arrays["test"]["secondary"])).astype(np.float64)
        results[name] = {"rse": rse(truth, predicted), "k_score": k_score(labels_true, clusters.predict(predicted)),
                         "rse_test_halves": [rse(truth[:half], predicted[:half]), rse(truth[half:], predicted[half:])],
                         "validation_rse": float(validation_rse), "fit_s": round(time.perf_counter() - started, 1),
                         "params": {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()}}
        if day_change_rse is not None:
            results[name]["day_change_rse"] = float(day_change_rse)
        if decoder_floor and hasattr(model, "best_reconstruction"):
            for key, scaled in (("decoder_floor_rse", arrays["test"]["primary"]),
                                ("decoder_floor_validation_rse", val[1])):
                pick = _subsample(len(scaled), FLOOR_SPECTRA, seed)
                results[name][key] = rse(unscale(scaled[pick]).astype(np.float64),
                                         unscale(model.best_reconstruction(scaled[pick])).astype(np.float64))
            log.info("%s: decoder floor on test %.4f, on validation %.4f", name, results[name]["decoder_floor_rse"],
                     results[name]["decoder_floor_validation_rse"])
        log.info("%s: test RSE %.4f, k-score %.3f, validation RSE %.4f (%.0f s)", name, results[name]["rse"],
                 results[name]["k_score"], validation_rse, results[name]["fit_s"])
        if name in trust_models:
            results[name]["trust"] = trust_on_maps(model.predict, maps, seed=seed,
                                                   day_change=calibration_day_change(name, config["baselines"]))
            figures = results[name]["trust"]["validation"]
            log.info("%s trust: rho rel %.2f, rho abs %.2f, top5/median %.2f, deciles within 30 %% %d/10", name,
                     figures["rho_relative"], figures["rho_absolute"], figures["top5_over_median"],
                     figures["deciles_within_30_percent"])

    for name, prototype in models.items():
        started = time.perf_counter()
        if name in NETWORKS:
            model = clone(prototype).fit(*train, validation=val,
                                         secondary_zero=maps["preprocessors"]["secondary"].scaled_zero())
            params = {k: getattr(model, k) for k in ("latent_", "vae_hidden_", "mlp_hidden_") if hasattr(model, k)}
            validation_rse, day_change_rse = rse(val_truth, unscale(model.predict(val[0]))), None
        else:
            baseline = fit_on_validation(name, prototype, config["baselines"], train, val, unscale=unscale,
                                         selection_inputs=changed_val)
            model, params = baseline.estimator, baseline.params
            validation_rse, day_change_rse = baseline.validation_rse, baseline.day_change_rse
        fitted[name] = model
        score(name, model, validation_rse, params, day_change_rse, started)
    if {"vae_mlp", "ds"} <= fitted.keys():
        started = time.perf_counter()
        weight, blend_rse = kept_blend(fitted["vae_mlp"].predict(val[0]), fitted["ds"].predict(val[0]), val[1],
                                       unscale)
        if weight is not None:      # as train: a bundle holds the blend only then
            score("blend", FittedBlend(fitted["vae_mlp"], fitted["ds"], weight), blend_rse, {"weight": weight},
                  None, started)
    return results


def learning_curve(train: Path, val: Path, test: Path, config: TransferConfig, sizes: Sequence[int], *,
                   models: Sequence[str] = MODEL_NAMES, seed: int = 0) -> dict[int, dict[str, dict]]:
    """{n_pairs: {model: scores}} for seeded subsets of the training map's pairs (sizes larger
    than the map are skipped)."""
    n_train = inspect_map(train).n_spots
    curve = {}
    for n in sorted(set(int(s) for s in sizes)):
        if n > n_train:
            log.warning("learning curve: %d pairs asked, the training map has %d; skipped", n, n_train)
            continue
        maps = load_maps(train, val, test, config, max_train=n, seed=seed)
        prototypes = models_from_config(config, maps["wavelengths"], seed=seed,
                                        n_fit=len(maps["arrays"]["train"]["primary"]))
        curve[n] = fit_and_score({k: prototypes[k] for k in models if k in prototypes}, maps, config, seed=seed)
    return curve


DEFAULT_CURVE_SIZES = (300, 1000, 3000, 10000)


class LearningCurveError(ValueError):
    """The learning curve cannot be drawn; the message says why."""


def learning_curve_for_bundle(model_dir: str | Path, test: str | Path, out_dir: str | Path,
                              sizes: Sequence[int] | None = None, *, secondary: str | None = None,
                              seed: int = 0) -> dict[int, dict[str, dict]]:
    """`libs-transfer evaluate --learning-curve`: every model of the bundle's configuration retrained on
    subsets of the bundle's own training map (validated on its validation map), scored on `test`;
    writes learning_curve.json and learning_curve.png into `out_dir`. Without `sizes`, the
    default sizes that fit the training map, or a quarter, a half and all of a smaller map."""
    from transfer.bundle import load_bundle
    bundle = load_bundle(model_dir)
    name = secondary or bundle.default_secondary
    paths = learning_curve_maps(bundle, name)
    models = [m for m in MODEL_NAMES if m in ("vae_mlp", "one_step_mlp") or m in bundle.secondary(name).baselines]
    if bundle.secondary(name).one_step is None:
        models.remove("one_step_mlp")
    if sizes is None:
        sizes = default_curve_sizes(inspect_map(paths["train"]).n_spots)
    curve = learning_curve(paths["train"], paths["val"], Path(test), bundle.config, sizes, models=models, seed=seed)
    if not curve:
        raise LearningCurveError(f"none of the sizes {list(sizes)} fits the training map "
                                 f"({inspect_map(paths['train']).n_spots} pairs)")
    write_learning_curve(curve, out_dir)
    return curve


def learning_curve_maps(bundle, secondary: str) -> dict[str, Path]:
    """The training and validation maps `bundle` (a loaded Bundle) names for `secondary`, which the
    learning curve retrains on; LearningCurveError naming the one that is not there."""
    paths = {}
    for role in ("train", "val"):
        paths[role], why_not = bundle.data_map(secondary, role)
        if paths[role] is None:
            raise LearningCurveError(f"{why_not}: the learning curve retrains on it")
    return paths


def default_curve_sizes(n_pairs: int) -> list[int]:
    """DEFAULT_CURVE_SIZES that fit `n_pairs`; for a map too small for two of them, a quarter, a
    half and all of it."""
    fits = [n for n in DEFAULT_CURVE_SIZES if n <= n_pairs]
    return fits if len(fits) >= 2 else sorted({max(2, n_pairs // 4), max(2, n_pairs // 2), n_pairs})


def write_learning_curve(curve: Mapping[int, Mapping[str, Mapping]], out_dir: str | Path) -> dict[str, Path]:
    """learning_curve.json ({n_pairs: {model: scores}}) and learning_curve.png (test RSE against n)."""
    import json

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "learning_curve.json", "png": out_dir / "learning_curve.png"}
    paths["json"].write_text(json.dumps({str(n): models for n, models in curve.items()}, indent=2) + "\n")
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    sizes = sorted(curve)
    for model in next(iter(curve.values())):
        axes.plot(sizes, [curve[n][model]["rse"] for n in sizes], marker="o", label=model)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("paired training spectra")
    axes.set_ylabel("test RSE (counts)")
    axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(paths["png"])
    return paths
