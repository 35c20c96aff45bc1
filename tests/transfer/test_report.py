import json

import numpy as np
import pytest

from transfer.clustering import SpectralClusters
from transfer.metrics import cosine_distance, euclidean_distance, rse
from transfer.report import Evaluation, write_report
from transfer.preprocess import SpectraError

from .synthetic import WL_PRIMARY, paired_spectra

MODELS = ["vae_mlp", "one_step_mlp", "pls", "knn", "ds", "pds"]
NOISE = {"vae_mlp": 20.0, "one_step_mlp": 15.0, "pls": 30.0, "knn": 200.0, "ds": 40.0, "pds": 60.0}
SHAPE = (14, 11)


@pytest.fixture(scope="module")
def scene():
    """A small map: phase map from the dominant endmember, truth and noisy predictions."""
    n = SHAPE[0] * SHAPE[1]
    _, X_true, abundances = paired_spectra(n, seed=4)
    phase_map = abundances.argmax(axis=1).reshape(SHAPE)
    rng = np.random.default_rng(0)
    preds = {m: X_true + rng.normal(0, s, X_true.shape) for m, s in NOISE.items()}
    _, X_train, _ = paired_spectra(300, seed=5)
    _, X_val, _ = paired_spectra(200, seed=6)
    clusters = SpectralClusters(candidates=(2, 3, 4, 5), seed=0).fit(X_train, X_val)
    iy, ix = np.divmod(np.arange(n), SHAPE[1])
    return iy, ix, X_true, preds, phase_map, clusters


def _evaluate(scene, chunks):
    iy, ix, X_true, preds, phase_map, clusters = scene
    evaluation = Evaluation(SHAPE, WL_PRIMARY, MODELS, clusters=clusters, phase_map=phase_map,
                            phase_names=["quartz", "albite", "muscovite"], examples_per_group=4)
    order = np.random.default_rng(1).permutation(iy.size)      # visiting order != index order
    for rows in np.array_split(order, chunks):
        evaluation.update(iy[rows], ix[rows], X_true[rows], {m: p[rows] for m, p in preds.items()})
    return evaluation


def test_evaluation_writes_report_files(scene, tmp_path):
    iy, ix, X_true, preds, _, clusters = scene
    evaluation = _evaluate(scene, chunks=5)
    history = {"vae": {"train": [3.0, 2.0, 1.5], "val": [3.2, 2.4, 2.0]}, "mlp": {"train": [1.0, 0.5]}}
    report = evaluation.write(tmp_path, protocol="causal", loss_history=history, notes="small test map")
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == report
    assert on_disk["protocol"] == "causal"
    assert on_disk["n_spectra"] == iy.size
    assert list(on_disk["models"]) == MODELS
    for name in MODELS:
        values = on_disk["models"][name]
        assert set(values) >= {"euclid", "cosine", "rse", "k_score"}
        assert values["euclid"] == pytest.approx(euclidean_distance(X_true, preds[name]).mean())
        assert values["cosine"] == pytest.approx(cosine_distance(X_true, preds[name]).mean())
        assert values["rse"] == pytest.approx(rse(X_true, preds[name]))
        expected_k = np.mean(clusters.predict(X_true) == clusters.predict(preds[name]))
        assert values["k_score"] == pytest.approx(expected_k)
    # noisier predictions score worse
    assert on_disk["models"]["knn"]["rse"] > on_disk["models"]["vae_mlp"]["rse"]
    assert on_disk["details"]["clusters"]["k"] == clusters.k_
    for key in ("emissivity", "errors", "clusters", "spectra", "loss"):
        png = tmp_path / on_disk["figures"][key]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size > 5000
    groups = {e["group"] for e in on_disk["examples"]}
    assert groups <= {"quartz", "albite", "muscovite"} and len(groups) >= 2
    markdown = (tmp_path / "report.md").read_text()
    assert "| vae_mlp |" in markdown and "| pds |" in markdown and "![clusters](clusters.png)" in markdown
    assert "small test map" in markdown


def test_chunking_does_not_change_results(scene):
    one = _evaluate(scene, chunks=1).results()
    many = _evaluate(scene, chunks=9).results()
    for name in MODELS:
        for key in ("euclid", "cosine", "rse", "k_score"):
            assert many[name][key] == pytest.approx(one[name][key], rel=1e-9)


def test_maps_hold_per_spot_values(scene):
    iy, ix, X_true, preds, _, _ = scene
    evaluation = _evaluate(scene, chunks=3)
    np.testing.assert_allclose(evaluation.emissivity_true[iy, ix], X_true.sum(axis=1), rtol=1e-6)
    np.testing.assert_allclose(evaluation.maps["pls"]["euclid"][iy, ix],
                               euclidean_distance(X_true, preds["pls"]), rtol=1e-6)
    assert evaluation.n_spectra == iy.size


def test_partial_map_and_no_clusters(tmp_path):
    _, X_true, _ = paired_spectra(20, seed=7)
    evaluation = Evaluation((6, 6), WL_PRIMARY, ["pls"])
    evaluation.update(np.arange(20) // 6, np.arange(20) % 6, X_true, {"pls": X_true * 0.9})
    report = evaluation.write(tmp_path, protocol="paper")
    assert report["models"]["pls"]["k_score"] is None
    assert report["n_spectra"] == 20
    assert "clusters" not in report["figures"]
    assert (tmp_path / "emissivity.png").exists()


def test_write_report_directly(tmp_path):
    metrics = {"pls": {"euclid": 1.0, "cosine": -0.9, "rse": float("nan"), "k_score": 0.9}}
    report = write_report(tmp_path, protocol="causal", n_spectra=3, metrics=metrics)
    assert report["models"]["pls"]["rse"] is None        # NaN is not valid JSON
    json.loads((tmp_path / "report.json").read_text())
    with pytest.raises(ValueError, match="lack"):
        write_report(tmp_path, protocol="causal", n_spectra=3, metrics={"pls": {"euclid": 1.0}})


def test_evaluation_errors(scene):
    iy, ix, X_true, preds, _, _ = scene
    evaluation = Evaluation(SHAPE, WL_PRIMARY, MODELS)
    with pytest.raises(ValueError, match="expected"):
        evaluation.update(iy[:3], ix[:3], X_true[:3], {"pls": preds["pls"][:3]})
    full = {m: p[:3] for m, p in preds.items()}
    with pytest.raises(SpectraError, match="pixels"):
        evaluation.update(iy[:3], ix[:3], X_true[:3, :-1], full)
    bad = dict(full, knn=np.full_like(full["knn"], np.nan))
    with pytest.raises(SpectraError, match="knn predictions.*NaN"):
        evaluation.update(iy[:3], ix[:3], X_true[:3], bad)
    evaluation.update(iy[:3], ix[:3], X_true[:3], full)
    with pytest.raises(ValueError, match="already evaluated"):
        evaluation.update(iy[:3], ix[:3], X_true[:3], full)
    with pytest.raises(ValueError, match="outside the map"):
        evaluation.update(np.array([99]), np.array([0]), X_true[:1], {m: p[:1] for m, p in preds.items()})
    assert evaluation.n_spectra == 3       # nothing lost to the bad chunks
