"""Hyper-parameter search over the paper's space (section 4), with Optuna and Hyperband.

Two stages, as the paper tuned its two networks: first the VAE (layer sizes,
bottleneck, learning rate) on the validation reconstruction error, then the
MLP (layer sizes, learning rate) against the best VAE on the validation
transfer error in scaled units. Each trial reports its validation loss after
every epoch and the Hyperband pruner stops unpromising trials early. The
result is a full configuration, ready for `libs-transfer train --config`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import optuna
import torch

from acquisition.shared.progress import Progress
from acquisition.shared.systems import SYSTEM_NAMES
from transfer.config import TransferConfig
from transfer.data import PairedBatches, check_axis, fit_preprocessors, inspect_map
from transfer.models import build_mlp, build_vae
from transfer.train import (PhaseSettings, derived_seed, fit_network, latent_phase_losses, make_deterministic,
                            resolve_device, vae_phase_losses)

log = logging.getLogger(__name__)


def _study(seed: int, config: TransferConfig, max_epochs: int) -> optuna.Study:
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                            reduction_factor=config["search"]["reduction_factor"])
    return optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)


def _pruning_callback(trial: optuna.Trial, key: str):
    def report(epoch: int, record: dict) -> None:
        trial.report(record[key], epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return report


def run_search(train_path: str | Path, val_path: str | Path, *, config: TransferConfig, trials: int | None = None,
               max_epochs: int | None = None, device: str = "auto", seed: int = 0, progress: bool = True) -> dict:
    """Returns {"config": best full config dict, "vae": {...}, "mlp": {...}}."""
    space = config["search"]
    trials = trials if trials is not None else space["trials"]
    max_epochs = max_epochs if max_epochs is not None else space["max_epochs"]
    if trials < 1 or max_epochs < 1:
        raise ValueError(f"search needs at least one trial and one epoch (got {trials}, {max_epochs})")
    torch_device = resolve_device(device)
    make_deterministic()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    train_info, val_info = inspect_map(train_path), inspect_map(val_path)
    for system in SYSTEM_NAMES:
        check_axis(val_path, system, val_info.wavelengths[system], train_info.wavelengths[system], "the training map")
    data = config["data"]
    preprocessors = fit_preprocessors([train_path], train_info.wavelengths, data["chunk_spots"], progress,
                                      scaling=data["scaling"])
    batches = dict(chunk_spots=data["chunk_spots"], buffer_chunks=data["shuffle_buffer_chunks"],
                   in_memory_max_bytes=data["in_memory_max_mb"] << 20)
    train = PairedBatches([train_path], preprocessors, 128, seed=derived_seed(seed, "search"), **batches)
    val = PairedBatches([val_path], preprocessors, 1024, shuffle=False, **batches)
    n_primary, n_secondary = train_info.n_pixels("primary"), train_info.n_pixels("secondary")

    best_vae: dict[str, Any] = {"value": float("inf"), "model": None}

    def vae_objective(trial: optuna.Trial) -> float:
        vae_cfg = dict(config["vae"], hidden=[trial.suggest_categorical("vae_first", space["vae_first"]),
                                              trial.suggest_categorical("vae_second", space["vae_second"])],
                       latent=trial.suggest_categorical("latent", space["latent"]),
                       learning_rate=trial.suggest_categorical("vae_learning_rate", space["learning_rate"]),
                       epochs=max_epochs)
        torch.manual_seed(derived_seed(seed, "search", "vae", trial.number))
        vae = build_vae(n_primary, vae_cfg)
        loss_fn, val_fn = vae_phase_losses(vae_cfg)
        history = fit_network(f"vae-{trial.number}", vae, loss_fn=loss_fn, val_fn=val_fn,
                              train=train.rebatched(vae_cfg["batch_size"]), val=val,
                              settings=PhaseSettings(max_epochs, vae_cfg["learning_rate"], 0, vae_cfg["clip_grad_norm"]),
                              device=torch_device,
                              seed=seed, progress=False, epoch_callback=_pruning_callback(trial, "val_loss"))
        value = history[-1]["val_loss"]
        if value < best_vae["value"]:
            best_vae.update(value=value, model=copy.deepcopy(vae), config=vae_cfg)
        return value

    def mlp_objective(trial: optuna.Trial) -> float:
        vae = best_vae["model"]
        mlp_cfg = dict(config["mlp"], hidden=[trial.suggest_categorical("mlp_first", space["mlp_first"]),
                                              trial.suggest_categorical("mlp_second", space["mlp_second"])],
                       learning_rate=trial.suggest_categorical("mlp_learning_rate", space["learning_rate"]))
        torch.manual_seed(derived_seed(seed, "search", "mlp", trial.number))
        mlp = build_mlp(n_secondary, mlp_cfg, vae.latent)
        loss_fn, val_fn = latent_phase_losses(vae, mlp_cfg["l2"])
        history = fit_network(f"mlp-{trial.number}", mlp, loss_fn=loss_fn, val_fn=val_fn,
                              train=train.rebatched(mlp_cfg["batch_size"]), val=val,
                              settings=PhaseSettings(max_epochs, mlp_cfg["learning_rate"], 0, mlp_cfg["clip_grad_norm"]),
                              device=torch_device,
                              seed=seed, progress=False,
                              epoch_callback=_pruning_callback(trial, "val_transfer_mse"))
        return min(r["val_transfer_mse"] for r in history)

    results = {}
    for stage, objective in (("vae", vae_objective), ("mlp", mlp_objective)):
        study = _study(derived_seed(seed, "search", stage) % (2 ** 31), config, max_epochs)
        bar = Progress(trials, desc=f"search {stage}", unit="trial", enabled=progress)
        study.optimize(objective, n_trials=trials, callbacks=[lambda s, t: bar.update(1)])
        bar.close()
        completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            raise RuntimeError(f"search: no {stage} trial completed")
        results[stage] = {"best_value": study.best_value, "params": study.best_params,
                          "completed": len(completed),
                          "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)}
        log.info("search %s: best %.5g with %s", stage, study.best_value, study.best_params)

    vae_params, mlp_params = results["vae"]["params"], results["mlp"]["params"]
    best = config.with_overrides({
        "vae": {"hidden": [vae_params["vae_first"], vae_params["vae_second"]], "latent": vae_params["latent"],
                "learning_rate": vae_params["vae_learning_rate"]},
        "mlp": {"hidden": [mlp_params["mlp_first"], mlp_params["mlp_second"]],
                "learning_rate": mlp_params["mlp_learning_rate"]},
    })
    return {"config": best.to_dict(), **results}
