"""transfer.onnx_graph against the pipeline written out step by step in numpy, without a bundle."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import checker, helper

from streaming.testing import random_dense_layers
from transfer.export import OPSET, relative_error
from transfer.onnx_graph import DenseLayer, PipelineArrays, pipeline_graph
from transfer.preprocess import baseline_correct


def _layers(rng, sizes: list[int], slope: float = 0.01) -> list[DenseLayer]:
    return random_dense_layers(rng, sizes, bias_scale=0.1, slope=slope)


def _arrays(rng, n_secondary: int, n_primary: int, decoder_hidden: list[int]) -> PipelineArrays:
    axes = np.linalg.qr(rng.standard_normal((n_secondary, 5)))[0].T
    return PipelineArrays(
        min_window=17, smooth_window=9,
        secondary_mean=rng.uniform(0, 50, n_secondary), secondary_scale=rng.uniform(5, 20, n_secondary),
        mlp=_layers(rng, [n_secondary, 24, 6]), decoder=_layers(rng, [6, *decoder_hidden, n_primary]),
        primary_mean=rng.uniform(0, 500, n_primary), primary_scale=rng.uniform(50, 200, n_primary),
        centroids=rng.uniform(0, 1000, (4, n_primary)), novelty_mean=0.1 * rng.standard_normal(n_secondary),
        novelty_axes=axes, novelty_reference=0.7)


def _numpy_pipeline(a: PipelineArrays, x: np.ndarray) -> dict[str, np.ndarray]:
    """The module docstring's formulas, one step at a time, in float64."""
    def dense(h, layers):
        for layer in layers:
            h = h @ layer.weight.astype(np.float64).T + layer.bias
            if layer.negative_slope is not None:
                h = np.where(h > 0, h, layer.negative_slope * h)
        return h

    z = (baseline_correct(x.astype(np.float64), a.min_window, a.smooth_window) - a.secondary_mean) / a.secondary_scale
    latent = dense(z, a.mlp)
    primary = dense(latent, a.decoder) * a.primary_scale + a.primary_mean
    distances = ((primary[:, None, :] - a.centroids[None]) ** 2).sum(axis=2)
    centred = z - a.novelty_mean
    residual = centred - centred @ a.novelty_axes.T @ a.novelty_axes
    novelty = np.sqrt((residual ** 2).mean(axis=1) / a.novelty_reference)
    return {"primary": primary, "latent": latent, "label": distances.argmin(axis=1), "novelty": novelty}


@pytest.mark.parametrize("n_secondary, n_primary, decoder_hidden", [(300, 260, [16, 32]), (128, 90, [])])
def test_graph_computes_the_pipeline(n_secondary, n_primary, decoder_hidden):
    rng = np.random.default_rng(n_secondary)
    arrays = _arrays(rng, n_secondary, n_primary, decoder_hidden)
    model = helper.make_model(pipeline_graph(arrays), opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    checker.check_model(model, full_check=True)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = (rng.uniform(0, 100, (33, n_secondary))
         + 2000 * np.exp(-0.5 * ((np.arange(n_secondary) - rng.uniform(0, n_secondary, (33, 1))) / 3) ** 2))
    x = x.astype(np.float32)
    primary, latent, label, novelty = session.run(["primary", "latent", "label", "novelty"], {"secondary": x})
    expected = _numpy_pipeline(arrays, x)
    assert relative_error(primary, expected["primary"]).max() <= 1e-4
    assert relative_error(latent, expected["latent"]).max() <= 1e-4
    assert np.array_equal(label, expected["label"])
    assert len(set(expected["label"].tolist())) > 1          # the labels say something
    np.testing.assert_allclose(novelty, expected["novelty"], rtol=1e-4)
