"""The trust score (transfer.trust): its definition, its calibration and its ONNX nodes."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from transfer.onnx_graph import TRUST_OUTPUT, GraphBuilder, trust_outputs
from transfer.trust import META_KEYS, OutdatedTrust, TrustError, TrustScore, relative_error

N_SEC, N_PRI = 60, 40


def _spectra(rng, n, lines, scale):
    """Positive line spectra: a mixture of `lines` [m, pixels] with random weights, times `scale`."""
    weights = rng.dirichlet(np.ones(len(lines)), size=n)
    return scale[:, None] * (weights @ lines) + rng.normal(0, 0.5, (n, lines.shape[1]))


def _world(seed=0):
    """Paired spectra whose transfer error grows with a new shape component in the input: training
    pairs (secondary, primary) and held-out triples (secondary, predicted, measured primary)."""
    rng = np.random.default_rng(seed)
    lines = np.abs(rng.normal(0, 1, (4, N_SEC))) ** 4 * 50
    mapping = np.abs(rng.normal(0, 1, (N_SEC, N_PRI)))
    secondary = _spectra(rng, 400, lines, rng.uniform(2, 20, 400))
    train = (secondary, secondary @ mapping)
    novel_line = np.zeros(N_SEC)
    novel_line[7] = 20000.0
    def held_out(n, novelty):
        secondary = _spectra(rng, n, lines, rng.uniform(2, 20, n)) + novelty[:, None] * novel_line
        measured = secondary @ mapping
        # the "model" knows nothing of the new line: it transfers the input without it
        predicted = (secondary - novelty[:, None] * novel_line) @ mapping
        predicted = predicted + rng.normal(0, 0.02, predicted.shape) * np.abs(predicted)
        return secondary, predicted, measured
    return train, held_out, rng


def test_expected_error_follows_the_novel_component_and_is_calibrated():
    train, held_out, rng = _world()
    score = TrustScore(n_components=4).fit(*train)
    calibration = held_out(600, rng.uniform(0, 1, 600) ** 3)
    score.calibrate(*calibration)
    test = held_out(600, rng.uniform(0, 1, 600) ** 3)
    expected = score.expected_relative_error(test[0], test[1])
    observed = relative_error(test[1], test[2])
    from scipy.stats import spearmanr
    assert spearmanr(expected, observed)[0] > 0.7
    # calibrated: mean predicted within 30 % of mean observed over the whole test set
    assert abs(expected.mean() / observed.mean() - 1) < 0.3
    flagged = score.untrusted(test[0], test[1])
    assert 0 < flagged.mean() < 0.5
    assert observed[flagged].mean() > 2 * np.median(observed)


def test_state_round_trip_metadata_and_bad_input():
    train, held_out, rng = _world(1)
    score = TrustScore(n_components=3).fit(*train).calibrate(*held_out(300, rng.uniform(0, 1, 300)))
    again = TrustScore.from_state(score.get_state())
    x, p, _ = held_out(20, rng.uniform(0, 1, 20))
    assert np.array_equal(again.expected_relative_error(x, p), score.expected_relative_error(x, p))
    meta = score.to_metadata()
    assert float(meta[META_KEYS["threshold"]]) == pytest.approx(score.threshold_)
    assert meta[META_KEYS["output"]] == TRUST_OUTPUT
    assert json.loads(meta[META_KEYS["calibration"]])["values"] == pytest.approx(list(score.values_))
    with pytest.raises(TrustError, match="not calibrated"):
        TrustScore(n_components=3).fit(*train).expected_relative_error(x, p)
    with pytest.raises(TrustError, match="at least 12 training spectra"):
        TrustScore(n_components=10).fit(train[0][:5], train[1][:5])
    with pytest.raises(ValueError, match="expected 60 pixels"):
        score.expected_relative_error(x[:, :-1], p)
    with pytest.raises(TrustError, match="20 secondary spectra but 19"):
        score.expected_relative_error(x, p[:-1])
    with pytest.raises(TrustError, match="39 pixels"):
        score.expected_relative_error(x, p[:, :-1])
    with pytest.raises(TrustError, match="400 training secondary spectra but 399"):
        TrustScore(n_components=3).fit(train[0], train[1][:-1])
    old = {"method": "shape-residual-head", "shape_mean": np.zeros(N_SEC), "shape_axes": np.eye(3, N_SEC)}
    with pytest.raises(OutdatedTrust, match="libs-transfer calibrate"):
        TrustScore.from_state(old)


def test_the_second_model_reproduces_the_training_mapping():
    """Truth: the world's primary is a fixed linear map of the secondary; on new spectra of the
    training kind the reduced-rank second model is close to it, and so is a model that is right."""
    train, held_out, rng = _world(3)
    score = TrustScore(n_components=4).fit(*train)
    secondary, _, measured = held_out(200, np.zeros(200))
    assert np.median(relative_error(score.second_model(secondary), measured)) < 0.05
    novel, _, novel_measured = held_out(200, np.ones(200))
    assert np.median(score.disagreement(novel, novel_measured)) > 5 * np.median(score.disagreement(secondary, measured))


@pytest.mark.parametrize("with_offset", [False, True])
def test_onnx_nodes_equal_the_numpy_reference(with_offset):
    """With an offset the graph gets the corrected spectra minus it, as the pipeline graph's
    centred input."""
    train, held_out, rng = _world(2)
    score = TrustScore(n_components=4).fit(*train).calibrate(*held_out(400, rng.uniform(0, 1, 400) ** 2))
    offset = train[0].mean(axis=0) if with_offset else None
    g = GraphBuilder()
    trust_outputs(g, "corrected", "primary", score.to_onnx_parts(), offset=offset)
    graph = helper.make_graph(
        g.nodes, "trust", [helper.make_tensor_value_info("corrected", TensorProto.FLOAT, ["batch", N_SEC]),
                           helper.make_tensor_value_info("primary", TensorProto.FLOAT, ["batch", N_PRI])],
        [helper.make_tensor_value_info(TRUST_OUTPUT, TensorProto.FLOAT, ["batch"])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x, p, _ = held_out(300, rng.uniform(0, 1.5, 300) ** 2)        # beyond the calibration range too
    x[0] = 0.0                                                     # an empty spectrum
    given = x - offset if with_offset else x
    got = session.run([TRUST_OUTPUT], {"corrected": given.astype(np.float32), "primary": p.astype(np.float32)})[0]
    expected = score.expected_relative_error(x.astype(np.float32), p.astype(np.float32))
    assert got.shape == (300,) and np.all(np.isfinite(got))
    assert np.allclose(got, expected, rtol=1e-3, atol=1e-6)
