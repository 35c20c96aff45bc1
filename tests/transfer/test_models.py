"""The networks: shapes, sizes from data and config, losses and the KL schedule."""

import numpy as np
import pytest
import torch

from transfer.config import default_config
from transfer.models import (VAE, ComposedTransfer, Decoder, LatentMLP, build_mlp, build_one_step, build_vae,
                             count_parameters, cyclical_kl_weight, kl_divergence, l2_penalty, vae_loss)


def test_paper_architecture_from_default_config():
    config = default_config()
    vae = build_vae(4062, config["vae"])
    mlp = build_mlp(3872, config["mlp"], config["vae"]["latent"])
    sizes = [(m.in_features, m.out_features) for m in vae.encoder if isinstance(m, torch.nn.Linear)]
    assert sizes == [(4062, 1024), (1024, 512)]
    assert (vae.to_mu.in_features, vae.to_mu.out_features) == (512, 64)
    assert [(m.in_features, m.out_features) for m in vae.decoder if isinstance(m, torch.nn.Linear)] == \
        [(64, 512), (512, 1024), (1024, 4062)]
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, torch.nn.Linear)] == \
        [(3872, 128), (128, 512), (512, 64)]
    # Leaky ReLU between hidden layers only: bottleneck and outputs are linear.
    assert isinstance(vae.encoder[-1], torch.nn.LeakyReLU)
    assert isinstance(vae.decoder[-1], torch.nn.Linear) and isinstance(mlp[-1], torch.nn.Linear)


def test_shapes_follow_the_data_sizes():
    vae = VAE(300, hidden=(20, 10), latent=4)
    x = torch.randn(7, 300)
    recon, mu, logvar = vae(x)
    assert recon.shape == (7, 300) and mu.shape == (7, 4) and logvar.shape == (7, 4)
    composed = ComposedTransfer(LatentMLP(250, (12, 6), 4), vae.decoder)
    assert composed(torch.randn(5, 250)).shape == (5, 300)


def test_eval_mode_is_deterministic_and_training_mode_samples():
    torch.manual_seed(0)
    vae = VAE(50, (16, 8), 3)
    x = torch.randn(4, 50)
    vae.eval()
    assert torch.equal(vae(x)[0], vae(x)[0])
    vae.train()
    a = vae(x, torch.Generator().manual_seed(1))[0]
    b = vae(x, torch.Generator().manual_seed(2))[0]
    assert not torch.allclose(a, b)


def test_one_step_has_the_composed_architecture_but_fresh_weights():
    config = default_config().with_overrides({"vae": {"hidden": [16, 8], "latent": 4}, "mlp": {"hidden": [6, 5]}})
    torch.manual_seed(0)
    vae = build_vae(40, config["vae"])
    composed = ComposedTransfer(build_mlp(30, config["mlp"], 4), vae.decoder)
    one_step = build_one_step(30, 40, config)
    assert count_parameters(one_step) == count_parameters(composed)
    assert not any(p is q for p in one_step.parameters() for q in vae.parameters())


def test_mlp_and_decoder_latent_sizes_must_agree():
    with pytest.raises(ValueError, match="does not match decoder"):
        ComposedTransfer(LatentMLP(10, (4,), 3), Decoder(5, (4,), 20))


def test_cyclical_annealing_has_four_linear_ramps_to_the_maximum():
    weight = lambda p: cyclical_kl_weight(p, kl_max=0.5, cycles=4, ramp_fraction=0.5)  # noqa: E731
    for start in (0.0, 0.25, 0.5, 0.75):
        assert weight(start) == pytest.approx(0.0)
        assert weight(start + 0.0625) == pytest.approx(0.25)      # halfway up the ramp
        assert weight(start + 0.125) == pytest.approx(0.5)        # top reached at half a cycle
        assert weight(start + 0.2) == pytest.approx(0.5)          # stays there
    assert weight(1.0) == pytest.approx(0.5)


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    zeros = torch.zeros(3, 5)
    assert float(kl_divergence(zeros, zeros)) == pytest.approx(0.0)
    assert float(kl_divergence(torch.ones(3, 5), zeros)) == pytest.approx(2.5)


def test_l2_counts_weights_not_biases():
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(100.0)
    assert float(l2_penalty([layer]).detach()) == pytest.approx(6 * 4.0)


def test_vae_loss_adds_the_weighted_kl():
    torch.manual_seed(0)
    vae = VAE(20, (8,), 2)
    x = torch.randn(6, 20)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain, parts = vae_loss(vae, x, 0.0, 0.0, g())
    weighted, _ = vae_loss(vae, x, 0.5, 0.0, g())
    assert float(plain.detach()) == pytest.approx(parts["mse"], rel=1e-6)
    assert float((weighted - plain).detach()) == pytest.approx(0.5 * parts["kl"] / 20, rel=1e-4)
    assert np.isfinite(float(weighted.detach()))


def test_runaway_log_variance_is_clipped_so_the_loss_stays_finite():
    vae = VAE(30, (8,), 2)
    with torch.no_grad():
        vae.to_logvar.bias.fill_(500.0)       # exp(500) overflows float32
    _, logvar = vae.encode(torch.randn(4, 30))
    assert float(logvar.detach().max()) == VAE.LOGVAR_RANGE[1]
    loss, _ = vae_loss(vae, torch.randn(4, 30), 0.5, 1e-6, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
