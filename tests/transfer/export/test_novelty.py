"""The novelty output: ~1 on data like the training data, higher on data unlike it."""

from __future__ import annotations

import numpy as np
import pytest

from tests.transfer.export.conftest import raw_secondary, run
from transfer.novelty import NoveltyError, NoveltyModel


def _with_new_lines(spectra: np.ndarray, wavelengths: np.ndarray) -> np.ndarray:
    """Three strong narrow emission lines where the training spectra have none (a new phase)."""
    pixels = np.arange(spectra.shape[1])
    quiet = np.argsort(spectra.mean(axis=0))[: spectra.shape[1] // 4]
    centres = np.sort(np.random.default_rng(3).choice(quiet, 3, replace=False))
    peak = 0.5 * np.percentile(spectra.max(axis=1), 50)
    lines = sum(peak * np.exp(-0.5 * ((pixels - c) / 1.5) ** 2) for c in centres)
    return (spectra + lines[None, :]).astype(np.float32)


@pytest.mark.slow
def test_novelty_is_about_one_in_distribution_and_higher_out_of_it(session, maps, bundle):
    unseen_same_day = raw_secondary(maps["val"])          # day 0, another region: in distribution
    new_lines = _with_new_lines(unseen_same_day, bundle.secondary().wavelengths)
    shifted_axis = np.roll(unseen_same_day, 4, axis=1)    # a 4-pixel wavelength calibration shift

    typical = np.median(run(session, unseen_same_day)["novelty"])
    new_phase = np.median(run(session, new_lines)["novelty"])
    drifted = np.median(run(session, shifted_axis)["novelty"])

    assert 0.7 < typical < 1.5
    assert new_phase > 2 * typical
    assert drifted > 1.5 * typical


def test_numpy_score_matches_its_definition():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((50, 3)))[0].T            # 3 orthonormal axes in 50 px
    train = rng.standard_normal((400, 3)) * [5.0, 3.0, 2.0] @ basis + 0.1 * rng.standard_normal((400, 50))
    model = NoveltyModel(n_components=3).fit(train)
    assert np.abs(model.components @ model.components.T - np.eye(3)).max() < 1e-8
    assert model.explained_variance > 0.9
    scores = model.score(train)
    assert abs(np.median(scores) - 1.0) < 1e-6
    outside = rng.standard_normal(50)
    outside -= basis.T @ (basis @ outside)
    outside /= np.linalg.norm(outside)                                   # unit vector off the plane
    assert np.all(model.score(train[:10] + 5.0 * outside) > 5)
    assert np.allclose(model.score(train[:10] + 3.0 * model.components[0]), scores[:10], rtol=1e-5)
    # the definition, computed independently: least-squares residual outside the fitted axes
    centred = (train[:10] - train.mean(axis=0)).T
    coefficients = np.linalg.lstsq(model.components.T, centred, rcond=None)[0]
    residual = centred - model.components.T @ coefficients
    assert np.allclose(scores[:10], np.sqrt(np.mean(residual ** 2, axis=0) / model.reference), rtol=1e-5)

def test_novelty_state_round_trip_and_bad_input():
    rng = np.random.default_rng(1)
    model = NoveltyModel(n_components=2).fit(rng.standard_normal((40, 12)))
    again = NoveltyModel.from_state(model.get_state())
    x = rng.standard_normal((5, 12))
    assert np.array_equal(again.score(x), model.score(x))
    with pytest.raises(NoveltyError, match="at least 12 training spectra"):
        NoveltyModel(n_components=10).fit(rng.standard_normal((6, 12)))
    with pytest.raises(ValueError, match="expected 12 pixels"):
        model.score(rng.standard_normal((2, 11)))
