"""The exported graph against the PyTorch pipeline (`libs-transfer predict`).

Relative error, per spectrum: max |onnx - torch| / max |torch| over its pixels;
the test takes the worst spectrum of the map.
"""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from tests.transfer.export.conftest import raw_secondary, run
from transfer.export import PARITY_TOLERANCE, latent_error, relative_error
from transfer.predict import Transferer, predict_map


def test_latent_error_is_over_the_batch_scale():
    expected = np.array([[1.0, -4.0], [0.001, 0.0]])
    assert latent_error(expected + np.array([[0.0, 0.004], [0.0001, 0.0]]), expected) == pytest.approx(0.001)
    assert latent_error(np.ones((1, 2)), np.zeros((1, 2))) == np.inf
    assert latent_error(np.zeros((1, 2)), np.zeros((1, 2))) == 0.0


def test_relative_error_is_per_spectrum_and_scale_free():
    expected = np.array([[1.0, -4.0, 2.0], [1000.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    result = expected + np.array([[0.0, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert np.allclose(relative_error(result, expected), [0.1, 0.001, 0.0])
    assert relative_error(np.ones((1, 3)), np.zeros((1, 3)))[0] == np.inf


@pytest.mark.slow
def test_onnx_reproduces_what_predict_writes(bundle, session, maps, tmp_path):
    test_map = tmp_path / "test.h5"
    shutil.copy(maps["test"], test_map)
    # the graph's parity on the spectra as stored (a drifted map is aligned first: tests/transfer/test_data.py)
    predict_map(bundle, test_map, progress=False, align=False)
    with h5py.File(test_map, "r") as f:
        acquired = f["entry/scan/acquired"][()].astype(bool)
        iy, ix = np.nonzero(acquired)
        written = f["entry/transferred/spectra"][()][iy, ix]
        written_labels = f["entry/transferred/label"][()][iy, ix]
        written_novelty = f["entry/transferred/novelty"][()][iy, ix]
        secondary = f["entry/secondary/spectra"][()][iy, ix]

    out = run(session, secondary)

    errors = relative_error(out["primary"], written)
    assert errors.max() <= PARITY_TOLERANCE, f"worst spectrum {errors.argmax()}: {errors.max():.3g}"
    assert np.array_equal(out["label"], written_labels.astype(np.int64))
    assert np.abs(out["novelty"] / written_novelty - 1).max() <= PARITY_TOLERANCE
    assert out["primary"].dtype == np.float32 and out["label"].dtype == np.int64


@pytest.mark.slow
def test_latent_and_novelty_follow_the_pytorch_path(bundle, session, maps, exported):
    spectra = raw_secondary(maps["test"])
    transferer = Transferer(bundle)
    expected = transferer.transfer(spectra)

    out = run(session, spectra)

    assert latent_error(out["latent"], expected["latent"]) <= PARITY_TOLERANCE
    assert out["latent"].shape == (len(spectra), bundle.config["vae"]["latent"])
    assert out["novelty"].shape == (len(spectra),) and out["novelty"].dtype == np.float32
    assert np.abs(out["novelty"] / expected["novelty"] - 1).max() <= PARITY_TOLERANCE
    assert exported.parity["novelty_max_relative_error"] <= PARITY_TOLERANCE


@pytest.mark.slow
def test_batch_of_one_and_of_seventeen_give_the_same_spectra(session, maps):
    spectra = raw_secondary(maps["test"])[:17]

    together = run(session, spectra)
    alone = [run(session, spectra[i:i + 1]) for i in range(len(spectra))]

    for name in ("primary", "latent", "novelty"):
        single = np.concatenate([a[name] for a in alone])
        assert single.shape == together[name].shape
        scale = np.abs(together[name]).max()
        assert np.abs(single - together[name]).max() <= 1e-6 * scale, name
    assert np.array_equal(np.concatenate([a["label"] for a in alone]), together["label"])
