"""Builder for *test models*: random-weight ONNX graphs that obey the exported-model contract.

They are not transfer models. They exist so the worker, the tests and the benchmark can run
without a trained model: same input/output names, dtypes, dynamic batch and metadata as the
graph written by ``transfer/export.py`` (see docs/architecture.md, "Exported model").

Needs the ``onnx`` package (the ``train`` extra); the worker itself only needs onnxruntime.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

OPSET = 17


def make_test_model(
    path: str | Path | None = None,
    *,
    n_secondary: int = 48,
    n_primary: int = 40,
    n_latent: int = 8,
    encoder_hidden: tuple[int, ...] = (),
    decoder_hidden: tuple[int, ...] = (),
    n_clusters: int = 4,
    baseline_window: int = 0,
    seed: int = 0,
) -> bytes:
    """Build a test model and return its serialized bytes (also written to ``path`` if given).

    With no hidden layers it is a fixed random linear map secondary -> latent -> primary.
    ``baseline_window`` > 0 adds a baseline-correction-like front, as the real exported
    pipeline has: a running minimum over about ``baseline_window`` pixels (MaxPool of the
    negated spectrum), smoothed by a box Conv of the same length, subtracted from the input.
    In ONNX Runtime a wide MaxPool costs about a third of the MLP, so the front matters.
    ``label`` is the nearest of ``n_clusters`` random latent
    centroids and ``novelty`` the latent distance to it.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes = []
    initializers = []

    def const(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    x = "secondary"
    if baseline_window:
        x = _baseline_front(node, const, x, n_secondary, baseline_window)

    mean_s = rng.uniform(50, 150, n_secondary).astype(np.float32)
    inv_sd_s = (1.0 / rng.uniform(20, 60, n_secondary)).astype(np.float32)
    x = node("Sub", [x, const("mean_secondary", mean_s)], "x_centred")
    x = node("Mul", [x, const("inv_sd_secondary", inv_sd_s)], "x_scaled")

    def dense(name: str, inp: str, n_in: int, n_out: int, relu: bool) -> str:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        b = (0.01 * rng.standard_normal(n_out)).astype(np.float32)
        out = node("Gemm", [inp, const(f"{name}_w", w), const(f"{name}_b", b)], f"{name}_out")
        return node("Relu", [out], f"{name}_relu") if relu else out

    widths = [n_secondary, *encoder_hidden, n_latent]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        last = i == len(widths) - 2
        x = dense(f"enc{i}", x, n_in, n_out, relu=not last)
    nodes[-1].output[0] = "latent"
    z = "latent"

    widths = [n_latent, *decoder_hidden, n_primary]
    y = z
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        y = dense(f"dec{i}", y, n_in, n_out, relu=i < len(widths) - 2)
    mean_p = rng.uniform(50, 150, n_primary).astype(np.float32)
    sd_p = rng.uniform(20, 60, n_primary).astype(np.float32)
    y = node("Mul", [y, const("sd_primary", sd_p)], "y_unscaled")
    node("Add", [y, const("mean_primary", mean_p)], "primary")

    centroids = rng.standard_normal((n_clusters, n_latent)).astype(np.float32)
    # squared distance |z|^2 - 2 z.c + |c|^2 to every centroid
    z2 = node("ReduceSum", [node("Mul", [z, z], "z_sq"), const("axis1", np.array([1], np.int64))],
              "z_sqsum", keepdims=1)
    zc = node("MatMul", [z, const("centroids_t", centroids.T.copy())], "z_dot_c")
    d2 = node("Add", [node("Sub", [z2, node("Mul", [zc, const("two", np.float32(2))], "z_dot_c2")], "d2a"),
                      const("c_sqsum", (centroids ** 2).sum(axis=1))], "d2")
    node("ArgMin", [d2], "label", axis=1, keepdims=0)
    d2min = node("ReduceMin", [d2], "d2_min", axes=[1], keepdims=0)
    node("Sqrt", [node("Max", [d2min, const("zero", np.float32(0))], "d2_pos")], "novelty")

    graph = helper.make_graph(
        nodes,
        "twinplume_test_model",
        [helper.make_tensor_value_info("secondary", TensorProto.FLOAT, ["batch", n_secondary])],
        [
            helper.make_tensor_value_info("primary", TensorProto.FLOAT, ["batch", n_primary]),
            helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", n_latent]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("novelty", TensorProto.FLOAT, ["batch"]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="twinplume-test-model")
    model.ir_version = 8
    weights_hash = hashlib.sha256()
    for init in initializers:
        weights_hash.update(init.raw_data or numpy_helper.to_array(init).tobytes())
    metadata = {
        "twinplume.model_id": weights_hash.hexdigest()[:16],
        "twinplume.n_primary": str(n_primary),
        "twinplume.n_secondary": str(n_secondary),
        "twinplume.primary_wavelengths": json.dumps(np.linspace(200.0, 900.0, n_primary).round(4).tolist()),
        "twinplume.secondary_wavelengths": json.dumps(np.linspace(250.0, 850.0, n_secondary).round(4).tolist()),
        "twinplume.provenance": json.dumps({"kind": "test model", "random_weights": True, "seed": seed}),
    }
    helper.set_model_props(model, metadata)
    data = model.SerializeToString()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _baseline_front(node, const, x: str, n: int, window: int) -> str:
    """Running-minimum baseline over ``window`` pixels, smoothed and subtracted from ``x`` [batch, n].

    Edge padding (rather than the operators' own zero/-inf padding) keeps the baseline from
    sagging at the ends of the spectrum.
    """
    half = window // 2
    width = 2 * half + 1
    pads = const("edge_pads", np.array([0, 0, half, 0, 0, half], np.int64))
    h = node("Reshape", [x, const("shape_ncl", np.array([-1, 1, n], np.int64))], "x_ncl")
    neg = node("Pad", [node("Neg", [h], "x_neg"), pads], "x_neg_padded", mode="edge")
    low = node("Neg", [node("MaxPool", [neg], "x_negmax", kernel_shape=[width], strides=[1])], "x_runmin")
    box = const("box_kernel", np.full((1, 1, width), 1.0 / width, np.float32))
    baseline = node("Conv", [node("Pad", [low, pads], "x_runmin_padded", mode="edge"), box], "baseline")
    corrected = node("Sub", [h, baseline], "x_corrected")
    return node("Reshape", [corrected, const("shape_nc", np.array([-1, n], np.int64))], "x_flat")
