"""The trust figures of docs/novelty.md (transfer.trust_figures), against known answers."""

from __future__ import annotations

import numpy as np
import pytest

from transfer.baselines import DSTransfer
from transfer.config import TransferConfig
from transfer.suite import load_maps
from transfer.trust import TrustError
from transfer.trust_figures import score_figures, trust_on_maps


def _errors(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    relative = rng.lognormal(np.log(0.2), 0.5, n)
    intensity = rng.lognormal(8, 1, n)                 # independent of the error
    return relative, relative * intensity, intensity


def test_a_perfect_score_has_rho_one_and_every_decile_calibrated():
    relative, absolute, intensity = _errors()
    f = score_figures(relative, relative, absolute, intensity)
    assert f["rho_relative"] == pytest.approx(1.0)
    assert f["rho_within_deciles_median"] == pytest.approx(1.0)
    assert (f["deciles_within_30_percent"], f["fraction_of_deciles_within_30_percent"]) == (10, 1.0)
    assert f["reliability"]["predicted"] == pytest.approx(f["reliability"]["observed"])
    top = np.sort(relative)[-int(0.05 * len(relative)):]
    assert f["top5_over_median"] == pytest.approx(top.mean() / np.median(relative))
    assert f["top5_possible_over_median"] == pytest.approx(f["top5_over_median"])     # it ranks as well as can be
    assert f["mean_predicted_over_observed"] == pytest.approx(1.0)


def test_a_score_that_says_bright_tells_nothing_about_the_relative_error():
    relative, absolute, intensity = _errors()
    f = score_figures(intensity, relative, absolute, intensity, calibrated=False)
    assert f["rho_intensity"] == pytest.approx(1.0)
    assert abs(f["rho_relative"]) < 0.1 and abs(f["rho_within_deciles_median"]) < 0.2
    assert f["rho_absolute"] > 0.7                     # the absolute error grows with brightness
    assert 0.7 < f["top5_over_median"] < 1.5
    top = np.sort(relative)[-int(0.05 * len(relative)):]
    assert f["top5_possible_over_median"] == pytest.approx(top.mean() / np.median(relative))
    assert f["top5_possible_over_median"] > 1.5 * f["top5_over_median"]      # ranking by brightness gains little
    assert "reliability" not in f


def test_twice_the_error_predicted_is_no_decile_within_30_percent():
    relative, absolute, intensity = _errors()
    f = score_figures(2 * relative, relative, absolute, intensity)
    assert f["deciles_within_30_percent"] == 0
    assert f["mean_predicted_over_observed"] == pytest.approx(2.0)


def test_too_few_or_mismatched_spectra_are_refused():
    relative, absolute, intensity = _errors(n=15)
    with pytest.raises(TrustError, match="20 or more"):
        score_figures(relative, relative, absolute, intensity)
    relative, absolute, intensity = _errors()
    with pytest.raises(TrustError, match="one value each"):
        score_figures(relative[:-1], relative, absolute, intensity)


def test_trust_of_a_fitted_model_on_simulated_maps(sim_maps):
    maps = load_maps(sim_maps["train"], sim_maps["val"], sim_maps["test"], TransferConfig({}))
    arrays = maps["arrays"]
    model = DSTransfer(alpha=0.1).fit(arrays["train"]["secondary"], arrays["train"]["primary"])
    trust = trust_on_maps(model.predict, maps, n_components=8)
    n_test = len(arrays["test"]["primary"])
    assert trust["validation"]["n"] == n_test
    assert trust["test_half"]["n"] == n_test - n_test // 2
    # the threshold is twice the median relative error of the validation map (what train publishes)
    to_primary = maps["preprocessors"]["primary"].inverse_transform
    val_error = np.linalg.norm(to_primary(model.predict(arrays["val"]["secondary"])) - to_primary(
        arrays["val"]["primary"]), axis=1) / np.linalg.norm(to_primary(arrays["val"]["primary"]), axis=1)
    assert trust["validation"]["threshold"] == pytest.approx(2 * np.median(val_error), rel=1e-3)
    # the test map's own median relative error, measured here against the simulated truth
    truth = to_primary(arrays["test"]["primary"])
    test_error = np.linalg.norm(to_primary(model.predict(arrays["test"]["secondary"])) - truth, axis=1) / \
        np.linalg.norm(truth, axis=1)
    assert trust["validation"]["median_relative_error"] == pytest.approx(np.median(test_error), rel=1e-3)
    assert 0.0 <= trust["validation"]["flagged"] <= 1.0
