"""Builder for *test models*: the exported pipeline graph with small random weights.

They are not transfer models. They exist so the worker, the tests and the benchmark can run
without a trained model, on the very graph ``libs-transfer export`` writes
(transfer.onnx_graph.pipeline_graph: baseline correction, scaling, MLP, decoder, k-means
label, PCA-residual novelty), with the contracted inputs, outputs and metadata (see
docs/architecture.md, "Exported model").

Needs the ``onnx`` package (the ``train`` extra); the worker itself only needs onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

#: ONNX opset of the test models: the export's
OPSET = 17


def random_dense_layers(rng: np.random.Generator, sizes: list[int], *, bias_scale: float = 0.01,
                        slope: float = 0.01) -> list:
    """Random transfer.onnx_graph.DenseLayer stack sizes[0] -> ... -> sizes[-1]: weights scaled by
    1/sqrt(fan-in), leaky ReLU (``slope``) after every layer but the last."""
    from transfer.onnx_graph import DenseLayer

    return [DenseLayer((rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32),
                       (bias_scale * rng.standard_normal(n_out)).astype(np.float32),
                       slope if i < len(sizes) - 2 else None)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]))]


def make_test_model(
    path: str | Path | None = None,
    *,
    n_secondary: int = 48,
    n_primary: int = 40,
    n_latent: int = 8,
    encoder_hidden: tuple[int, ...] = (),
    decoder_hidden: tuple[int, ...] = (),
    n_clusters: int = 4,
    baseline_window: int = 9,
    n_novelty_axes: int = 4,
    precision: str = "float32",
    seed: int = 0,
) -> bytes:
    """Build a test model and return its serialized bytes (also written to ``path`` if given).

    The MLP is secondary -> encoder_hidden -> latent, the decoder latent -> decoder_hidden
    -> primary, with leaky ReLU between layers. ``baseline_window`` is the baseline's
    sliding-minimum window (its Gaussian smoothing takes half of it, at least 2).
    ``label`` is the nearest of ``n_clusters`` random centroids in primary counts and
    ``novelty`` the residual outside ``n_novelty_axes`` random directions.
    """
    from onnx import helper, numpy_helper

    from transfer.onnx_graph import PipelineArrays, pipeline_graph

    rng = np.random.default_rng(seed)

    window = max(2, int(baseline_window))
    axes = np.linalg.qr(rng.standard_normal((n_secondary, min(n_novelty_axes, n_secondary))))[0].T
    arrays = PipelineArrays(
        min_window=window, smooth_window=max(2, window // 2),
        secondary_mean=rng.uniform(0, 50, n_secondary), secondary_scale=rng.uniform(20, 60, n_secondary),
        mlp=random_dense_layers(rng, [n_secondary, *encoder_hidden, n_latent]),
        decoder=random_dense_layers(rng, [n_latent, *decoder_hidden, n_primary]),
        primary_mean=rng.uniform(50, 150, n_primary), primary_scale=rng.uniform(20, 60, n_primary),
        centroids=rng.uniform(0, 300, (n_clusters, n_primary)), novelty_mean=np.zeros(n_secondary),
        novelty_axes=axes, novelty_reference=1.0)
    model = helper.make_model(pipeline_graph(arrays, "twinplume_test_model", precision=precision),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twinplume-test-model")
    model.ir_version = min(model.ir_version, 9)
    weights_hash = hashlib.sha256()
    for init in model.graph.initializer:
        weights_hash.update(init.raw_data or numpy_helper.to_array(init).tobytes())
    helper.set_model_props(model, {
        "twinplume.model_id": weights_hash.hexdigest()[:16],
        "twinplume.n_primary": str(n_primary),
        "twinplume.n_secondary": str(n_secondary),
        "twinplume.primary_wavelengths": json.dumps(np.linspace(200.0, 900.0, n_primary).round(4).tolist()),
        "twinplume.secondary_wavelengths": json.dumps(np.linspace(250.0, 850.0, n_secondary).round(4).tolist()),
        "twinplume.provenance": json.dumps({"kind": "test model", "random_weights": True, "seed": seed,
                                            "precision": {"name": precision}}),
    })
    data = model.SerializeToString()
    if path is not None:
        Path(path).write_bytes(data)
    return data
