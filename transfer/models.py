"""The networks of the transfer method (Vrabel et al. 2023, section 4).

All are plain `torch.nn.Module`s built from `nn.Linear` and `nn.LeakyReLU`,
so that the ONNX export and the bundle can reach every piece directly:

- `VAE`: primary spectrum -> (mu, log sigma^2) -> primary spectrum.
  `vae.encoder`, `vae.to_mu`, `vae.to_logvar`, `vae.decoder` are modules.
- `LatentMLP`: secondary spectrum -> latent mu of the VAE.
- `ComposedTransfer`: `mlp` followed by `decoder` (the proposed model, and,
  with freshly initialised parts, the one-step MLP baseline).

Sizes come from the data (pixel counts) and the configuration.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn


def _dense_stack(sizes: Sequence[int], negative_slope: float, activate_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if activate_last or i < len(sizes) - 2:
            layers.append(nn.LeakyReLU(negative_slope))
    return nn.Sequential(*layers)


class Decoder(nn.Sequential):
    """latent -> hidden[::-1] -> n_out; leaky ReLU between layers, linear output."""

    def __init__(self, latent: int, hidden: Sequence[int], n_out: int, negative_slope: float = 0.01):
        sizes = [latent, *reversed(list(hidden)), n_out]
        super().__init__(*_dense_stack(sizes, negative_slope, activate_last=False))
        self.latent = latent
        self.n_out = n_out


class VAE(nn.Module):
    """Variational autoencoder on primary spectra; the bottleneck is linear."""

    def __init__(self, n_in: int, hidden: Sequence[int] = (1024, 512), latent: int = 64,
                 negative_slope: float = 0.01):
        super().__init__()
        if n_in <= 0 or latent <= 0:
            raise ValueError(f"VAE sizes must be positive (n_in={n_in}, latent={latent})")
        hidden = list(hidden)
        self.n_in = n_in
        self.latent = latent
        self.encoder = _dense_stack([n_in, *hidden], negative_slope, activate_last=True)
        self.to_mu = nn.Linear(hidden[-1], latent)
        self.to_logvar = nn.Linear(hidden[-1], latent)
        self.decoder = Decoder(latent, hidden, n_in, negative_slope)

    #: log sigma^2 is clipped to this range. A runaway value made the sampled z
    #: enormous and the loss spike or overflow (seen at learning rates of 3e-4 to 1e-3);
    #: sigma above e^2 is never useful against an N(0, 1) prior.
    LOGVAR_RANGE = (-20.0, 4.0)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mu(h), torch.clamp(self.to_logvar(h), *self.LOGVAR_RANGE)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + noise * torch.exp(0.5 * logvar)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (reconstruction from a sampled z, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator) if self.training else mu
        return self.decoder(z), mu, logvar


class LatentMLP(nn.Sequential):
    """secondary spectrum -> hidden -> latent; leaky ReLU between layers, linear output."""

    def __init__(self, n_in: int, hidden: Sequence[int] = (128, 512), latent: int = 64,
                 negative_slope: float = 0.01):
        if n_in <= 0 or latent <= 0:
            raise ValueError(f"MLP sizes must be positive (n_in={n_in}, latent={latent})")
        super().__init__(*_dense_stack([n_in, *hidden, latent], negative_slope, activate_last=False))
        self.n_in = n_in
        self.latent = latent


class ComposedTransfer(nn.Module):
    """secondary -> `mlp` -> latent -> `decoder` -> primary (all in scaled units)."""

    def __init__(self, mlp: LatentMLP, decoder: Decoder):
        super().__init__()
        if mlp.latent != decoder.latent:
            raise ValueError(f"MLP output ({mlp.latent}) does not match decoder input ({decoder.latent})")
        self.mlp = mlp
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.mlp(x))


def build_vae(n_primary: int, vae_config: dict) -> VAE:
    return VAE(n_primary, vae_config["hidden"], vae_config["latent"], vae_config["negative_slope"])


def build_mlp(n_secondary: int, mlp_config: dict, latent: int) -> LatentMLP:
    return LatentMLP(n_secondary, mlp_config["hidden"], latent, mlp_config["negative_slope"])


def build_one_step(n_secondary: int, n_primary: int, config) -> ComposedTransfer:
    """The one-step MLP: a fresh copy of the MLP + decoder architecture."""
    vae = config["vae"]
    return ComposedTransfer(
        build_mlp(n_secondary, config["mlp"], vae["latent"]),
        Decoder(vae["latent"], vae["hidden"], n_primary, vae["negative_slope"]),
    )


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) summed over latent dimensions, averaged over the batch."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


def l2_penalty(modules: Iterable[nn.Module]) -> torch.Tensor:
    """Sum of squared weights of every Linear layer (biases excluded, as in Keras' kernel L2)."""
    total = None
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, nn.Linear):
                term = layer.weight.pow(2).sum()
                total = term if total is None else total + term
    if total is None:
        raise ValueError("no Linear layers to regularise")
    return total


def cyclical_kl_weight(progress: float, *, kl_max: float, cycles: int, ramp_fraction: float) -> float:
    """Cyclical linear annealing (Fu et al. 2019).

    `progress` in [0, 1] is the fraction of the whole training done. Training is
    split into `cycles` equal cycles; in each the weight rises linearly from 0
    to `kl_max` during the first `ramp_fraction` of the cycle and then stays.
    """
    progress = min(max(progress, 0.0), 1.0)
    if progress >= 1.0:
        return kl_max
    within = (progress * cycles) % 1.0
    return kl_max * min(1.0, within / ramp_fraction)


def vae_loss(vae: VAE, x: torch.Tensor, kl_weight: float, l2: float,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE + kl_weight * KL / n_features + l2 * ||W||^2.

    The KL term is divided by the number of features so that, with the
    per-element MSE, the pair keeps the ratio of the usual summed ELBO; the
    paper's weight of 0.5 is then a moderate pull towards N(0, I).
    """
    recon, mu, logvar = vae(x, generator)
    mse = torch.mean((recon - x) ** 2)
    kl = kl_divergence(mu, logvar)
    loss = mse + kl_weight * kl / x.shape[1]
    if l2 > 0:
        loss = loss + l2 * l2_penalty([vae])
    return loss, {"mse": float(mse.detach()), "kl": float(kl.detach())}


def regression_loss(model: nn.Module, x: torch.Tensor, target: torch.Tensor, l2: float
                    ) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE + l2 * ||W||^2 for the MLP, the composed model and the one-step MLP."""
    mse = torch.mean((model(x) - target) ** 2)
    loss = mse + l2 * l2_penalty([model]) if l2 > 0 else mse
    return loss, {"mse": float(mse.detach())}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
