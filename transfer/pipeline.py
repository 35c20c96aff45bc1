"""Training runs that produce a model bundle.

`train_model`: scalers (one streaming pass) -> VAE on primary spectra -> k-means
of scaled primary spectra -> for the secondary system: MLP onto the VAE's mu,
optional end-to-end fine-tuning, the one-step MLP, the baselines (PLS, KNN,
DS, PDS) and the novelty statistics of `transfer.novelty` -> bundle.

`add_secondary`: the same secondary part for another spectrometer against
the VAE of an existing bundle (the paper's client-server idea).

Both checkpoint into MODEL_DIR/checkpoints and resume from there; the
directory is removed once the bundle is complete.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata
import logging
import platform
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from sklearn.base import clone

from acquisition.shared.progress import Progress, Step
from acquisition.shared.systems import SYSTEM_NAMES
from transfer.baselines import baselines_from_config
from transfer.bundle import (TransferBundle, check_name, load_bundle, load_state_tree,
                             read_json, save_state_tree, sha256_file, write_json, write_manifest,
                             write_primary, write_secondary)
from transfer.clustering import SpectralClusters
from transfer.config import TransferConfig
from transfer.data import (PairedBatches, check_axis, fit_preprocessors, inspect_map,
                           sample_preprocessed)
from transfer.estimators import SIZES, data_sized, epochs_for, with_secondary_augmentation
from transfer.metrics import rse
from transfer.models import ComposedTransfer, build_mlp, build_one_step, build_vae
from transfer.novelty import fit_from_maps as fit_novelty
from transfer.preprocess import SpectrumPreprocessor
from transfer.selection import (blend, calibration_day_change, exportable, fit_on_validation, kept_blend, live_model,
                                recommend, selection_inputs)
from transfer.trust import fit_from_maps as fit_trust
from transfer.train import (PhaseSettings, TrainingError, derived_seed, fit_network, latent_phase_losses,
                            make_deterministic, resolve_device, transfer_phase_losses, vae_phase_losses)

log = logging.getLogger(__name__)

EpochCallback = Callable[[str, int, dict], None]
VAL_BATCH = 1024


# -- run bookkeeping ---------------------------------------------------------------

def file_record(path: Path) -> dict:
    """Provenance of one data file; hashing reads the whole file once."""
    info = inspect_map(path)
    log.info("hashing %s", path)
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(path), "bytes": Path(path).stat().st_size,
            "n_spots": info.n_spots, "shape": list(info.shape)}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("twinplume", "torch", "numpy", "scipy", "h5py", "scikit-learn", "safetensors"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _start_run(run_dir: Path, resume: bool, identity: dict) -> bool:
    """Refuses to mix runs: a resumed run must have the same config, seed and data.

    Returns True when a new run was started (False: resuming).
    """
    run_file = run_dir / "run.json"
    if run_file.exists():
        if not resume:
            raise TrainingError(f"{run_dir.parent} holds an unfinished training; pass --resume to continue it "
                                "or choose another output directory")
        previous = read_json(run_file)
        for key in identity:
            if previous.get(key) != identity[key]:
                raise TrainingError(f"cannot resume in {run_dir.parent}: its '{key}' differs from this run's "
                                    "(same config, seed and data files are needed)")
        log.info("resuming the training in %s", run_dir.parent)
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_file, identity)
    return True


def _preprocessors_or_abandon(checkpoints: Path, new_run: bool, *args) -> dict[str, SpectrumPreprocessor]:
    """The first pass reads every spectrum; if the data is bad, the just-started run is dropped
    so that a corrected file can be trained on without --resume."""
    try:
        return _preprocessors(checkpoints, *args)
    except BaseException:
        if new_run:
            shutil.rmtree(checkpoints, ignore_errors=True)
            parent = checkpoints.parent
            if parent.exists() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def _phase(section: Mapping[str, Any], early_stopping: bool = True, *, n_pairs: int = 0,
           min_steps: int = 0) -> PhaseSettings:
    epochs = (epochs_for(section["epochs"], n_pairs, section["batch_size"], min_steps, section["max_epochs"])
              if n_pairs else section["epochs"])
    return PhaseSettings(epochs, section["learning_rate"],
                         section.get("patience", 0) if early_stopping else 0, section["clip_grad_norm"])


def _preprocessors(checkpoints: Path, paths: Sequence[Path], wavelengths: Mapping[str, np.ndarray],
                   chunk_spots: int, progress: bool, scaling: str) -> dict[str, SpectrumPreprocessor]:
    """Scaler statistics from one pass, kept in the checkpoints so a resume skips the pass."""
    saved = {s: checkpoints / f"preprocess-{s}.safetensors" for s in wavelengths}
    if all(p.exists() for p in saved.values()):
        return {s: SpectrumPreprocessor.from_state(load_state_tree(p)) for s, p in saved.items()}
    fitted = fit_preprocessors(paths, wavelengths, chunk_spots, progress, scaling=scaling)
    for system, preprocessor in fitted.items():
        save_state_tree(saved[system], preprocessor.get_state())
    return fitted


def _batches(paths, preprocessors, config: TransferConfig, batch_size: int, seed: int, shuffle: bool,
             progress: bool) -> PairedBatches:
    data = config["data"]
    return PairedBatches(paths, preprocessors, batch_size, seed=seed, shuffle=shuffle,
                         chunk_spots=data["chunk_spots"], buffer_chunks=data["shuffle_buffer_chunks"],
                         in_memory_max_bytes=data["in_memory_max_mb"] << 20, progress=progress)


def sized_for_data(config: TransferConfig, n_pairs: int, *, vae_fixed: bool = False) -> TransferConfig:
    """`[vae] size = "data"`: the latent size and hidden widths capped by the number of training
    pairs (transfer.estimators.data_sized); the bundle's config.json records the sizes used."""
    if config["vae"]["size"] not in SIZES:
        raise TrainingError(f"[vae] size must be one of {SIZES}, got {config['vae']['size']!r}")
    if config["vae"]["size"] != "data":
        return config
    latent, vae_hidden = data_sized(config["vae"]["latent"], config["vae"]["hidden"], n_pairs)
    _, mlp_hidden = data_sized(latent, config["mlp"]["hidden"], n_pairs)
    overrides = {"mlp": {"hidden": mlp_hidden}}
    if not vae_fixed:
        overrides["vae"] = {"latent": latent, "hidden": vae_hidden}
    if overrides != {"mlp": {"hidden": list(config["mlp"]["hidden"])}}:
        log.info("sizes for %d training pairs: %s", n_pairs, overrides)
    return config.with_overrides(overrides)


def _callback(epoch_callback: EpochCallback | None, phase: str):
    if epoch_callback is None:
        return None
    return lambda epoch, record: epoch_callback(phase, epoch, record)


# -- the secondary part (shared by train and add-secondary) -------------------------

def _train_secondary(model_dir: Path, name: str, train_paths: Sequence[Path], val_paths: Sequence[Path],
                     preprocessors: Mapping[str, SpectrumPreprocessor], vae, config: TransferConfig,
                     device: torch.device, seed: int, checkpoints: Path, resume: bool, progress: bool,
                     epoch_callback: EpochCallback | None) -> tuple[dict, dict]:
    n_secondary = int(preprocessors["secondary"].n_pixels)
    n_primary = int(preprocessors["primary"].n_pixels)
    latent = config["vae"]["latent"]
    train = _batches(train_paths, preprocessors, config, config["mlp"]["batch_size"],
                     derived_seed(seed, name, "batches"), True, progress)
    val = _batches(val_paths, preprocessors, config, VAL_BATCH, 0, False, progress)
    common = dict(train=train, val=val, device=device, seed=seed, checkpoints=checkpoints, resume=resume,
                  progress=progress)
    history: dict[str, list] = {}
    zero = preprocessors["secondary"].scaled_zero()

    def augmented(loss_fn):  # noise and the day-change gain on the secondary inputs
        return with_secondary_augmentation(loss_fn, config["mlp"]["noise"], config["mlp"]["gain_augment"], zero)

    torch.manual_seed(derived_seed(seed, name, "init", "mlp"))
    mlp = build_mlp(n_secondary, config["mlp"], latent)
    loss_fn, val_fn = latent_phase_losses(vae.to(device), config["mlp"]["l2"])
    loss_fn = augmented(loss_fn)
    history["mlp"] = fit_network(f"{name}-mlp", mlp, loss_fn=loss_fn, val_fn=val_fn,
                                 settings=_phase(config["mlp"], n_pairs=train.n_spots,
                                                 min_steps=config["mlp"]["min_steps"]),
                                 epoch_callback=_callback(epoch_callback, "mlp"),
                                 **common)

    decoder = None
    if config["finetune"]["epochs"] > 0:
        composed = ComposedTransfer(copy.deepcopy(mlp), copy.deepcopy(vae.decoder))
        for parameter in composed.parameters():
            parameter.requires_grad_(True)
        loss_fn, val_fn = transfer_phase_losses(config["finetune"]["l2"])
        loss_fn = augmented(loss_fn)
        history["finetune"] = fit_network(
            f"{name}-finetune", composed, loss_fn=loss_fn, val_fn=val_fn,
            settings=_phase(config["finetune"], n_pairs=train.n_spots, min_steps=config["mlp"]["min_steps"]),
            epoch_callback=_callback(epoch_callback, "finetune"),
            **dict(common, train=train.rebatched(config["finetune"]["batch_size"])))
        mlp, decoder = composed.mlp, composed.decoder

    one_step = None
    if config["one_step"]["enabled"] and config["one_step"]["epochs"] > 0:
        torch.manual_seed(derived_seed(seed, name, "init", "one_step"))
        one_step = build_one_step(n_secondary, n_primary, config)
        loss_fn, val_fn = transfer_phase_losses(config["one_step"]["l2"])
        loss_fn = augmented(loss_fn)
        history["one_step"] = fit_network(
            f"{name}-one_step", one_step, loss_fn=loss_fn, val_fn=val_fn,
            settings=_phase(config["one_step"], n_pairs=train.n_spots, min_steps=config["mlp"]["min_steps"]),
            epoch_callback=_callback(epoch_callback, "one_step"),
            **dict(common, train=train.rebatched(config["one_step"]["batch_size"])))

    chunk = config["data"]["chunk_spots"]
    limit = config["baselines"]["max_spots"]
    sample = sample_preprocessed(train_paths, preprocessors, limit, derived_seed(seed, name, "sample"), chunk, progress)
    val_sample = sample_preprocessed(val_paths, preprocessors, max(limit // 2, 1),
                                     derived_seed(seed, name, "val-sample"), chunk, progress)
    baselines, validation, day_change_rse = {}, {}, {}
    if config["baselines"]["models"]:
        baselines, validation, day_change_rse = _fit_baselines(sample, val_sample, preprocessors, config, seed,
                                                               name, progress)
    networks = {"vae_mlp": ComposedTransfer(mlp, decoder if decoder is not None else vae.decoder)}
    if one_step is not None:
        networks["one_step_mlp"] = one_step
    unscale = preprocessors["primary"].inverse_transform
    truth = unscale(val_sample["primary"])
    validated = {key: _predict_network(network, val_sample["secondary"], device) for key, network in networks.items()}
    for key, predicted in validated.items():
        validation[key] = rse(truth, unscale(predicted))
    blend_weight = None
    if "ds" in baselines:
        by_ds = baselines["ds"].predict(val_sample["secondary"])
        blend_weight, blend_rse = kept_blend(validated["vae_mlp"], by_ds, val_sample["primary"], unscale)
        if blend_weight is not None:
            validation["blend"] = blend_rse
    ranking = rank_models(validation)
    recommended = recommend(ranking, day_change_rse) or next(iter(ranking))    # None: no finite RSE at all

    # The statistics the exported live model uses by default (same function, sample and seed),
    # so that `predict` and the live stream give the same novelty.
    novelty = fit_novelty(list(train_paths), preprocessors["secondary"], progress=progress)
    mlp.cpu().eval()
    composed = ComposedTransfer(mlp, (decoder if decoder is not None else copy.deepcopy(vae.decoder)).cpu().eval())
    # The trust score is calibrated on the errors of the model export and predict run by default
    # (transfer.selection.live_model, the rule they apply to the bundle's entry) on the validation
    # map: spectra no model was fitted on (docs/novelty.md). PLS and KNN saw the validation map,
    # but PLS is ranked on a train-only fit.
    trust_model = live_model({"recommended": recommended, "validation_rse": ranking, "day_change_rse": day_change_rse},
                             exportable(baselines, blend_weight))

    def predict(x):
        if trust_model == "blend":
            return blend(_predict_network(composed, x, torch.device("cpu")), baselines["ds"].predict(x), blend_weight)
        if trust_model == "vae_mlp":
            return _predict_network(composed, x, torch.device("cpu"))
        return baselines[trust_model].predict(x)

    trust = fit_trust(list(train_paths), list(val_paths), preprocessors["secondary"], preprocessors["primary"],
                      predict, seed=derived_seed(seed, name, "trust") % (2 ** 31),
                      chunk_spots=chunk, progress=progress,
                      day_change=calibration_day_change(trust_model, config["baselines"]))
    entry = write_secondary(model_dir, name, wavelengths=preprocessors["secondary"].wavelengths,
                            preprocess=preprocessors["secondary"], mlp=mlp,
                            decoder=decoder.cpu() if decoder is not None else None,
                            one_step=one_step.cpu() if one_step is not None else None,
                            baselines=baselines, novelty=novelty, trust=trust)
    entry.update(validation_rse={key: float(value) if np.isfinite(value) else None for key, value in ranking.items()},
                 recommended=recommended, trust_model=trust_model)
    if blend_weight is not None:
        entry["blend_weight"] = float(blend_weight)
    if day_change_rse:
        entry["day_change_rse"] = {key: float(value) for key, value in day_change_rse.items() if np.isfinite(value)}
    warn_if_networks_trail(ranking, recommended)
    return entry, history


def _fit_baselines(sample: Mapping[str, np.ndarray], val: Mapping[str, np.ndarray], preprocessors,
                   config: TransferConfig, seed: int, name: str = "", progress: bool = True
                   ) -> tuple[dict, dict[str, float], dict[str, float]]:
    """The configured baselines, their validation RSE (in counts) and, for the linear ones,
    their validation RSE under the simulated day change ({} where `validation_gain` is 0).

    Every validation RSE comes from a model fitted on the training sample only, so that
    the ranking compares like with like. PLS and KNN are then refitted on training +
    validation as in the paper (section 4.3); DS and PDS keep the training fit, with the
    ridge out of `ridge_alpha_candidates` chosen on validation (GridSearchCV), seen through the
    simulated day change of `validation_gain` (transfer.selection.selection_inputs).
    """
    cfg = config["baselines"]
    unscale = preprocessors["primary"].inverse_transform
    prototypes = baselines_from_config(cfg, preprocessors["secondary"].wavelengths,
                                       preprocessors["primary"].wavelengths, seed=seed, n_fit=len(sample["secondary"]))
    unknown = sorted(set(cfg["models"]) - set(prototypes))
    if unknown:
        raise TrainingError(f"baselines.models: unknown baseline(s) {unknown} (known: {sorted(prototypes)})")
    train = (sample["secondary"], sample["primary"])
    held_out = (val["secondary"], val["primary"])
    changed_val = selection_inputs(cfg, val["secondary"], preprocessors["secondary"].scaled_zero())
    models, validation, day_change = {}, {}, {}
    with Progress(len(cfg["models"]), desc=f"{name}: baselines", unit="model", enabled=progress) as bar:
        for key in cfg["models"]:
            # one library call each (PLS alone takes seconds): the log says what runs and for how long
            with Step(f"fitting the {key.upper()} baseline on {len(train[0])} spectra"):
                models[key], validation[key], changed_rse = _fit_baseline(key, prototypes[key], cfg, train,
                                                                          held_out, unscale, changed_val)
            if changed_rse is not None:
                day_change[key] = changed_rse
            bar.update(1)
    return models, validation, day_change


def _fit_baseline(key: str, prototype, cfg: Mapping[str, Any], train, held_out, unscale, changed_val=None):
    """One baseline fitted, its validation RSE and, for a linear one with `changed_val`, its
    validation RSE under the simulated day change (else None; see _fit_baselines)."""
    fitted = fit_on_validation(key, prototype, cfg, train, held_out, unscale=unscale, selection_inputs=changed_val)
    if fitted.params:
        log.info("%s: %s kept", key.upper(), ", ".join(f"{k} {v:g}" for k, v in fitted.params.items()))
    model = fitted.estimator
    if key in ("pls", "knn"):
        model = clone(prototype).set_params(**fitted.params).fit(np.concatenate([train[0], held_out[0]]),
                                                                 np.concatenate([train[1], held_out[1]]))
    return model, fitted.validation_rse, fitted.day_change_rse


def rank_models(validation: Mapping[str, float]) -> dict[str, float]:
    """{model: validation RSE}, best first (models without a finite RSE last)."""
    return dict(sorted(validation.items(), key=lambda kv: (not np.isfinite(kv[1]), kv[1])))


def warn_if_networks_trail(ranking: Mapping[str, float], recommended: str | None = None) -> list[str]:
    """A warning naming the figures for every baseline that validates better than VAE + MLP
    (`recommended`: the model train recommends; the best-validating one when None)."""
    if "vae_mlp" not in ranking:
        return []
    ours = ranking["vae_mlp"]
    messages = [f"VAE + MLP validates worse than {key.upper()}: validation RSE {ours:.4f} against {value:.4f}"
                for key, value in ranking.items() if key not in ("vae_mlp", "one_step_mlp", "blend") and value < ours]
    for message in messages:
        log.warning("%s", message)
    if messages:
        recommended = recommended or next(iter(ranking))
        log.warning("recommended model: %s (validation RSE %.4f)", recommended, ranking[recommended])
    return messages


def _predict_network(network: torch.nn.Module, X: np.ndarray, device: torch.device, batch: int = 4096) -> np.ndarray:
    network = network.to(device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), batch):
            out.append(network(torch.from_numpy(np.ascontiguousarray(X[start:start + batch])).to(device)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _fit_kmeans(train_paths, val_paths, primary: SpectrumPreprocessor, config: TransferConfig, seed: int,
                progress: bool) -> SpectralClusters:
    """k-means of baseline-corrected primary counts (k by the validation silhouette).

    Counts, not scaled spectra: standard scaling gives every noise-only pixel
    unit variance, and thousands of them drown the few lines that tell the
    phases apart (silhouettes near 0, clusters that follow the noise).
    """
    cfg = config["kmeans"]
    chunk = config["data"]["chunk_spots"]
    preps = {"primary": primary}
    counts = {}
    for key, paths, limit in (("train", train_paths, cfg["max_fit_spots"]), ("val", val_paths, cfg["silhouette_spots"])):
        scaled = sample_preprocessed(paths, preps, limit, derived_seed(seed, "kmeans", key), chunk, progress)
        counts[key] = primary.inverse_transform(scaled["primary"]).astype(np.float64)
    clusters = SpectralClusters(candidates=cfg["k_candidates"], silhouette_spectra=cfg["silhouette_spots"],
                                max_fit_spectra=cfg["max_fit_spots"], seed=seed)
    return clusters.fit(counts["train"], counts["val"])


def _check_pair(train: Path, val: Path):
    train_info, val_info = inspect_map(train), inspect_map(val)
    for system in SYSTEM_NAMES:
        check_axis(val, system, val_info.wavelengths[system], train_info.wavelengths[system], "the training map")
    return train_info, val_info


def _provenance(data: Mapping[str, dict], seed: int, device: torch.device) -> dict:
    return {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "seed": seed,
            "device": str(device), "packages": package_versions(), "data": dict(data)}


# -- entry points ---------------------------------------------------------------------

def train_model(train_path: str | Path, val_path: str | Path, out_dir: str | Path, *,
                config: TransferConfig, device: str = "auto", seed: int = 0, resume: bool = False,
                secondary_name: str = "secondary", progress: bool = True,
                epoch_callback: EpochCallback | None = None) -> TransferBundle:
    """Trains every model on TRAIN (validating on VAL) and writes the bundle to `out_dir`."""
    train_path, val_path, out_dir = Path(train_path), Path(val_path), Path(out_dir)
    check_name(secondary_name)
    if (out_dir / "bundle.json").exists():
        raise TrainingError(f"{out_dir} already holds a trained model; choose another output directory")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "checkpoints").exists():
        raise TrainingError(f"{out_dir} exists and is not empty; choose another output directory")
    torch_device = resolve_device(device)
    make_deterministic()
    train_info, _ = _check_pair(train_path, val_path)
    config = sized_for_data(config, train_info.n_spots)
    checkpoints = out_dir / "checkpoints"
    data = {"train": file_record(train_path), "val": file_record(val_path)}
    new_run = _start_run(checkpoints, resume, {"config": config.to_dict(), "seed": seed,
                                               "train_sha256": data["train"]["sha256"],
                                               "val_sha256": data["val"]["sha256"]})
    preprocessors = _preprocessors_or_abandon(checkpoints, new_run, [train_path], train_info.wavelengths,
                                              config["data"]["chunk_spots"], progress, config["data"]["scaling"])

    torch.manual_seed(derived_seed(seed, "init", "vae"))
    vae = build_vae(train_info.n_pixels("primary"), config["vae"])
    primary_only = {"primary": preprocessors["primary"]}
    train = _batches([train_path], primary_only, config, config["vae"]["batch_size"],
                     derived_seed(seed, "vae", "batches"), True, progress)
    val = _batches([val_path], primary_only, config, VAL_BATCH, 0, False, progress)
    loss_fn, val_fn = vae_phase_losses(config["vae"])
    history: dict[str, Any] = {"vae": fit_network(
        "vae", vae, loss_fn=loss_fn, val_fn=val_fn, train=train, val=val,
        settings=_phase(config["vae"], False, n_pairs=train.n_spots, min_steps=config["vae"]["min_steps"]),
        device=torch_device, seed=seed, checkpoints=checkpoints, resume=resume, progress=progress,
        epoch_callback=_callback(epoch_callback, "vae"))}
    del train, val

    kmeans = _fit_kmeans([train_path], [val_path], preprocessors["primary"], config, seed, progress)
    entry, secondary_history = _train_secondary(out_dir, secondary_name, [train_path], [val_path], preprocessors,
                                                vae, config, torch_device, seed, checkpoints, resume, progress,
                                                epoch_callback)
    vae.cpu()
    write_primary(out_dir, wavelengths=train_info.wavelengths["primary"], preprocess=preprocessors["primary"],
                  vae=vae, kmeans=kmeans)
    history["secondaries"] = {secondary_name: secondary_history}
    provenance = _provenance(data, seed, torch_device)
    write_json(out_dir / "config.json", config.to_dict())
    write_json(out_dir / "history.json", history)
    write_json(out_dir / "provenance.json", {"primary": provenance, "secondaries": {secondary_name: provenance}})
    write_manifest(out_dir, n_primary=train_info.n_pixels("primary"), latent=config["vae"]["latent"],
                   secondaries={secondary_name: entry}, default_secondary=secondary_name)
    shutil.rmtree(checkpoints, ignore_errors=True)
    bundle = load_bundle(out_dir)
    log.info("model %s written to %s", bundle.model_id, out_dir)
    return bundle


def add_secondary(model_dir: str | Path, train_path: str | Path, val_path: str | Path, *, name: str,
                  overrides: Mapping[str, Any] | None = None, max_epochs: int | None = None,
                  device: str = "auto", seed: int = 0, resume: bool = False, progress: bool = True,
                  epoch_callback: EpochCallback | None = None) -> TransferBundle:
    """Trains only the secondary part for another spectrometer against the bundle's VAE."""
    model_dir, train_path, val_path = Path(model_dir), Path(train_path), Path(val_path)
    check_name(name)
    bundle = load_bundle(model_dir)
    if name in bundle.secondaries:
        raise TrainingError(f"{model_dir} already has a secondary system named {name!r}")
    if overrides and "vae" in overrides:
        raise TrainingError("add-secondary trains against the existing VAE: its [vae] settings cannot change")
    config = bundle.config.with_overrides(overrides or {}).with_max_epochs(max_epochs)
    torch_device = resolve_device(device)
    make_deterministic()
    train_info, _ = _check_pair(train_path, val_path)
    config = sized_for_data(config, train_info.n_spots, vae_fixed=True)
    check_axis(train_path, "primary", train_info.wavelengths["primary"], bundle.primary_wavelengths)
    checkpoints = model_dir / "checkpoints" / f"add-{name}"
    data = {"train": file_record(train_path), "val": file_record(val_path)}
    new_run = _start_run(checkpoints, resume, {"config": config.to_dict(), "seed": seed, "name": name,
                                               "train_sha256": data["train"]["sha256"],
                                               "val_sha256": data["val"]["sha256"]})
    secondary = _preprocessors_or_abandon(checkpoints, new_run, [train_path],
                                          {"secondary": train_info.wavelengths["secondary"]},
                                          config["data"]["chunk_spots"], progress,
                                          config["data"]["scaling"])["secondary"]
    preprocessors = {"primary": bundle.primary_preprocess, "secondary": secondary}
    entry, secondary_history = _train_secondary(model_dir, name, [train_path], [val_path], preprocessors,
                                                bundle.vae, config, torch_device, seed, checkpoints, resume,
                                                progress, epoch_callback)
    secondaries = {key: _manifest_entry(bundle, key) for key in bundle.secondaries}
    secondaries[name] = entry
    history = dict(bundle.history)
    history.setdefault("secondaries", {})[name] = secondary_history
    provenance = dict(bundle.provenance)
    provenance.setdefault("secondaries", {})[name] = dict(_provenance(data, seed, torch_device),
                                                         config=config.to_dict())
    write_json(model_dir / "history.json", history)
    write_json(model_dir / "provenance.json", provenance)
    write_manifest(model_dir, n_primary=bundle.n_primary, latent=bundle.config["vae"]["latent"],
                   secondaries=secondaries, default_secondary=bundle.default_secondary)
    shutil.rmtree(checkpoints, ignore_errors=True)
    if (model_dir / "checkpoints").exists() and not any((model_dir / "checkpoints").iterdir()):
        (model_dir / "checkpoints").rmdir()
    return load_bundle(model_dir)


def _manifest_entry(bundle: TransferBundle, name: str) -> dict:
    info = bundle.manifest["secondaries"][name]
    return {key: info[key] for key in ("n_pixels", "mlp_hidden", "fine_tuned", "one_step", "baselines",
                                       "validation_rse", "day_change_rse", "recommended", "trust",
                                       "trust_model", "blend_weight")
            if key in info}
