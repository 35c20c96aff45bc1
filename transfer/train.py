"""The training loop: one short explicit loop for every network, with checkpoints.

`fit_network` trains one network for one phase ("vae", "mlp", "finetune",
"one_step"): Adam, a loss function given by the caller, validation after
each epoch, optional early stopping that restores the best weights, a
checkpoint after every epoch and resumption from the last one. The order of
batches and the VAE's sampling noise depend only on (seed, phase, epoch), so
a run is deterministic per seed on CPU and a resumed run continues exactly
where the interrupted one stopped.

The phases are put together into a bundle by `transfer.pipeline`.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from acquisition.shared.progress import Progress
from transfer.bundle import (BundleError, load_module, load_optimizer, read_json, save_module,
                             save_optimizer, write_json)
from transfer.data import PairedBatches
from transfer.models import VAE, cyclical_kl_weight, regression_loss, vae_loss

log = logging.getLogger(__name__)

Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[nn.Module, Batch, float, torch.Generator], tuple[torch.Tensor, dict[str, float]]]
ValFn = Callable[[nn.Module, Iterable[Batch]], dict[str, float]]


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {name}: CUDA is not available on this machine (use cpu or auto)")
    return device


def derived_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed that depends on `seed` and the labels, stable across runs and platforms."""
    text = ":".join([str(seed), *map(str, parts)]).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def make_deterministic() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


# -- checkpoints ------------------------------------------------------------------

class PhaseCheckpoint:
    """`ROOT/<phase>/epoch-NNNN/` holds weights, best weights, optimizer and state.json.

    A checkpoint directory is written under a temporary name and renamed when
    complete, so an interruption never leaves a half-written checkpoint.
    """

    def __init__(self, root: Path, phase: str):
        self.dir = Path(root) / phase

    def latest(self) -> Path | None:
        found = sorted(p for p in self.dir.glob("epoch-*") if p.is_dir() and not p.name.endswith(".tmp"))
        return found[-1] if found else None

    def save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
             best: nn.Module | None, state: dict) -> None:
        final = self.dir / f"epoch-{epoch:04d}"
        tmp = self.dir / f"epoch-{epoch:04d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_module(tmp / "model.safetensors", model)
        if best is not None:
            save_module(tmp / "best.safetensors", best)
        state = dict(state, optimizer=save_optimizer(tmp / "optimizer.safetensors", optimizer))
        write_json(tmp / "state.json", state)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in self.dir.glob("epoch-*"):
            if old != final:
                shutil.rmtree(old, ignore_errors=True)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, best: nn.Module | None) -> dict | None:
        latest = self.latest()
        if latest is None:
            return None
        try:
            state = read_json(latest / "state.json")
            load_module(latest / "model.safetensors", model)
            load_optimizer(latest / "optimizer.safetensors", optimizer, state["optimizer"])
            if best is not None and (latest / "best.safetensors").exists():
                load_module(latest / "best.safetensors", best)
        except (BundleError, KeyError, ValueError) as exc:
            raise TrainingError(f"checkpoint {latest} cannot be resumed: {exc}") from None
        return state


# -- the loop -----------------------------------------------------------------------

@dataclass
class PhaseSettings:
    epochs: int
    learning_rate: float
    patience: int = 0            # 0: no early stopping, keep the last weights
    clip_grad_norm: float = 0.0  # > 0: clip the global gradient norm


def _to_device(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def fit_network(phase: str, model: nn.Module, *, loss_fn: LossFn, val_fn: ValFn,
                train: PairedBatches, val: PairedBatches, settings: PhaseSettings,
                device: torch.device, seed: int, checkpoints: Path | None = None,
                resume: bool = False, progress: bool = True,
                epoch_callback: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Trains `model` in place and returns its per-epoch history."""
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    best = copy.deepcopy(model) if settings.patience > 0 else None
    checkpoint = PhaseCheckpoint(checkpoints, phase) if checkpoints is not None else None
    history: list[dict] = []
    start, best_val, bad_epochs, finished = 0, math.inf, 0, False
    if resume and checkpoint is not None:
        state = checkpoint.restore(model, optimizer, best)
        if state is not None:
            history, start = state["history"], state["epoch"] + 1
            best_val, bad_epochs, finished = state["best_val"], state["bad_epochs"], state["finished"]
            log.info("%s: resuming after epoch %d", phase, state["epoch"] + 1)

    epochs = settings.epochs
    bar = Progress(epochs, desc=phase, unit="epoch", initial=min(start, epochs), enabled=progress)
    epoch = start
    while epoch < epochs and not finished:
        generator = torch.Generator(device=device).manual_seed(derived_seed(seed, phase, epoch))
        model.train()
        sums: dict[str, float] = {}
        n_seen, started = 0, time.perf_counter()
        n_batches = max(len(train), 1)
        for index, batch in enumerate(train.epoch(epoch)):
            tensors = _to_device(batch, device)
            loss, parts = loss_fn(model, tensors, (epoch + index / n_batches) / epochs, generator)
            if not torch.isfinite(loss):
                raise TrainingError(f"{phase}: the loss became {float(loss)} in epoch {epoch + 1}, "
                                    "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), settings.clip_grad_norm)
            optimizer.step()
            k = next(iter(tensors.values())).shape[0]
            n_seen += k
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value * k
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():
            val_metrics = val_fn(model, (_to_device(b, device) for b in val.epoch(0)))
        record = {"epoch": epoch + 1, **{k: v / max(n_seen, 1) for k, v in sums.items()},
                  **val_metrics, "seconds": seconds, "spectra_per_s": n_seen / max(seconds, 1e-9)}
        history.append(record)
        if settings.patience > 0:
            if record["val_loss"] < best_val:
                best_val, bad_epochs = record["val_loss"], 0
                best.load_state_dict(model.state_dict())
            else:
                bad_epochs += 1
            finished = bad_epochs >= settings.patience
        log.info("%s epoch %d/%d: loss %.5g, val_loss %.5g (%.0f spectra/s)", phase, epoch + 1, epochs,
                 record["loss"], record["val_loss"], record["spectra_per_s"])
        bar.set_postfix(loss=f"{record['loss']:.4g}", val=f"{record['val_loss']:.4g}")
        bar.update(1)
        if checkpoint is not None:
            checkpoint.save(epoch, model, optimizer, best, {
                "phase": phase, "epoch": epoch, "history": history, "best_val": best_val,
                "bad_epochs": bad_epochs, "finished": finished or epoch + 1 >= epochs})
        if epoch_callback is not None:
            epoch_callback(epoch, record)
        epoch += 1
    bar.close()
    if finished and settings.patience > 0:
        log.info("%s: early stop after epoch %d (best val_loss %.5g)", phase, epoch, best_val)
    if best is not None and history:
        model.load_state_dict(best.state_dict())
    model.eval()
    return history


# -- losses of the phases ---------------------------------------------------------

def vae_phase_losses(vae_config: Mapping) -> tuple[LossFn, ValFn]:
    def loss_fn(model, batch, progress, generator):
        weight = cyclical_kl_weight(progress, kl_max=vae_config["kl_max"], cycles=vae_config["kl_cycles"],
                                    ramp_fraction=vae_config["kl_ramp_fraction"])
        loss, parts = vae_loss(model, batch["primary"], weight, vae_config["l2"], generator)
        return loss, {**parts, "kl_weight": weight}

    def val_fn(model, batches):
        # Reconstruction through mu: the KL weight changes along the cycles, so
        # the reconstruction error is the comparable quantity between epochs.
        total, count = 0.0, 0
        for batch in batches:
            x = batch["primary"]
            recon, _, _ = model(x)
            total += float(torch.sum((recon - x) ** 2))
            count += x.numel()
        return {"val_loss": total / max(count, 1)}

    return loss_fn, val_fn


def latent_phase_losses(vae: VAE, l2: float) -> tuple[LossFn, ValFn]:
    """MLP: secondary -> the frozen VAE's mu of the paired primary spectrum."""
    vae.eval()
    for parameter in vae.parameters():
        parameter.requires_grad_(False)

    def target(batch):
        with torch.no_grad():
            return vae.encode(batch["primary"])[0]

    def loss_fn(model, batch, progress, generator):
        return regression_loss(model, batch["secondary"], target(batch), l2)

    def val_fn(model, batches):
        latent_sse, spectrum_sse, n_latent, n_spectrum = 0.0, 0.0, 0, 0
        for batch in batches:
            z = model(batch["secondary"])
            latent_sse += float(torch.sum((z - target(batch)) ** 2))
            spectrum_sse += float(torch.sum((vae.decoder(z) - batch["primary"]) ** 2))
            n_latent += z.numel()
            n_spectrum += batch["primary"].numel()
        return {"val_loss": latent_sse / max(n_latent, 1), "val_transfer_mse": spectrum_sse / max(n_spectrum, 1)}

    return loss_fn, val_fn


def transfer_phase_losses(l2: float) -> tuple[LossFn, ValFn]:
    """End to end secondary -> primary (fine-tuning and the one-step MLP)."""
    def loss_fn(model, batch, progress, generator):
        return regression_loss(model, batch["secondary"], batch["primary"], l2)

    def val_fn(model, batches):
        sse, count = 0.0, 0
        for batch in batches:
            sse += float(torch.sum((model(batch["secondary"]) - batch["primary"]) ** 2))
            count += batch["primary"].numel()
        return {"val_loss": sse / max(count, 1)}

    return loss_fn, val_fn
