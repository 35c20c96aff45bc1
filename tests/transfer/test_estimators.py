"""The networks as scikit-learn estimators on preprocessed arrays."""
import numpy as np
import torch
import pytest
from sklearn.base import clone

from tests.transfer.synthetic import paired_spectra
from transfer.estimators import OneStepMLPTransfer, VAEMLPTransfer, data_sized
from transfer.metrics import rse
from transfer.preprocess import SpectraError

TINY = dict(vae_hidden=(48, 24), latent=8, mlp_hidden=(32, 32), learning_rate=3e-3, batch_size=32, patience=4)


@pytest.fixture(scope="module")
def data():
    xs, xp, _ = paired_spectra(360, seed=0)
    ts, tp, _ = paired_spectra(100, seed=1)
    mean, scale = xp.mean(axis=0), xp.std()
    smean, sscale = xs.mean(axis=0), xs.std()
    scaled = lambda s, p: (((s - smean) / sscale).astype(np.float32), ((p - mean) / scale).astype(np.float32))
    return scaled(xs, xp), scaled(ts, tp)


@pytest.mark.parametrize("make", [lambda **kw: VAEMLPTransfer(**TINY, vae_epochs=25, mlp_epochs=40, **kw),
                                  lambda **kw: OneStepMLPTransfer(**TINY, epochs=40, **kw)])
def test_network_estimator_fits_predicts_and_clones(make, data):
    (xs, xp), (ts, tp) = data
    model = make(seed=3)
    assert clone(model).get_params() == model.get_params()
    model.fit(xs, xp)
    predicted = model.predict(ts)
    assert predicted.shape == tp.shape and predicted.dtype == np.float32
    assert rse(tp, predicted) < 0.5, "far closer than the mean spectrum"
    again = clone(model)
    assert not hasattr(again, "network_")
    np.testing.assert_allclose(again.fit(xs, xp).predict(ts), predicted, rtol=1e-5, atol=1e-5)  # seeded
    assert model.set_params(noise=0.5).get_params()["noise"] == 0.5


def test_validation_set_is_used_for_early_stopping(data):
    (xs, xp), (ts, tp) = data
    model = VAEMLPTransfer(**dict(TINY, patience=2), vae_epochs=4, mlp_epochs=60).fit(xs, xp, validation=(ts, tp))
    epochs = len(model.history_["mlp"])
    best = int(np.argmin([r["val_loss"] for r in model.history_["mlp"]]))
    assert epochs == 60 or epochs - 1 - best == 2


def test_data_sized_caps_latent_and_widths_by_pairs():
    assert data_sized(64, [1024, 512], 300) == (18, [150, 150])
    assert data_sized(64, [1024, 512], 100_000) == (64, [1024, 512])
    assert data_sized(64, [1024, 512], 20) == (8, [32, 32])
    model = VAEMLPTransfer(**dict(TINY, latent=64, vae_hidden=(512, 256)), size="data", vae_epochs=1, mlp_epochs=1)
    (xs, xp) = paired_spectra(200, seed=2)[:2]
    xs, xp = xs.astype(np.float32) / 1000, xp.astype(np.float32) / 1000
    model.fit(xs, xp, validation=(xs[:20], xp[:20]))
    assert (model.latent_, model.vae_hidden_) == (12, [100, 100])
    assert model.vae_.latent == 12 and model.vae_.encoder[0].out_features == 100


def test_input_noise_changes_the_training(data):
    (xs, xp), (ts, _) = data
    plain = OneStepMLPTransfer(**TINY, epochs=3).fit(xs, xp).predict(ts)
    noisy = OneStepMLPTransfer(**TINY, epochs=3, noise=0.3).fit(xs, xp).predict(ts)
    assert not np.allclose(plain, noisy)


def test_clear_errors(data):
    (xs, xp), _ = data
    with pytest.raises(SpectraError, match="pairs must match"):
        VAEMLPTransfer(**TINY).fit(xs[:10], xp[:9])
    with pytest.raises(ValueError, match="size must be one of"):
        VAEMLPTransfer(**TINY, size="big").fit(xs, xp)
    with pytest.raises(RuntimeError, match="not fitted"):
        OneStepMLPTransfer().predict(xs)
    with pytest.raises(SpectraError, match="validation"):
        OneStepMLPTransfer(**TINY).fit(xs[:3], xp[:3])


def test_max_epochs_caps_the_epochs_min_steps_adds(data):
    (xs, xp), (ts, tp) = data
    # 360 pairs in batches of 32 are 12 steps an epoch: min_steps 1500 alone asks 125 epochs
    model = VAEMLPTransfer(**TINY, vae_epochs=3, mlp_epochs=3, min_steps=1500, max_epochs=2)
    model.fit(xs, xp, validation=(ts, tp))
    assert [len(model.history_[phase]) for phase in ("vae", "mlp")] == [2, 2]
    one_step = OneStepMLPTransfer(**TINY, epochs=1, min_steps=60, max_epochs=4).fit(xs, xp, validation=(ts, tp))
    assert len(one_step.history_["one_step"]) == 4          # min_steps still adds epochs below the cap


def test_best_reconstruction_finds_what_the_decoder_can_make_and_no_more(data):
    (xs, xp), _ = data
    model = VAEMLPTransfer(**TINY, vae_epochs=10, mlp_epochs=2, seed=1).fit(xs, xp)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():     # spectra the decoder makes: their true latent points are known
        on_manifold = model.vae_.decoder(2 * torch.randn(64, model.latent_, generator=generator)).numpy()
    spike = np.zeros(xp.shape[1], np.float32)
    spike[xp.shape[1] // 2] = 40.0   # a line the training spectra never had
    flags = [parameter.requires_grad for parameter in model.vae_.parameters()]
    floor_on = model.best_reconstruction(on_manifold, steps=400)
    assert [parameter.requires_grad for parameter in model.vae_.parameters()] == flags, "the VAE left as found"
    from_mu = model.vae_.decoder(model.vae_.encode(torch.from_numpy(on_manifold))[0]).detach().numpy()
    assert rse(on_manifold, floor_on) < 0.05 * rse(on_manifold, from_mu), "it searches beyond the encoder's mu"
    off = model.best_reconstruction(on_manifold + spike, steps=400)
    # the spike is no decoder output: what is left of it is the floor of any MLP onto this latent space
    assert np.mean(np.abs((on_manifold + spike - off)[:, xp.shape[1] // 2])) > 20.0
    assert model.best_reconstruction(on_manifold[:1], steps=1).shape == (1, xp.shape[1])


def test_gain_augmentation_multiplies_the_secondary_counts_by_a_smooth_curve():
    from transfer.estimators import with_gain_augmentation
    from transfer.preprocess import SpectralScaler
    rng = np.random.default_rng(0)
    counts = rng.gamma(2.0, 300.0, (16, 120)).astype(np.float32)
    scaler = SpectralScaler("global").fit(counts)
    zero = scaler.transform(np.zeros((1, 120), np.float32))[0]
    seen = {}

    def loss(model, batch, progress, generator):
        seen.update(batch)
        return torch.zeros(())
    batch = {"secondary": torch.from_numpy(scaler.transform(counts)), "primary": torch.ones(16, 7)}
    with_gain_augmentation(loss, 0.1, zero)(None, batch, 0.0, torch.Generator().manual_seed(1))
    gain = scaler.inverse_transform(seen["secondary"].numpy()) / counts       # in counts, per spectrum
    t = np.linspace(-1, 1, 120)
    basis = np.stack([np.ones_like(t), t, 1.5 * t ** 2 - 0.5], 1)
    coefficients, *_ = np.linalg.lstsq(basis, gain.T - 1.0, rcond=None)
    np.testing.assert_allclose(1.0 + basis @ coefficients, gain.T, atol=1e-4)   # constant + linear + quadratic only
    assert 0.05 < np.std(coefficients) < 0.2, "coefficients drawn with the amplitude given"
    assert torch.equal(seen["primary"], batch["primary"]), "the plasma the primary saw is left as measured"
    assert with_gain_augmentation(loss, 0.0, None) is loss


def test_gain_augmentation_needs_the_scaled_zero(data):
    (xs, xp), _ = data
    with pytest.raises(ValueError, match="secondary_zero"):
        VAEMLPTransfer(**TINY, gain_augment=0.05, vae_epochs=1, mlp_epochs=1).fit(xs, xp)
    model = VAEMLPTransfer(**TINY, gain_augment=0.05, vae_epochs=2, mlp_epochs=2, seed=2)
    plain = clone(model).set_params(gain_augment=0.0).fit(xs, xp).predict(xs[:5])
    augmented = model.fit(xs, xp, secondary_zero=np.full(xs.shape[1], -1.0, np.float32)).predict(xs[:5])
    assert not np.allclose(plain, augmented), "the augmentation changes the training"
