"""The worker accepts any model obeying the exported-model contract and names what a bad one breaks."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from streaming.model import ModelContractError, PipelineSession
from streaming.testing import make_test_model


def test_a_model_with_hidden_layers_and_front_runs_like_onnxruntime(tmp_path):
    path = tmp_path / "m.onnx"
    make_test_model(path, n_secondary=64, n_primary=50, n_latent=4, encoder_hidden=(16,), decoder_hidden=(12,),
                    baseline_window=7, seed=9)
    model = PipelineSession(path, threads=1)
    assert (model.n_secondary, model.n_primary) == (64, 50) and len(model.model_id) == 16
    x = np.random.default_rng(0).uniform(0, 300, (5, 64)).astype(np.float32)
    out = model.run(x)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"secondary": x})
    np.testing.assert_array_equal(out["primary"], ref[0])
    np.testing.assert_array_equal(out["label"], ref[2])
    assert out["primary"].shape == (5, 50) and out["label"].dtype == np.int64 and out["novelty"].shape == (5,)
    # dynamic batch: one spectrum works as well as five
    np.testing.assert_allclose(model.run(x[:1])["primary"], ref[0][:1], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["novelty"], ref[3], rtol=1e-5)
    assert out["finite"].all() and (out["novelty"] >= 0).all()


def test_rows_that_overflow_are_marked_not_finite(tmp_path):
    path = tmp_path / "m.onnx"
    make_test_model(path, n_secondary=64, n_primary=50, seed=2)
    model = PipelineSession(path, threads=1)
    x = np.random.default_rng(0).uniform(0, 300, (3, 64)).astype(np.float32)
    x[1] = np.resize(np.array([3.4e38, -3.4e38], np.float32), 64)     # x - baseline leaves float32
    assert model.run(x)["finite"].tolist() == [True, False, True]


def identity_model(path, *, outputs=("primary", "latent", "label", "novelty"), metadata=None):
    nodes = [helper.make_node("Identity", ["secondary"], ["primary"]),
             helper.make_node("Identity", ["secondary"], ["latent"]),
             helper.make_node("ReduceMin", ["secondary"], ["novelty"], axes=[1], keepdims=0),
             helper.make_node("ArgMin", ["secondary"], ["label"], axis=1, keepdims=0)]
    types = {"primary": (TensorProto.FLOAT, ["b", 8]), "latent": (TensorProto.FLOAT, ["b", 8]),
             "label": (TensorProto.INT64, ["b"]), "novelty": (TensorProto.FLOAT, ["b"])}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("secondary", TensorProto.FLOAT, ["b", 8])],
                              [helper.make_tensor_value_info(n, *types[n]) for n in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, metadata if metadata is not None else
                           {"twinplume.model_id": "x1", "twinplume.n_primary": "8", "twinplume.n_secondary": "8"})
    path.write_bytes(model.SerializeToString())
    return path


def test_a_minimal_contract_model_is_accepted(tmp_path):
    model = PipelineSession(identity_model(tmp_path / "ok.onnx"))
    assert model.model_id == "x1" and model.describe()["n_primary"] == 8


@pytest.mark.parametrize("kwargs,match", [
    ({"outputs": ("primary", "latent", "label")}, "output 'novelty'"),
    ({"metadata": {"twinplume.n_primary": "8", "twinplume.n_secondary": "8"}}, "twinplume.model_id"),
    ({"metadata": {"twinplume.model_id": "a", "twinplume.n_primary": "8", "twinplume.n_secondary": "9"}},
     "n_secondary=9"),
])
def test_contract_violations_are_named(tmp_path, kwargs, match):
    with pytest.raises(ModelContractError, match=match):
        PipelineSession(identity_model(tmp_path / "bad.onnx", **kwargs))


def test_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelContractError, match="cannot load"):
        PipelineSession(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PipelineSession(tmp_path / "absent.onnx")
