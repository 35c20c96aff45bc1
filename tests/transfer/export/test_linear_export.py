"""DS and PLS exported as ONNX graphs with the VAE + MLP export's preprocessing, labels and novelty,
run through the real ONNX Runtime and the live worker's model loader."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from acquisition.store import PairedMapReader
from streaming.model import PipelineSession
from tests.transfer.export.conftest import TINY
from transfer.config import TransferConfig
from transfer.export import ExportError, export_model
from transfer.selection import recommend
from transfer.predict import Transferer


@pytest.fixture(scope="module")
def bundle(maps, tmp_path_factory):
    """The export tests' tiny bundle, with DS and PLS fitted too."""
    from transfer.pipeline import train_model
    config = dict(TINY, baselines={"models": ["pls", "ds"], "max_spots": 200, "pls_components": 4})
    return train_model(maps["train"], maps["val"], tmp_path_factory.mktemp("linear") / "model",
                       config=TransferConfig(config), device="cpu", seed=0, progress=False)


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):
    return export_model(bundle, tmp_path_factory.mktemp("linear-onnx") / "vae.onnx", model_name="vae_mlp",
                        progress=False)


@pytest.fixture(scope="module")
def raw(maps):
    with PairedMapReader(maps["test"]) as reader:
        chunk = next(reader.iter_chunks(systems=["secondary"], chunk_spots=100))
    return np.asarray(chunk.spectra["secondary"], dtype=np.float32)


@pytest.mark.parametrize("name", ["ds", "pls"])
def test_linear_baseline_graph_matches_the_numpy_model(name, bundle, exported, raw, tmp_path):
    result = export_model(bundle, tmp_path / f"{name}.onnx", model_name=name, progress=False)
    assert result.model == name and result.model_id != exported.model_id
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    primary, latent, label, novelty = session.run(["primary", "latent", "label", "novelty"], {"secondary": raw})
    transferer = Transferer(bundle)
    expected = transferer.predict_all(raw)[name]
    scale = np.abs(expected).max(axis=1)
    assert np.max(np.abs(primary - expected).max(axis=1) / scale) < 1e-4
    np.testing.assert_array_equal(label, bundle.kmeans.predict(expected.astype(np.float64)))
    # The same novelty output as the VAE + MLP export; latent: the novelty's principal scores.
    vae = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(novelty, vae.run(["novelty"], {"secondary": raw})[0], rtol=1e-4)
    system = bundle.secondary()
    scores = (transferer.scaled_input(raw) - system.novelty.mean) @ system.novelty.components.T
    np.testing.assert_allclose(latent, scores, rtol=1e-3, atol=1e-3 * np.abs(scores).max())
    if name == "ds":    # DS at the default rank: two thin products, the trust's 16 columns beside DS's 64
        left, right = bundle.secondary().baselines["ds"].affine_factors()
        assert right is not None and left.shape[1] == right.shape[0] == 64
        graph = onnx.load(str(result.path)).graph
        with_trust = "expected_rel_error" in [o.name for o in graph.output]
        assert with_trust      # the tiny bundle recommends DS, so its trust score is calibrated on DS
        width = 64 + (bundle.secondary().trust.into_.shape[1] if with_trust else 0)
        shapes = {i.name: tuple(i.dims) for i in graph.initializer}
        assert shapes["primary.left"] == (raw.shape[1], width) and shapes["primary.weight"][0] == width
        # the trust score's norms are quadratic forms of the thin coordinates: only the label reads primary
        assert [n.op_type for n in graph.node if "primary" in n.input] == ["Cast"]
    rank = bundle.secondary().baselines[name].affine_factors()[0].shape[1]      # PLS: its component count
    provenance = json.loads(session.get_modelmeta().custom_metadata_map["twinplume.provenance"])
    assert provenance["transfer_model"]["linear_map_rank"] == rank
    # The live worker loads it like any export.
    live = PipelineSession(result.path, threads=1)
    out = live.run(raw[:4])
    np.testing.assert_allclose(out["primary"], primary[:4], rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(out["label"], label[:4])


def test_default_export_is_the_recommended_exportable_model(bundle, tmp_path):
    entry = bundle.manifest["secondaries"][bundle.default_secondary]
    ranking = entry["validation_rse"]
    if entry["recommended"] in ("vae_mlp", "ds", "pls"):
        expected = entry["recommended"]
    else:                     # the same rule among the exportable models (transfer.selection.recommend)
        expected = recommend(ranking, entry.get("day_change_rse") or {}, among=("vae_mlp", "ds", "pls"))
    result = export_model(bundle, tmp_path / "default.onnx", progress=False)
    assert result.model == expected
    model = PipelineSession(result.path, threads=1)
    provenance = json.loads(model.session.get_modelmeta().custom_metadata_map["twinplume.provenance"])
    assert provenance["transfer_model"]["name"] == expected
    assert provenance["transfer_model"]["validation_rse"] == pytest.approx(ranking[expected])


def test_unexportable_model_and_int8_linear_are_refused(bundle, tmp_path):
    with pytest.raises(ExportError, match="can export"):
        export_model(bundle, tmp_path / "m.onnx", model_name="knn", progress=False)
    with pytest.raises(ExportError, match="float32"):
        export_model(bundle, tmp_path / "m.onnx", model_name="ds", precision="int8", progress=False)


@pytest.mark.parametrize("name", ["ds", "pls"])
def test_the_trust_output_of_a_linear_graph_equals_the_numpy_score(name, bundle, maps, raw):
    """The trust nodes on an affine graph's centred input: a score fitted on the training pairs and
    calibrated on the validation map with this model's own errors, as `train` does for the model
    it records; ONNX Runtime against transfer.trust in numpy."""
    from onnx import helper

    from transfer.export import OPSET, build_graph
    from transfer.trust import TrustScore
    system, primary = bundle.secondary(), bundle.primary_preprocess
    transferer = Transferer(bundle)

    def pairs(path):
        with PairedMapReader(path) as reader:
            chunk = reader.read_all()
        secondary = np.asarray(chunk.spectra["secondary"], np.float32)
        return (secondary, system.preprocess.correct(secondary),
                primary.correct(np.asarray(chunk.spectra["primary"], np.float32)))

    _, train_corrected, train_primary = pairs(maps["train"])
    val_raw, val_corrected, val_primary = pairs(maps["val"])
    trust = TrustScore(n_components=4).fit(train_corrected, train_primary).calibrate(
        val_corrected, transferer.predict_all(val_raw)[name], val_primary)
    proto = helper.make_model(build_graph(bundle, system, system.novelty, "float32", name, trust),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = min(proto.ir_version, 9)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got, = session.run(["expected_rel_error"], {"secondary": raw})
    expected = trust.expected_relative_error(system.preprocess.correct(raw), transferer.predict_all(raw)[name])
    assert got.shape == (raw.shape[0],) and np.all(np.isfinite(got)) and np.all(got > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-6)
