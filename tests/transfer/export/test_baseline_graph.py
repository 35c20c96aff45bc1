"""The exported baseline correction against transfer.preprocess, window sizes at the edges included."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from transfer.export import OPSET
from transfer.onnx_graph import GraphBuilder, baseline_corrected
from transfer.preprocess import baseline_correct


def _session(build, n: int):
    graph = GraphBuilder()
    dims = ["batch", n]
    out = build(graph, "x")
    proto = helper.make_model(
        helper.make_graph(graph.nodes, "baseline", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, dims)], graph.initializers),
        opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 9
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("n, w, s", [(500, 100, 50), (128, 100, 50), (3872, 100, 50), (120, 13, 7), (30, 50, 4),
                                     (40, 3, 90)])
def test_exported_baseline_matches_the_numpy_one(n, w, s):
    rng = np.random.default_rng(n)
    x = (rng.uniform(0, 50, (4, n)) + 500 * np.exp(-0.5 * ((np.arange(n) - n / 3) / 2.0) ** 2)).astype(np.float32)
    session = _session(lambda g, name: baseline_corrected(g, name, n, w, s), n)
    got = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, baseline_correct(x, w, s), rtol=0, atol=1e-5 * np.abs(x).max())
