"""The training loop on synthetic arrays: loss goes down, determinism, checkpoints, resume."""

import numpy as np
import pytest
import torch

from transfer.data import ArrayBatches
from transfer.models import LatentMLP, VAE
from transfer.train import (PhaseCheckpoint, PhaseSettings, TrainingError, fit_network, resolve_device,
                            transfer_phase_losses, vae_phase_losses)

VAE_CFG = {"kl_max": 0.5, "kl_cycles": 4, "kl_ramp_fraction": 0.5, "l2": 1e-6}


def synthetic_pairs(n=240, n_primary=60, n_secondary=40, seed=0):
    """Paired spectra driven by three hidden factors, like phases mixing on a map."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 3))
    primary = factors @ rng.normal(size=(3, n_primary)) + 0.05 * rng.normal(size=(n, n_primary))
    secondary = factors @ rng.normal(size=(3, n_secondary)) + 0.05 * rng.normal(size=(n, n_secondary))
    return {"primary": primary.astype(np.float32), "secondary": secondary.astype(np.float32)}


def train_vae(seed, epochs=4, checkpoints=None, resume=False, callback=None):
    arrays = synthetic_pairs()
    torch.manual_seed(seed)
    vae = VAE(60, (24, 12), 3)
    loss_fn, val_fn = vae_phase_losses(VAE_CFG)
    history = fit_network("vae", vae, loss_fn=loss_fn, val_fn=val_fn,
                          train=ArrayBatches(arrays, 16, seed=seed),
                          val=ArrayBatches(synthetic_pairs(seed=1), 64, shuffle=False),
                          settings=PhaseSettings(epochs, 3e-3), device=torch.device("cpu"), seed=seed,
                          checkpoints=checkpoints, resume=resume, progress=False, epoch_callback=callback)
    return vae, history


def weights(module):
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_training_lowers_the_loss():
    _, history = train_vae(0, epochs=6)
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    assert all(r["spectra_per_s"] > 0 for r in history)


def test_same_seed_same_weights_other_seed_other_weights():
    a, history_a = train_vae(5, epochs=2)
    b, history_b = train_vae(5, epochs=2)
    c, _ = train_vae(6, epochs=2)
    assert torch.equal(weights(a), weights(b))
    assert [r["loss"] for r in history_a] == [r["loss"] for r in history_b]
    assert not torch.equal(weights(a), weights(c))


class Interrupt(Exception):
    pass


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight, history = train_vae(3, epochs=4)

    def stop_after_second(epoch, record):
        if epoch == 1:
            raise Interrupt()

    with pytest.raises(Interrupt):
        train_vae(3, epochs=4, checkpoints=tmp_path, callback=stop_after_second)
    assert PhaseCheckpoint(tmp_path, "vae").latest().name == "epoch-0001"
    resumed, resumed_history = train_vae(3, epochs=4, checkpoints=tmp_path, resume=True)
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3, 4]
    assert [r["loss"] for r in resumed_history] == pytest.approx([r["loss"] for r in history], rel=1e-6)
    assert torch.allclose(weights(straight), weights(resumed), atol=1e-6)


def test_finished_phase_is_not_trained_again(tmp_path):
    first, _ = train_vae(2, epochs=2, checkpoints=tmp_path)
    calls = []
    again, history = train_vae(2, epochs=2, checkpoints=tmp_path, resume=True,
                               callback=lambda e, r: calls.append(e))
    assert calls == [] and len(history) == 2
    assert torch.equal(weights(first), weights(again))


def test_corrupt_checkpoint_is_refused(tmp_path):
    train_vae(2, epochs=1, checkpoints=tmp_path)
    latest = PhaseCheckpoint(tmp_path, "vae").latest()
    (latest / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TrainingError, match="cannot be resumed"):
        train_vae(2, epochs=2, checkpoints=tmp_path, resume=True)


def test_early_stopping_keeps_the_best_weights():
    arrays = synthetic_pairs()
    val = synthetic_pairs(seed=9)
    torch.manual_seed(0)
    mlp = LatentMLP(40, (16,), 60)
    loss_fn, val_fn = transfer_phase_losses(0.0)
    seen = []
    history = fit_network("mlp", mlp, loss_fn=loss_fn, val_fn=val_fn, train=ArrayBatches(arrays, 16),
                          val=ArrayBatches(val, 64, shuffle=False), settings=PhaseSettings(40, 3e-2, patience=2),
                          device=torch.device("cpu"), seed=0, progress=False,
                          epoch_callback=lambda e, r: seen.append(r["val_loss"]))
    best = min(r["val_loss"] for r in history)
    with torch.no_grad():
        final = float(torch.mean((mlp(torch.from_numpy(val["secondary"])) - torch.from_numpy(val["primary"])) ** 2))
    assert final == pytest.approx(best, rel=1e-5)
    assert len(history) < 40, "this setting overfits quickly and must stop early"
    assert min(seen[-2:]) > best          # stopped after `patience` epochs without improvement


def test_unavailable_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(TrainingError, match="CUDA is not available"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
