"""`libs-transfer export --precision int8`: the decoder's last layer in 8-bit integers."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tests.transfer.export.conftest import raw_primary, raw_secondary, run
from transfer.cli import main
from transfer.export import INT8_TOLERANCE, OPSET, ExportError, export_model, relative_error
from transfer.metrics import rse
from transfer.onnx_graph import INT8_WEIGHT_LIMIT, GraphBuilder, int8_dense
from transfer.preprocess import baseline_correct


@pytest.fixture(scope="module")
def int8_export(bundle, tmp_path_factory):
    return export_model(bundle, tmp_path_factory.mktemp("export-int8") / "model.onnx", precision="int8",
                        progress=False)


@pytest.fixture(scope="module")
def int8_session(int8_export):
    return ort.InferenceSession(str(int8_export.path), providers=["CPUExecutionProvider"])


def _quantized_numpy(h: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """int8_dense's arithmetic written out: integer codes, exact integer sums, two steps."""
    weight_step = np.abs(weight).max(axis=1) / INT8_WEIGHT_LIMIT
    weight_codes = np.round(weight / weight_step[:, None])
    step = np.abs(h).max(axis=1, keepdims=True).astype(np.float32) * np.float32(1 / 127)
    codes = np.round(h / step)
    return (codes @ weight_codes.T) * weight_step * step + bias


def test_int8_layer_computes_the_quantized_product():
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((70, 40)) * rng.uniform(0.1, 10, (70, 1))      # rows of very different size
    bias = rng.standard_normal(70)
    h = (rng.standard_normal((9, 40)) * rng.uniform(0.01, 100, (9, 1))).astype(np.float32)
    g = GraphBuilder()
    int8_dense(g, "h", weight, bias, output="y")
    graph = helper.make_graph(g.nodes, "int8", [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["b", 40])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 70])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"h": h})

    expected = _quantized_numpy(h, weight, bias)
    assert relative_error(y, expected).max() <= 1e-5
    exact = h.astype(np.float64) @ weight.T + bias
    assert 1e-4 < relative_error(y, exact).max() <= 2e-2          # 8-bit rounding, and no more than that


@pytest.mark.parametrize("decoder_hidden", [[16, 32], []])
def test_int8_graph_against_the_float32_graph(decoder_hidden):
    """Also with a decoder of one layer, where the int8 layer reads the latent itself."""
    from tests.transfer.export.test_onnx_graph import _arrays
    from transfer.onnx_graph import pipeline_graph

    rng = np.random.default_rng(7)
    arrays = _arrays(rng, 300, 260, decoder_hidden)
    outputs = {}
    x = rng.uniform(0, 100, (20, 300)).astype(np.float32)
    for precision in ("float32", "int8"):
        model = helper.make_model(pipeline_graph(arrays, precision=precision),
                                  opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        onnx.checker.check_model(model, full_check=True)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        outputs[precision] = run(session, x)
    exact, fast = outputs["float32"], outputs["int8"]
    for name in ("latent", "label", "novelty"):
        assert np.array_equal(fast[name], exact[name]), name
    assert 0 < relative_error(fast["primary"], exact["primary"]).max() <= INT8_TOLERANCE


@pytest.mark.slow
def test_int8_export_reports_its_precision_and_gets_its_own_id(bundle, exported, tmp_path, capsys):
    out = tmp_path / "int8.onnx"
    assert main(["export", str(bundle.path), "--out", str(out), "--precision", "int8", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    provenance = json.loads(meta["twinplume.provenance"])
    assert report["precision"] == "int8" and provenance["precision"]["name"] == "int8"
    assert report["model_id"] == meta["twinplume.model_id"] != exported.model_id
    assert provenance["parity"]["tolerance"] == INT8_TOLERANCE
    assert 0 < report["parity"]["primary_max_relative_error"] <= INT8_TOLERANCE
    assert report["parity"]["labels_equal"] is True
    assert any(node.op_type == "MatMulInteger" for node in onnx.load(str(out)).graph.node)


@pytest.mark.slow
def test_int8_changes_only_the_primary_spectra_and_only_a_little(session, int8_session, maps):
    spectra = raw_secondary(maps["test"])

    exact = run(session, spectra)
    fast = run(int8_session, spectra)

    for name in ("latent", "label", "novelty"):          # all upstream of the int8 layer
        assert np.array_equal(fast[name], exact[name]), name
    assert relative_error(fast["primary"], exact["primary"]).max() <= INT8_TOLERANCE
    # small next to what the model gets wrong anyway (on paper-size models: 1e-4 against 0.03)
    measured = baseline_correct(raw_primary(maps["test"]))
    assert rse(exact["primary"], fast["primary"]) < 0.02 * rse(measured, exact["primary"])
    assert not np.array_equal(fast["primary"], exact["primary"])


@pytest.mark.slow
def test_int8_spectrum_does_not_depend_on_its_batch(int8_session, maps):
    """One step per spectrum: a bright neighbour in the batch changes nothing."""
    spectra = raw_secondary(maps["test"])[:8]
    bright = spectra.copy()
    bright[0] *= 50

    alone = run(int8_session, spectra[1:2])
    with_neighbours = run(int8_session, np.concatenate([bright[:1], spectra[1:]]))

    assert np.array_equal(alone["primary"][0], with_neighbours["primary"][1])


@pytest.mark.slow
def test_the_worker_model_says_which_precision_it_runs(int8_export, exported):
    from streaming.model import PipelineSession

    assert PipelineSession(int8_export.path).describe()["precision"] == "int8"
    assert PipelineSession(exported.path).describe()["precision"] == "float32"


@pytest.mark.slow
def test_unknown_precision_is_refused(bundle, tmp_path, capsys):
    with pytest.raises(ExportError, match="precision must be one of float32, int8"):
        export_model(bundle, tmp_path / "m.onnx", precision="fp16", progress=False)
    with pytest.raises(SystemExit):
        main(["export", str(bundle.path), "--out", str(tmp_path / "m.onnx"), "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


@pytest.mark.slow
def test_live_int8_results_are_bit_identical_to_each_spectrum_run_alone(int8_export, int8_session, maps, tmp_path):
    """Through a worker, which runs a many-spectrum message (and whatever else is queued)
    as one inference: the batching leaves no trace in the numbers."""
    from tests.streaming.conftest import PlainClient, WorkerProcess

    spectra = raw_secondary(maps["test"])[:24]
    worker = WorkerProcess(int8_export.path, tmp_path)
    client = PlainClient(worker.input, worker.output, worker.control)
    try:
        client.wait_joined()
        client.send({"v": 1, "seq": 0, "dtype": "<f4", "shape": list(spectra.shape)}, spectra.tobytes())
        for seq, spectrum in enumerate(spectra, start=1):
            client.send({"v": 1, "seq": seq, "dtype": "<f4", "shape": [spectra.shape[1]]}, spectrum.tobytes())
        results = client.receive({b"transfer"}, 1 + len(spectra))
    finally:
        client.close()
        worker.stop()

    assert [header["in_seq"] for _, header, _ in results] == list(range(1 + len(spectra)))
    together = np.frombuffer(results[0][2], "<f4").reshape(len(spectra), -1)
    for i, (_, header, payload) in enumerate(results[1:]):
        alone = run(int8_session, spectra[i:i + 1])["primary"][0]
        assert np.array_equal(together[i], alone), i
        assert np.array_equal(np.frombuffer(payload, "<f4"), alone), i
        assert header["model"] == int8_export.model_id
