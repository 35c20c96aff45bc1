import numpy as np
import pytest

from bench.pandas_baseline import pandas_baseline_correct
from transfer.preprocess import (BaselineCorrector, SpectraError, SpectralScaler, SpectrumPreprocessor,
                                 WavelengthMismatchError, baseline_correct,
                                 check_spectra, check_wavelengths, estimate_baseline, gaussian_kernel,
                                 resample)

from .synthetic import raw_spectra


@pytest.mark.parametrize("n_pixels,min_window,smooth_window", [
    (1000, 100, 50), (257, 100, 50), (80, 100, 50), (300, 7, 3), (200, 1, 1), (150, 64, 20)])
def test_baseline_matches_pandas_reference(n_pixels, min_window, smooth_window):
    X = raw_spectra(6, n_pixels, seed=n_pixels)
    expected = np.array([pandas_baseline_correct(x, min_window, smooth_window) for x in X])
    got = baseline_correct(X, min_window, smooth_window, block_rows=4)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(X).max())


def test_baseline_float32_stays_float32_and_close():
    X = raw_spectra(5, 600, seed=3)
    expected = np.array([pandas_baseline_correct(x, 100, 50) for x in X])
    got = baseline_correct(X.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=2e-6 * np.abs(X).max())


def test_baseline_removes_continuum_keeps_lines():
    px = np.arange(2000, dtype=float)
    continuum = 500 + 0.3 * px
    line = 5000 * np.exp(-0.5 * ((px - 1000) / 2.0) ** 2)
    corrected = baseline_correct(continuum + line)[0]
    assert abs(np.median(corrected[200:1800])) < 0.05 * 500      # continuum gone
    assert corrected[1000] > 0.9 * 5000                            # line kept


def test_gaussian_kernel_is_normalised_symmetric():
    k = gaussian_kernel(50)
    assert k.shape == (99,)
    assert k.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(k, k[::-1])


def test_baseline_corrector_transformer_and_errors():
    X = raw_spectra(3, 400)
    corrector = BaselineCorrector(100, 50).fit(X)
    np.testing.assert_allclose(corrector.transform(X), baseline_correct(X))
    with pytest.raises(SpectraError, match="expected 400 pixels"):
        corrector.transform(X[:, :300])
    bad = X.copy()
    bad[1, 7] = np.nan
    with pytest.raises(SpectraError, match="NaN"):
        baseline_correct(bad)
    with pytest.raises(ValueError, match="min_window"):
        estimate_baseline(X, 0, 50)


def test_check_spectra_messages():
    with pytest.raises(SpectraError, match="2-D"):
        check_spectra(np.zeros((2, 3, 4)))
    with pytest.raises(SpectraError, match="expected 5 pixels per spectrum, got 4"):
        check_spectra(np.zeros((2, 4)), 5, name="secondary")
    bad = np.zeros((3, 4))
    bad[2, 1] = np.inf
    with pytest.raises(SpectraError, match=r"spectrum 2, pixel 1"):
        check_spectra(bad)


# --------------------------------------------------------------------------- scaling

def _shifted_sets():
    rng = np.random.default_rng(0)
    train = rng.normal(10, 2, (500, 20))
    test = rng.normal(14, 3, (300, 20))      # another day: shifted and wider
    return train, test


def test_scaler_uses_its_training_statistics_for_every_dataset():
    train, test = _shifted_sets()
    scaler = SpectralScaler(scaling="pixel").fit(train)
    scaled = scaler.transform(test)
    np.testing.assert_allclose(scaled, (test - train.mean(0)) / train.std(0))
    assert scaled.mean() == pytest.approx((14 - 10) / 2, abs=0.15)


def test_inverse_round_trip_and_float32():
    train, test = _shifted_sets()
    scaler = SpectralScaler(scaling="pixel").fit(train.astype(np.float32))
    z = scaler.transform(test.astype(np.float32))
    assert z.dtype == np.float32
    np.testing.assert_allclose(scaler.inverse_transform(z), test, rtol=1e-5)


def test_partial_fit_over_chunks_equals_full_fit():
    train, _ = _shifted_sets()
    full = SpectralScaler(scaling="pixel").fit(train)
    chunked = SpectralScaler(scaling="pixel")
    for chunk in np.array_split(train, [1, 50, 51, 300]):
        chunked.partial_fit(chunk)
    np.testing.assert_allclose(chunked.mean_, full.mean_, rtol=1e-12)
    np.testing.assert_allclose(chunked.var_, train.var(0), rtol=1e-10)
    assert chunked.n_samples_seen_ == 500
    with pytest.raises(SpectraError, match="expected 20 pixels"):
        chunked.partial_fit(train[:, :19])


def test_state_round_trip_is_plain_and_exact():
    train, test = _shifted_sets()
    scaler = SpectralScaler(scaling="pixel").fit(train)
    state = scaler.get_state()
    # "protocol" only so that earlier versions, which require it, still load the bundle
    assert set(state) == {"scaling", "n_samples_seen", "mean", "var", "protocol"} and state["protocol"] == "causal"
    assert all(isinstance(v, (str, int, np.ndarray)) for v in state.values())
    restored = SpectralScaler.from_state(state)
    np.testing.assert_array_equal(restored.transform(test), scaler.transform(test))
    # a bundle written while the scaler still carried the evaluation protocol loads the same
    older = SpectralScaler.from_state({**state, "protocol": "paper"})
    np.testing.assert_array_equal(older.transform(test), scaler.transform(test))
    with pytest.raises(ValueError, match="finite"):
        SpectralScaler.from_state({**state, "var": -state["var"]})


def test_global_scaling_centres_each_pixel_and_divides_by_one_deviation():
    train, test = _shifted_sets()
    train[:, 3] *= 10                                            # a "line" pixel: 10x the spread
    scaler = SpectralScaler(scaling="global").fit(np.array_split(train, 3)[0])
    for chunk in np.array_split(train, 3)[1:]:
        scaler.partial_fit(chunk)
    one = np.sqrt(train.var(0).mean())
    np.testing.assert_allclose(scaler.scale_, np.full(20, one))
    z = scaler.transform(test)
    np.testing.assert_allclose(z, (test - train.mean(0)) / one)
    np.testing.assert_allclose(scaler.inverse_transform(z), test)
    # the line pixel keeps its larger spread relative to the others, unlike per-pixel scaling
    z_train = scaler.transform(train)
    assert z_train[:, 3].std() > 5 * np.delete(z_train, 3, axis=1).std(0).max()
    restored = SpectralScaler.from_state(scaler.get_state())
    assert restored.scaling == "global"
    np.testing.assert_array_equal(restored.transform(test), z)


def test_state_without_scaling_is_per_pixel():
    train, test = _shifted_sets()
    state = SpectralScaler(scaling="pixel").fit(train).get_state()
    del state["scaling"]                                         # a bundle written before the option
    np.testing.assert_allclose(SpectralScaler.from_state(state).scale_, train.std(0))


def test_constant_pixel_is_left_unscaled():
    X = np.random.default_rng(1).normal(size=(50, 4))
    X[:, 2] = 7.0
    z = SpectralScaler(scaling="pixel").fit(X).transform(X)
    assert np.all(np.isfinite(z))
    np.testing.assert_allclose(z[:, 2], 0)


def test_bad_scaling_and_unfitted():
    with pytest.raises(ValueError, match="scaling must be one of"):
        SpectralScaler(scaling="robust").fit(np.ones((3, 2)))
    with pytest.raises(RuntimeError, match="not fitted"):
        SpectralScaler().transform(np.ones((3, 2)))


# ------------------------------------------------------------------ wavelengths

def test_check_wavelengths_tolerance_and_messages():
    wl = np.linspace(260, 370, 300)
    check_wavelengths(wl, wl + 0.01)                      # well under a tenth of a pixel
    with pytest.raises(WavelengthMismatchError, match="expected 300 pixels, got 299"):
        check_wavelengths(wl, wl[:-1])
    with pytest.raises(WavelengthMismatchError, match=r"pixel 299.*resample"):
        check_wavelengths(wl, wl + np.linspace(0, 0.2, 300))


def test_resample_linear_and_range():
    wl_from = np.linspace(260, 370, 300)
    wl_to = wl_from + 0.05                                  # drifted axis
    X = np.stack([2.0 * wl_from + 1, -wl_from])
    got = resample(X, wl_from, wl_to)
    np.testing.assert_allclose(got[:, :-1], np.stack([2.0 * wl_to + 1, -wl_to])[:, :-1])
    assert got[0, -1] == pytest.approx(X[0, -1])          # edge held within one pixel
    with pytest.raises(WavelengthMismatchError, match="beyond"):
        resample(X, wl_from, wl_from + 5)
    with pytest.raises(SpectraError, match="expected 300 pixels"):
        resample(X[:, :10], wl_from, wl_to)


def test_spectrum_preprocessor_checks_and_refits():
    X_train = raw_spectra(40, 300, seed=1)
    X_test = raw_spectra(20, 300, seed=2) + 200
    wl = np.linspace(260, 370, 300)
    prep = SpectrumPreprocessor(wl, name="secondary").fit(X_train)
    z = prep.transform(X_test)
    np.testing.assert_allclose(prep.inverse_transform(z), baseline_correct(X_test), rtol=1e-9, atol=1e-6)
    own = prep.refitted(np.array_split(X_test, 3))               # chunks, as from a file
    np.testing.assert_allclose(own.transform(X_test).mean(0), 0, atol=1e-8)
    np.testing.assert_allclose(own.inverse_transform(own.transform(X_test)), baseline_correct(X_test), rtol=1e-9,
                               atol=1e-6)
    np.testing.assert_array_equal(prep.transform(X_test), z)      # the training statistics untouched
    restored = SpectrumPreprocessor.from_state(prep.get_state())
    np.testing.assert_array_equal(restored.transform(X_test), z)
    with pytest.raises(SpectraError, match="secondary: expected 300 pixels per spectrum, got 299"):
        prep.transform(X_test[:, 1:])
    with pytest.raises(WavelengthMismatchError, match="secondary wavelengths"):
        prep.transform(X_test, wavelengths=wl + 1.0)
    bad = X_test.copy()
    bad[3, 3] = np.nan
    with pytest.raises(SpectraError, match="NaN"):
        prep.transform(bad)


def test_one_scaling_default_everywhere():
    from transfer.config import default_config
    from transfer.data import new_preprocessor
    from transfer.preprocess import DEFAULT_SCALING

    wl = np.linspace(300.0, 400.0, 20)
    assert DEFAULT_SCALING == "global"
    assert SpectralScaler().scaling == DEFAULT_SCALING
    assert SpectrumPreprocessor(wl).scaler.scaling == DEFAULT_SCALING
    assert new_preprocessor(wl, "secondary").scaler.scaling == DEFAULT_SCALING
    assert default_config()["data"]["scaling"] == DEFAULT_SCALING
    # what the default does: one deviation for all pixels
    X = raw_spectra(50, 20, seed=3)
    scaler = SpectralScaler().fit(X)
    assert np.unique(scaler.scale_).size == 1
