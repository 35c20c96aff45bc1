"""The networks as scikit-learn estimators on preprocessed arrays.

`VAEMLPTransfer` (VAE on primary spectra, MLP secondary -> the VAE's mu, optional
end-to-end fine-tuning) and `OneStepMLPTransfer` (the same MLP + decoder shape,
trained end to end) have the baselines' interface: ``fit(X_secondary, X_primary)``,
``predict(X_secondary)``, ``get_params``/``set_params``, ``sklearn.base.clone``. The
torch modules are built in ``fit`` from the data's pixel counts and the parameters,
and trained by `transfer.train.fit_network` (the loop `libs-transfer train` uses).

Early stopping watches a validation set: ``fit(..., validation=(Xs, Xp))``, or else a
seeded ``validation_fraction`` of the training pairs held out. For small paired maps
three things keep the networks from collapsing (docs/transfer.md, measured):

- ``size="data"`` caps the latent size and the hidden widths by the number of
  training pairs (``latent <= n / 16``, widths ``<= n / 2``, never below 8 and 32);
- ``noise`` adds Gaussian noise of that standard deviation (scaled units) to the
  secondary inputs of every training batch, a cheap augmentation;
- ``gain_augment`` multiplies the secondary's counts by a random smooth gain curve
  (another day's spectrometer response; `with_gain_augmentation`), which needs
  ``fit(..., secondary_zero=...)``;
- ``l2`` (weight decay as in the paper's loss) and early stopping on validation;
- ``min_steps``: every phase runs at least that many optimiser steps (more epochs
  when an epoch is only a few batches), early stopping still applying; ``max_epochs``
  (> 0) caps every phase's epochs, those ``min_steps`` adds included.
"""
from __future__ import annotations

import copy
import logging

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin

from transfer.data import ArrayBatches
from transfer.day_change import legendre_basis
from transfer.models import VAE, ComposedTransfer, Decoder, LatentMLP
from transfer.preprocess import SpectraError, check_spectra
from transfer.train import (PhaseSettings, derived_seed, fit_network, latent_phase_losses,
                            transfer_phase_losses, vae_phase_losses)

log = logging.getLogger(__name__)

SIZES = ("fixed", "data")


def data_sized(latent: int, hidden, n_pairs: int) -> tuple[int, list[int]]:
    """Latent size and hidden widths capped by the number of training pairs."""
    latent = int(min(latent, max(8, n_pairs // 16)))
    hidden = [int(min(h, max(32, n_pairs // 2))) for h in hidden]
    return latent, hidden


def epochs_for(epochs: int, n_pairs: int, batch_size: int, min_steps: int, max_epochs: int = 0) -> int:
    """At least `min_steps` optimiser steps: on a few hundred pairs an epoch is a handful of
    steps, and a fixed epoch count leaves the networks near their initialisation. A cap
    `max_epochs` > 0 (`--max-epochs`) bounds the result, `min_steps` or not."""
    steps_per_epoch = max(1, -(-int(n_pairs) // int(batch_size)))
    epochs = max(int(epochs), -(-int(min_steps) // steps_per_epoch))
    return min(epochs, int(max_epochs)) if int(max_epochs) > 0 else epochs


def with_input_noise(loss_fn, noise: float):
    """The loss with Gaussian noise on the secondary inputs (training batches only)."""
    if noise <= 0:
        return loss_fn

    def noisy(model, batch, progress, generator):
        x = batch["secondary"]
        jitter = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return loss_fn(model, dict(batch, secondary=x + noise * jitter), progress, generator)
    return noisy


def with_gain_augmentation(loss_fn, amplitude: float, secondary_zero):
    """The loss with a random smooth gain curve on the secondary's counts (training batches only).

    Another day's spectrometer response (`transfer.day_change`): each training spectrum's
    counts are multiplied by 1 + a0 + a1 P1(t) + a2 P2(t) (every a ~ N(0, amplitude^2)), drawn
    anew for every batch, and the paired primary is
    left as measured, so the network learns not to read the secondary's response as chemistry
    (docs/transfer.md, "Day-change augmentation"). `secondary_zero` is the scaled value of zero
    counts per pixel (-mean / scale of the secondary's scaler): the gain multiplies counts, not
    centred values (a gain about the mean spectrum did not help)."""
    if amplitude <= 0:
        return loss_fn
    if secondary_zero is None:
        raise ValueError("gain augmentation needs secondary_zero, the scaled value of zero counts per pixel")
    zero = torch.as_tensor(np.asarray(secondary_zero, np.float32)).reshape(-1)
    basis = torch.from_numpy(legendre_basis(zero.numel()))              # [3, n_secondary]

    def augmented(model, batch, progress, generator):
        x = batch["secondary"]
        a = amplitude * torch.randn((x.shape[0], 3), generator=generator, device=x.device, dtype=x.dtype)
        gain = 1.0 + a @ basis.to(x)
        z = zero.to(x)
        return loss_fn(model, dict(batch, secondary=z + gain * (x - z)), progress, generator)
    return augmented


def with_secondary_augmentation(loss_fn, noise: float, gain_augment: float, secondary_zero):
    """Noise, then the gain curve: what every phase that reads the secondary trains with
    (these estimators and `libs-transfer train` alike)."""
    return with_gain_augmentation(with_input_noise(loss_fn, float(noise)), float(gain_augment), secondary_zero)


def _secondary_augmentation(loss_fn, estimator):
    return with_secondary_augmentation(loss_fn, estimator.noise, estimator.gain_augment,
                                       getattr(estimator, "secondary_zero_", None))


class _NetworkTransfer(RegressorMixin, BaseEstimator):
    """Shared fitting plumbing; subclasses build and train their modules in `_fit`."""

    def _split(self, X_secondary, X_primary, validation):
        Xs = check_spectra(X_secondary, name="secondary spectra").astype(np.float32)
        Xp = check_spectra(X_primary, name="primary spectra").astype(np.float32)
        if Xs.shape[0] != Xp.shape[0]:
            raise SpectraError(f"{Xs.shape[0]} secondary spectra but {Xp.shape[0]} primary ones: "
                               "pairs must match row by row")
        if validation is not None:
            vs = check_spectra(validation[0], Xs.shape[1], name="validation secondary spectra")
            vp = check_spectra(validation[1], Xp.shape[1], name="validation primary spectra")
            return (Xs, Xp), (vs.astype(np.float32), vp.astype(np.float32))
        n_val = int(round(self.validation_fraction * Xs.shape[0]))
        if not 1 <= n_val < Xs.shape[0] - 1:
            raise SpectraError(f"{type(self).__name__}: {Xs.shape[0]} pairs cannot spare a validation "
                               f"fraction of {self.validation_fraction}; pass validation=(Xs, Xp)")
        order = np.random.default_rng(self.seed).permutation(Xs.shape[0])
        held, kept = np.sort(order[:n_val]), np.sort(order[n_val:])
        return (Xs[kept], Xp[kept]), (Xs[held], Xp[held])

    def _run(self, phase, module, loss_fn, val_fn, train, val, epochs, *, learning_rate=None, patience=None):
        device = torch.device(self.device)
        epochs = epochs_for(epochs, train.n_spots, int(self.batch_size), int(self.min_steps), int(self.max_epochs))
        settings = PhaseSettings(int(epochs), float(learning_rate or self.learning_rate),
                                 int(self.patience if patience is None else patience), float(self.clip_grad_norm))
        return fit_network(phase, module, loss_fn=loss_fn, val_fn=val_fn, train=train, val=val,
                           settings=settings, device=device, seed=int(self.seed), progress=False)

    def fit(self, X_secondary, X_primary, *, validation=None, secondary_zero=None):
        """``secondary_zero``: the scaled value of zero counts per secondary pixel (-mean / scale
        of its scaler), needed when ``gain_augment`` > 0."""
        if self.size not in SIZES:
            raise ValueError(f"{type(self).__name__}: size must be one of {SIZES}, got {self.size!r}")
        (xs, xp), (vs, vp) = self._split(X_secondary, X_primary, validation)
        self.n_secondary_, self.n_primary_ = xs.shape[1], xp.shape[1]
        if float(self.gain_augment) > 0:
            if secondary_zero is None or np.size(secondary_zero) != xs.shape[1]:
                raise ValueError(f"{type(self).__name__}: gain_augment={self.gain_augment} needs secondary_zero, "
                                 f"the scaled value of zero counts for each of the {xs.shape[1]} secondary pixels")
            self.secondary_zero_ = np.asarray(secondary_zero, np.float32).reshape(-1)
        train = ArrayBatches({"secondary": xs, "primary": xp}, int(self.batch_size),
                             seed=derived_seed(self.seed, type(self).__name__, "batches"))
        val = ArrayBatches({"secondary": vs, "primary": vp}, 1024, shuffle=False)
        self.history_ = self._fit(train, val, n_pairs=xs.shape[0])
        return self

    def _sizes(self, n_pairs: int) -> tuple[int, list[int], list[int]]:
        latent, vae_hidden = int(self.latent), [int(h) for h in self.vae_hidden]
        mlp_hidden = [int(h) for h in self.mlp_hidden]
        if self.size == "data":
            latent, vae_hidden = data_sized(latent, vae_hidden, n_pairs)
            _, mlp_hidden = data_sized(latent, mlp_hidden, n_pairs)
        self.latent_, self.vae_hidden_, self.mlp_hidden_ = latent, vae_hidden, mlp_hidden
        return latent, vae_hidden, mlp_hidden

    def predict(self, X_secondary) -> np.ndarray:
        if not hasattr(self, "network_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet")
        X = check_spectra(X_secondary, self.n_secondary_, name="secondary spectra", allow_1d=True)
        network = self.network_.cpu().eval()
        out = []
        with torch.no_grad():
            for start in range(0, X.shape[0], 4096):
                batch = torch.from_numpy(np.ascontiguousarray(X[start:start + 4096], dtype=np.float32))
                out.append(network(batch).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_primary_), np.float32)


class VAEMLPTransfer(_NetworkTransfer):
    """VAE + MLP (Vrabel et al. 2023): primary VAE, MLP onto its mu, optional fine-tuning.

    ``patience`` stops the MLP and fine-tuning phases; ``vae_patience`` the VAE (0: as
    `libs-transfer train`, all ``vae_epochs``, whose KL weight cycles). Fitted attributes: ``vae_``, ``mlp_``, ``network_`` (MLP + decoder, the predictor),
    ``history_`` (per phase, per epoch), ``latent_``/``vae_hidden_``/``mlp_hidden_``.
    """

    def __init__(self, *, vae_hidden=(1024, 512), latent: int = 64, mlp_hidden=(128, 512),
                 vae_epochs: int = 50, mlp_epochs: int = 100, finetune_epochs: int = 0,
                 learning_rate: float = 1e-4, finetune_learning_rate: float = 1e-5, batch_size: int = 128,
                 l2: float = 1e-6, kl_max: float = 0.5, kl_cycles: int = 4, negative_slope: float = 0.01,
                 patience: int = 10, vae_patience: int = 0, clip_grad_norm: float = 1.0, noise: float = 0.0,
                 gain_augment: float = 0.0, size: str = "fixed", min_steps: int = 0, max_epochs: int = 0,
                 validation_fraction: float = 0.15,
                 seed: int = 0, device: str = "cpu"):
        self.vae_hidden = vae_hidden
        self.latent = latent
        self.mlp_hidden = mlp_hidden
        self.vae_epochs = vae_epochs
        self.mlp_epochs = mlp_epochs
        self.finetune_epochs = finetune_epochs
        self.learning_rate = learning_rate
        self.finetune_learning_rate = finetune_learning_rate
        self.batch_size = batch_size
        self.l2 = l2
        self.kl_max = kl_max
        self.kl_cycles = kl_cycles
        self.negative_slope = negative_slope
        self.patience = patience
        self.vae_patience = vae_patience
        self.clip_grad_norm = clip_grad_norm
        self.noise = noise
        self.gain_augment = gain_augment
        self.size = size
        self.min_steps = min_steps
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device

    def _fit(self, train, val, n_pairs):
        latent, vae_hidden, mlp_hidden = self._sizes(n_pairs)
        history = {}
        torch.manual_seed(derived_seed(self.seed, "init", "vae"))
        vae = VAE(self.n_primary_, vae_hidden, latent, self.negative_slope)
        loss_fn, val_fn = vae_phase_losses({"kl_max": self.kl_max, "kl_cycles": self.kl_cycles,
                                            "kl_ramp_fraction": 0.5, "l2": self.l2})
        history["vae"] = self._run("vae", vae, loss_fn, val_fn, train, val, self.vae_epochs,
                                   patience=self.vae_patience)
        torch.manual_seed(derived_seed(self.seed, "init", "mlp"))
        mlp = LatentMLP(self.n_secondary_, mlp_hidden, latent, self.negative_slope)
        loss_fn, val_fn = latent_phase_losses(vae, float(self.l2))
        history["mlp"] = self._run("mlp", mlp, _secondary_augmentation(loss_fn, self), val_fn, train, val,
                                   self.mlp_epochs)
        network = ComposedTransfer(mlp, vae.decoder)
        if int(self.finetune_epochs) > 0:
            network = ComposedTransfer(copy.deepcopy(mlp), copy.deepcopy(vae.decoder))
            for parameter in network.parameters():
                parameter.requires_grad_(True)
            loss_fn, val_fn = transfer_phase_losses(float(self.l2))
            history["finetune"] = self._run("finetune", network, _secondary_augmentation(loss_fn, self), val_fn,
                                            train, val, self.finetune_epochs,
                                            learning_rate=self.finetune_learning_rate)
        self.vae_, self.mlp_, self.network_ = vae.cpu().eval(), network.mlp.cpu().eval(), network.cpu().eval()
        return history

    def best_reconstruction(self, X_primary, *, steps: int = 200, learning_rate: float = 0.05,
                            batch: int = 2048) -> np.ndarray:
        """The closest the fitted decoder comes to each primary spectrum (scaled, as fitted): its
        output at the latent z that minimises the squared error, found by Adam from the encoder's mu.

        Whatever the MLP learns, VAE + MLP cannot transfer a spectrum better than this, so on a
        test map the RSE of these reconstructions is the model's floor (the decoder floor of
        docs/transfer_suite.md): above a linear baseline's RSE, no MLP onto this latent space
        can reach that baseline."""
        if not hasattr(self, "vae_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet")
        X = check_spectra(X_primary, self.n_primary_, name="primary spectra", allow_1d=True)
        vae = self.vae_.cpu().eval()
        # only z is searched: the weights are frozen meanwhile, and left as they were found
        frozen = [parameter.requires_grad for parameter in vae.parameters()]
        for parameter in vae.parameters():
            parameter.requires_grad_(False)
        out = []
        try:
            for start in range(0, X.shape[0], batch):
                target = torch.from_numpy(np.ascontiguousarray(X[start:start + batch], dtype=np.float32))
                with torch.no_grad():
                    z0 = vae.encode(target)[0]
                z = z0.clone().requires_grad_(True)
                optimiser = torch.optim.Adam([z], lr=learning_rate)
                for _ in range(int(steps)):
                    optimiser.zero_grad()
                    # summed over spectra: each z only moves its own spectrum's error
                    loss = ((vae.decoder(z) - target) ** 2).sum()
                    loss.backward()
                    optimiser.step()
                with torch.no_grad():
                    best, start_point = vae.decoder(z), vae.decoder(z0)
                    # Adam from mu never ends worse than mu itself, spectrum by spectrum
                    worse = ((best - target) ** 2).sum(1) > ((start_point - target) ** 2).sum(1)
                    best[worse] = start_point[worse]
                out.append(best.numpy())
        finally:
            for parameter, requires_grad in zip(vae.parameters(), frozen):
                parameter.requires_grad_(requires_grad)
        return np.concatenate(out) if out else np.zeros((0, self.n_primary_), np.float32)


class OneStepMLPTransfer(_NetworkTransfer):
    """The one-step MLP baseline: MLP + decoder shape, trained end to end from scratch."""

    def __init__(self, *, vae_hidden=(1024, 512), latent: int = 64, mlp_hidden=(128, 512), epochs: int = 100,
                 learning_rate: float = 1e-4, batch_size: int = 128, l2: float = 1e-6,
                 negative_slope: float = 0.01, patience: int = 10, clip_grad_norm: float = 1.0,
                 noise: float = 0.0, gain_augment: float = 0.0, size: str = "fixed", min_steps: int = 0,
                 max_epochs: int = 0,
                 validation_fraction: float = 0.15, seed: int = 0, device: str = "cpu"):
        self.vae_hidden = vae_hidden
        self.latent = latent
        self.mlp_hidden = mlp_hidden
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.l2 = l2
        self.negative_slope = negative_slope
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        self.noise = noise
        self.gain_augment = gain_augment
        self.size = size
        self.min_steps = min_steps
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.seed = seed
        self.device = device

    def _fit(self, train, val, n_pairs):
        latent, vae_hidden, mlp_hidden = self._sizes(n_pairs)
        torch.manual_seed(derived_seed(self.seed, "init", "one_step"))
        network = ComposedTransfer(LatentMLP(self.n_secondary_, mlp_hidden, latent, self.negative_slope),
                                   Decoder(latent, vae_hidden, self.n_primary_, self.negative_slope))
        loss_fn, val_fn = transfer_phase_losses(float(self.l2))
        history = {"one_step": self._run("one_step", network, _secondary_augmentation(loss_fn, self), val_fn,
                                         train, val, self.epochs)}
        self.network_ = network.cpu().eval()
        return history


__all__ = ["VAEMLPTransfer", "OneStepMLPTransfer", "data_sized", "epochs_for", "with_gain_augmentation",
           "with_input_noise", "with_secondary_augmentation"]
