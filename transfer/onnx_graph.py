"""The live transfer pipeline as an ONNX graph, built from plain arrays (numpy and onnx, no torch).

`transfer.export` fills :class:`PipelineArrays` from a bundle; `bench/stream.py` fills it
with random weights of the paper's sizes, so the benchmark runs the very graph an export
writes. The graph computes, for raw secondary counts ``x`` [batch, n_secondary]::

    corrected = x - baseline(x)                      transfer.preprocess.baseline_correct
    z         = (corrected - m_s) / s_s - m_nov      causal scaling, centred for the novelty
    latent    = MLP(z)                               first bias absorbs m_nov
    h         = decoder hidden layers(latent)
    primary   = h W'^T + b'                          W', b' absorb the inverse primary scaling
                                                     (precision "int8": see int8_dense)
    label     = argmin_j |c_j|^2 - 2 (h W'^T + b') . c_j     in float64, from h
    (a blend with DS: primary = w (h W'^T + b') + (1 - w) (z C' + b_ds'), label from primary)
    novelty   = sqrt(mean((z - P^T P z)^2) / Q_ref)
    expected_rel_error                               only with trust parts (transfer.trust):
                = calibration(head(log min(|primary - q| / |primary|, cap)))
                  q = (c - m_c) A B + m_p: the trust score's reduced-rank second model

Every rewrite above is exact algebra; only float32 rounding differs from the step-by-step
path, far inside the export's parity tolerance. They save the passes over whole spectra that
dominate once the matrix products are fast (bench/stream.py measures the result).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from onnx import GraphProto, TensorProto, helper, numpy_helper

from transfer.preprocess import gaussian_kernel

INPUT = "secondary"
TRUST_OUTPUT = "expected_rel_error"
#: "float32" computes everything in float32 (and the label in float64); "int8" computes the
#: decoder's last layer, three quarters of the arithmetic, in 8-bit integers (int8_dense)
PRECISIONS = ("float32", "int8")
#: int8 weights span +-63, not +-127: x86 CPUs without VNNI multiply uint8 by int8 in pairs
#: summed into int16, which overflows for 255 * 127 * 2 but not for 255 * 63 * 2
INT8_WEIGHT_LIMIT = 63
#: output pixels per row of the Gaussian-mean matrix product; wider rows cost more
#: multiplications, narrower ones more rows (128 was the fastest in ONNX Runtime here)
SMOOTH_BLOCK = 128


@dataclass(frozen=True)
class DenseLayer:
    """y = x W^T + b, then leaky ReLU with ``negative_slope`` unless it is None."""

    weight: np.ndarray                 # [out, in]
    bias: np.ndarray                   # [out]
    negative_slope: float | None = None


@dataclass(frozen=True, kw_only=True)
class PipelineFrame:
    """What every live graph shares around its transfer model: preprocessing, inverse
    scaling, k-means and novelty statistics, and the optional trust score."""

    min_window: int
    smooth_window: int
    secondary_mean: np.ndarray         # m_s [n_secondary]
    secondary_scale: np.ndarray        # s_s [n_secondary]
    primary_mean: np.ndarray           # [n_primary]
    primary_scale: np.ndarray          # [n_primary]
    centroids: np.ndarray              # k-means centroids in primary counts [k, n_primary]
    novelty_mean: np.ndarray           # m_nov [n_secondary], scaled units
    novelty_axes: np.ndarray           # P [k_nov, n_secondary], orthonormal rows
    novelty_reference: float           # Q_ref
    trust: dict | None = None          # transfer.trust.TrustScore.to_onnx_parts(); None: no trust output

    @property
    def n_secondary(self) -> int:
        return int(self.secondary_mean.shape[0])

    @property
    def n_primary(self) -> int:
        return int(self.primary_mean.shape[0])


@dataclass(frozen=True, kw_only=True)
class PipelineArrays(PipelineFrame):
    """Everything the VAE + MLP graph computes with (shapes in the module docstring's names)."""

    mlp: Sequence[DenseLayer]          # z -> latent
    decoder: Sequence[DenseLayer]      # latent -> scaled primary
    blend: "BlendParts | None" = None  # the blend with DS (None: VAE + MLP alone)


@dataclass(frozen=True)
class BlendParts:
    """DS beside VAE + MLP: scaled primary = w * decoder(latent) + (1 - w) * (z_s @ coef + intercept),
    z_s the scaled secondary (transfer.selection.blend)."""

    weight: float                      # w, of VAE + MLP
    coef: np.ndarray                   # [n_secondary, n_primary], scaled units; L of coef = L R if coef_right
    intercept: np.ndarray              # [n_primary], scaled units
    coef_right: np.ndarray | None = None   # R [k, n_primary] of a reduced-rank DS (baselines.DSTransfer rank)


class GraphBuilder:
    """Nodes and initializers of one ONNX graph, with generated names."""

    def __init__(self):
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0

    def const(self, name: str, array: Any) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, name: str, *values: int) -> str:
        return self.const(name, np.array(values, np.int64))

    def op(self, op_type: str, inputs: list[str], *, output: str | None = None, **attributes: Any) -> str:
        self._count += 1
        output = output or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{self._count}", **attributes))
        return output


def baseline_corrected(g: GraphBuilder, x: str, n: int, min_window: int, smooth_window: int,
                       offset: np.ndarray | None = None) -> str:
    """x [batch, n] minus the baseline of transfer.preprocess.baseline_correct (minus ``offset``).

    Sliding minimum: one MaxPool of -x padded by w-1 on both sides gives every window's
    maximum; the trailing windows are its first n values, the leading ones its last n.
    Gaussian mean: the zero-padded sum is cut into rows of B outputs, each row extended by
    the 2s-2 inputs its last outputs reach into the next row, and multiplied by one banded
    [B + 2s - 2, B] matrix: a plain matrix product, which ONNX Runtime runs far faster
    than a 99-tap Conv.
    """
    w, s = min_window, smooth_window
    reach = 2 * s - 2
    block = max(SMOOTH_BLOCK, reach)
    n_blocks = -(-n // block)
    negated = g.op("Neg", [g.op("Unsqueeze", [x, g.ints("baseline_axis_1", 1)])])              # [batch, 1, n]
    window_max = g.op("MaxPool", [negated], kernel_shape=[w], strides=[1], pads=[w - 1, w - 1])  # [.., n + w - 1]
    last_axis = g.ints("baseline_axis_2", 2)
    trailing = g.op("Slice", [window_max, g.ints("baseline_trailing_start", 0), g.ints("baseline_trailing_stop", n),
                              last_axis])
    leading = g.op("Slice", [window_max, g.ints("baseline_leading_start", w - 1),
                             g.ints("baseline_leading_stop", n + w - 1), last_axis])
    minus_twice_min = g.op("Add", [trailing, leading])
    padded = g.op("Pad", [minus_twice_min, g.ints("baseline_pads", 0, 0, s - 1, 0, 0,
                                                  (n_blocks + 1) * block - n - (s - 1))])
    rows = g.op("Reshape", [padded, g.ints("baseline_rows_shape", -1, n_blocks + 1, block)])
    heads = g.op("Slice", [rows, g.ints("baseline_heads_start", 0), g.ints("baseline_heads_stop", n_blocks),
                           g.ints("baseline_heads_axis", 1)])
    tails = g.op("Slice", [rows, g.ints("baseline_tails_start", 1, 0), g.ints("baseline_tails_stop", n_blocks + 1, reach),
                           g.ints("baseline_tails_axes", 1, 2)])
    windows = g.op("Concat", [heads, tails], axis=2)                                # [batch, n_blocks, block + reach]
    kernel = -0.5 * gaussian_kernel(s)                                              # the -1/2 averages the two minima
    band = np.zeros((block + reach, block), np.float32)
    for j in range(block):
        band[j:j + reach + 1, j] = kernel
    baseline = g.op("MatMul", [windows, g.const("baseline_gaussian_band", band)])  # [batch, n_blocks, block]
    if offset is not None:
        shifted = np.zeros(n_blocks * block, np.float32)
        shifted[:n] = offset
        baseline = g.op("Add", [baseline, g.const("baseline_offset", shifted.reshape(n_blocks, block))])
    flat = g.op("Reshape", [baseline, g.ints("baseline_flat_shape", -1, n_blocks * block)])
    if n_blocks * block != n:
        flat = g.op("Slice", [flat, g.ints("baseline_start", 0), g.ints("baseline_stop", n), g.ints("baseline_axis", 1)])
    return g.op("Sub", [x, flat])


def dense_stack(g: GraphBuilder, x: str, layers: Sequence[DenseLayer], prefix: str) -> str:
    for index, layer in enumerate(layers):
        weight = g.const(f"{prefix}.{index}.weight", np.asarray(layer.weight, np.float32))
        bias = g.const(f"{prefix}.{index}.bias", np.asarray(layer.bias, np.float32))
        x = g.op("Gemm", [x, weight, bias], transB=1)
        if layer.negative_slope is not None:
            x = g.op("LeakyRelu", [x], alpha=float(layer.negative_slope))
    return x


def int8_dense(g: GraphBuilder, h: str, weight: np.ndarray, bias: np.ndarray, output: str) -> str:
    """y = h W^T + b with W in int8, one step per output (row of W), and h in 8 bits, one
    step per spectrum: MatMulInteger, then the two steps and the bias in float32.

    The step of a spectrum depends on that spectrum alone, so a result does not depend on
    which other spectra share its batch (a whole-batch step, as in dynamic quantization,
    would make it depend on the brightest one). Integer sums are exact, so the result is
    bit-identical however ONNX Runtime splits the work.
    """
    weight = np.asarray(weight, np.float64)
    weight_step = np.abs(weight).max(axis=1) / INT8_WEIGHT_LIMIT
    weight_step[weight_step == 0] = 1.0
    quantized = np.round(weight / weight_step[:, None]).astype(np.int8)
    peak = g.op("ReduceMax", [g.op("Abs", [h])], axes=[1], keepdims=1)                      # [batch, 1]
    step = g.op("Mul", [g.op("Max", [peak, g.const("int8_smallest_peak", np.float32(1e-30))]),
                        g.const("int8_inverse_limit", np.float32(1 / 127))])
    # h / step lies in [-127, 127]; +128 moves it to [1, 255], the zero point of MatMulInteger
    shifted = g.op("Add", [g.op("Round", [g.op("Div", [h, step])]), g.const("int8_zero_point_f", np.float32(128))])
    codes = g.op("Cast", [shifted], to=TensorProto.UINT8)
    sums = g.op("MatMulInteger", [codes, g.const("int8_weight_t", np.ascontiguousarray(quantized.T)),
                                  g.const("int8_zero_point", np.uint8(128))])
    scaled = g.op("Mul", [g.op("Cast", [sums], to=TensorProto.FLOAT),
                          g.const("int8_weight_step", weight_step.astype(np.float32))])
    return g.op("Add", [g.op("Mul", [scaled, step]), g.const("int8_bias", np.asarray(bias, np.float32))],
                output=output)


def pipeline_graph(a: PipelineArrays, name: str = "twinplume_transfer", *, precision: str = "float32") -> GraphProto:
    """The graph of the module docstring, with the contracted inputs and outputs."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    g = GraphBuilder()
    secondary_scale = np.asarray(a.secondary_scale, np.float64)
    novelty_mean = np.asarray(a.novelty_mean, np.float64)
    offset = np.asarray(a.secondary_mean, np.float64) + novelty_mean * secondary_scale
    centred = baseline_corrected(g, INPUT, a.n_secondary, a.min_window, a.smooth_window, offset=offset)
    z = g.op("Mul", [centred, g.const("secondary_inverse_scale", (1.0 / secondary_scale).astype(np.float32))])

    first, *rest = a.mlp
    first = DenseLayer(first.weight, np.asarray(first.bias, np.float64)
                       + np.asarray(first.weight, np.float64) @ novelty_mean, first.negative_slope)
    g.op("Identity", [dense_stack(g, z, [first, *rest], "mlp")], output="latent")

    *hidden, last = a.decoder
    h = dense_stack(g, "latent", hidden, "decoder")
    primary_scale = np.asarray(a.primary_scale, np.float64)
    weight = (primary_scale[:, None] * np.asarray(last.weight, np.float64)).astype(np.float32)
    bias = (primary_scale * np.asarray(last.bias, np.float64) + np.asarray(a.primary_mean, np.float64)
            ).astype(np.float32)
    if a.blend is not None:
        if precision != "float32":
            raise ValueError(f"the blend with DS is built in float32 only, not {precision}")
        blended_output(g, h, z, a, weight, bias)
        nearest_centroid(g, a.centroids)
    else:
        if precision == "int8":
            int8_dense(g, h, weight, bias, output="primary")
        else:
            g.op("Gemm", [h, g.const("primary.weight", weight), g.const("primary.bias", bias)], output="primary",
                 transB=1)
        # |p - c|^2 - |p|^2 = |c|^2 - 2 p.c with p = h W'^T + b', in float64 (counts squared reach 1e10)
        centroids = np.asarray(a.centroids, np.float64)
        through = weight.astype(np.float64).T @ centroids.T                       # [hidden, k]
        constant = np.einsum("ij,ij->i", centroids, centroids) - 2.0 * centroids @ bias.astype(np.float64)
        products = g.op("MatMul", [g.op("Cast", [h], to=TensorProto.DOUBLE), g.const("kmeans_through", -2.0 * through)])
        g.op("ArgMin", [g.op("Add", [products, g.const("kmeans_constant", constant)])], output="label", axis=1,
             keepdims=0)

    novelty_output(g, z, a.novelty_axes, a.n_secondary, a.novelty_reference)
    if a.trust is not None:
        trust_outputs(g, centred, "primary", a.trust, offset=offset)

    return _graph(g, name, a.n_secondary, a.n_primary, int(np.asarray(a.mlp[-1].weight).shape[0]),
                  a.trust is not None)


def blended_output(g: GraphBuilder, h: str, z: str, a: PipelineArrays, weight: np.ndarray, bias: np.ndarray) -> None:
    """primary = w (h W'^T + b') + (1 - w) (z C' + b_ds'): W', b' as in pipeline_graph; C', b_ds'
    absorb m_nov and the inverse primary scaling. A reduced-rank DS (C = L R) shares the
    decoder's last product: [h, z L] times [w W'^T; (1 - w) R'] in one Gemm. Its label comes
    from the primary counts (nearest_centroid): the decoder's shortcut to the label no longer holds."""
    w = float(a.blend.weight)
    novelty_mean = np.asarray(a.novelty_mean, np.float64)
    primary_scale = np.asarray(a.primary_scale, np.float64)
    left, right = np.asarray(a.blend.coef, np.float64), a.blend.coef_right
    ds_bias = (1.0 - w) * ((np.asarray(a.blend.intercept, np.float64) + through_map(novelty_mean, left, right))
                           * primary_scale
                           + np.asarray(a.primary_mean, np.float64))
    decoder_weight = w * weight.astype(np.float64).T                            # [hidden, n_primary]
    total_bias = g.const("primary.bias", (w * bias.astype(np.float64) + ds_bias).astype(np.float32))
    if right is not None:
        thin = g.op("MatMul", [z, g.const("blend.ds_left", left.astype(np.float32))])            # [batch, k]
        stacked = np.concatenate([decoder_weight, (1.0 - w) * np.asarray(right, np.float64) * primary_scale])
        g.op("Gemm", [g.op("Concat", [h, thin], axis=1), g.const("primary.weight", stacked.astype(np.float32)),
                      total_bias], output="primary")
        return
    ds_weight = ((1.0 - w) * left * primary_scale[None, :]).astype(np.float32)
    through = g.op("Gemm", [h, g.const("primary.weight", decoder_weight.astype(np.float32)), total_bias])
    g.op("Add", [through, g.op("MatMul", [z, g.const("blend.ds_weight", ds_weight)])], output="primary")


def through_map(vector: np.ndarray, left: np.ndarray, right: np.ndarray | None) -> np.ndarray:
    """vector C of an affine map's matrix C = L R (or C = L where R is None), in float64."""
    through = vector @ left
    return through if right is None else through @ np.asarray(right, np.float64)


def nearest_centroid(g: GraphBuilder, centroids: np.ndarray) -> str:
    """label = argmin_j |c_j|^2 - 2 primary . c_j, in float64, from the "primary" output."""
    centroids = np.asarray(centroids, np.float64)
    products = g.op("MatMul", [g.op("Cast", ["primary"], to=TensorProto.DOUBLE),
                               g.const("kmeans_through", np.ascontiguousarray(-2.0 * centroids.T))])
    return g.op("ArgMin", [g.op("Add", [products, g.const("kmeans_constant",
                                                          np.einsum("ij,ij->i", centroids, centroids))])],
                output="label", axis=1, keepdims=0)


def novelty_output(g: GraphBuilder, z: str, novelty_axes: np.ndarray, n_secondary: int, reference: float) -> str:
    """novelty = sqrt(mean((z - P^T P z)^2) / Q_ref) of the novelty-centred scaled input z."""
    # The residual itself, not |z|^2 - |P z|^2: when most of z lies inside the subspace the
    # difference cancels in float32 and loses the export's parity.
    axes = np.asarray(novelty_axes, np.float32)
    projected = g.op("MatMul", [z, g.const("novelty_axes_t", np.ascontiguousarray(axes.T))])
    residual = g.op("Sub", [z, g.op("MatMul", [projected, g.const("novelty_axes", np.ascontiguousarray(axes))])])
    q = sum_of_squares(g, residual, "novelty", keepdims=0)
    scale = np.array(1.0 / (n_secondary * reference), np.float32)
    return g.op("Sqrt", [g.op("Mul", [q, g.const("novelty_inverse_reference", scale)])], output="novelty")


def sum_of_squares(g: GraphBuilder, x: str, name: str, *, keepdims: int) -> str:
    """sum(x^2) over axis 1 as Mul then ReduceSum: ONNX Runtime's ReduceSumSquare took three
    times as long on [64, 4062] here."""
    return g.op("ReduceSum", [g.op("Mul", [x, x]), g.ints(f"{name}_sum_axis", 1)], keepdims=keepdims)


@dataclass(frozen=True, kw_only=True)
class AffineArrays(PipelineFrame):
    """A linear transfer model (DS, PLS: scaled primary = scaled secondary @ coef + intercept)
    in the same frame as PipelineArrays."""

    coef: np.ndarray                   # [n_secondary, n_primary], scaled units; L of coef = L R if coef_right
    intercept: np.ndarray              # [n_primary], scaled units
    coef_right: np.ndarray | None = None   # R [k, n_primary] of a reduced-rank map (baselines._AffineTransfer)


def affine_graph(a: AffineArrays, name: str = "twinplume_transfer") -> GraphProto:
    """The live pipeline around a linear model, with the contracted inputs and outputs::

        z       = (x - baseline(x) - m_s) / s_s - m_nov
        primary = z C' + b'          C', b' absorb m_nov and the inverse primary scaling;
                                     a reduced-rank C = L R as (z L) R'
        latent  = P z                the scores on the novelty's principal axes (a linear model
                                     has no bottleneck; these are the secondary's own coordinates)
        label   = argmin_j |c_j|^2 - 2 primary . c_j     in float64
        novelty = as pipeline_graph
    """
    g = GraphBuilder()
    secondary_scale = np.asarray(a.secondary_scale, np.float64)
    novelty_mean = np.asarray(a.novelty_mean, np.float64)
    offset = np.asarray(a.secondary_mean, np.float64) + novelty_mean * secondary_scale
    centred = baseline_corrected(g, INPUT, a.n_secondary, a.min_window, a.smooth_window, offset=offset)
    z = g.op("Mul", [centred, g.const("secondary_inverse_scale", (1.0 / secondary_scale).astype(np.float32))])
    axes = np.asarray(a.novelty_axes, np.float64)
    g.op("MatMul", [z, g.const("latent_axes_t", np.ascontiguousarray(axes.T, dtype=np.float32))], output="latent")
    left, right = np.asarray(a.coef, np.float64), a.coef_right
    primary_scale = np.asarray(a.primary_scale, np.float64)
    bias = ((np.asarray(a.intercept, np.float64) + through_map(novelty_mean, left, right)) * primary_scale
            + np.asarray(a.primary_mean, np.float64))
    if right is None:
        weight = (left * primary_scale[None, :]).astype(np.float32)
        g.op("Add", [g.op("MatMul", [z, g.const("primary.weight", weight)]),
                     g.const("primary.bias", bias.astype(np.float32))], output="primary")
    elif a.trust is None:   # z L R' + b': two thin products, k (n_secondary + n_primary) multiply-adds
        thin = g.op("MatMul", [z, g.const("primary.left", left.astype(np.float32))])
        weight = (np.asarray(right, np.float64) * primary_scale[None, :]).astype(np.float32)
        g.op("Gemm", [thin, g.const("primary.weight", weight), g.const("primary.bias", bias.astype(np.float32))],
             output="primary")
    else:
        low_rank_with_trust(g, z, left, np.asarray(right, np.float64) * primary_scale[None, :], bias, a, offset)
    nearest_centroid(g, a.centroids)
    novelty_output(g, z, a.novelty_axes, a.n_secondary, a.novelty_reference)
    if a.trust is not None and right is None:
        trust_outputs(g, centred, "primary", a.trust, offset=offset)
    return _graph(g, name, a.n_secondary, a.n_primary, int(axes.shape[0]), a.trust is not None)


def _graph(g: GraphBuilder, name: str, n_secondary: int, n_primary: int, latent_size: int,
           with_trust: bool = False) -> GraphProto:
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", n_secondary])]
    outputs = [helper.make_tensor_value_info("primary", TensorProto.FLOAT, ["batch", n_primary]),
               helper.make_tensor_value_info("latent", TensorProto.FLOAT, ["batch", latent_size]),
               helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
               helper.make_tensor_value_info("novelty", TensorProto.FLOAT, ["batch"])]
    if with_trust:
        outputs.append(helper.make_tensor_value_info(TRUST_OUTPUT, TensorProto.FLOAT, ["batch"]))
    return helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)


def trust_outputs(g: GraphBuilder, corrected: str, primary: str, parts: dict,
                  offset: np.ndarray | None = None) -> str:
    """Appends the trust score of transfer.trust to any pipeline graph: ``corrected`` is the
    baseline-corrected secondary counts [batch, n_secondary] (minus ``offset`` when given: the
    graph's centred input, so no pass is spent adding it back), ``primary`` the model's primary
    counts [batch, n_primary]; writes the output "expected_rel_error" [batch].

    The second model q = (c - m_c) A B + m_p as two thin products, with a column of ones
    appended between them so that the second also adds m_p and takes q from p in the same
    Gemm: t = [x A + (offset - m_c) A, 1] (x = c - offset), p - q = p - t [B; m_p]. The ones
    are padded on, not made by the first product: ONNX Runtime packs a product's columns in
    blocks of 16, and a 17th column doubled the first product's time. Then
    d = min(|p - q| / max(|p|, floor), cap), feature log(d + floor), in float32: the difference
    is a sizeable fraction of |p| wherever the score matters. The [batch, n_primary] tensors
    written are p - q and the squares of p - q and p: at large batches those passes, not the
    products, cost.
    """
    into = np.asarray(parts["into"], np.float64)
    n = into.shape[0]
    offset = np.zeros(n) if offset is None else np.asarray(offset, np.float64)
    bias = (offset - np.asarray(parts["secondary_mean"], np.float64)) @ into
    out_mean = np.concatenate([np.asarray(parts["out"], np.float64),
                               np.asarray(parts["primary_mean"], np.float64)[None, :]])   # [k + 1, n_primary]
    thin = g.op("Gemm", [corrected, g.const("trust_into", into.astype(np.float32)),
                         g.const("trust_into_bias", bias.astype(np.float32))])            # [batch, k]
    thin = g.op("Pad", [thin, g.ints("trust_ones_pads", 0, 0, 0, 1), g.const("trust_one", np.float32(1.0))])
    apart = sum_of_squares(g, g.op("Gemm", [thin, g.const("trust_out", out_mean.astype(np.float32)), primary],
                                   alpha=-1.0, beta=1.0), "trust_apart", keepdims=1)    # |p - q|^2
    size = sum_of_squares(g, primary, "trust_size", keepdims=1)
    # d^2 = |p - q|^2 / max(|p|^2, floor^2): one Sqrt after the division
    ratio_squared = g.op("Div", [apart, g.op("Max", [size, g.const("trust_norm_floor",
                                                                    np.float32(parts["norm_floor"] ** 2))])])
    return trust_head(g, ratio_squared, parts)


def low_rank_with_trust(g: GraphBuilder, z: str, left: np.ndarray, right: np.ndarray, bias: np.ndarray,
                        a: "AffineArrays", offset: np.ndarray) -> str:
    """A reduced-rank linear model p = (z L) R + b (R, b in primary counts) with the trust
    score of transfer.trust, without a pass over [batch, n_primary] beyond p itself.

    The second model's thin product t = c A + (offset - m_c) A (c = z s_s) shares p's first
    product: X = z [L | s_s A] + [0 | (offset - m_c) A]. Then p - q = [X, 1] M_a and
    p = [X, 1] M_p with M_a = [R; -B; b - m_p] and M_p = [R; 0; b], so |p - q|^2 and |p|^2
    are quadratic forms of the k + k_t + 1 thin coordinates with the Gram matrices M M^T,
    in float64: the difference is a small fraction of |p| wherever the score matters.
    """
    parts = a.trust
    into = np.asarray(parts["into"], np.float64)
    out = np.asarray(parts["out"], np.float64)
    secondary_scale = np.asarray(a.secondary_scale, np.float64)
    k, k_trust = left.shape[1], into.shape[1]
    thin_bias = np.concatenate([np.zeros(k), (offset - np.asarray(parts["secondary_mean"], np.float64)) @ into])
    thin = g.op("Gemm", [z, g.const("primary.left", np.concatenate([left, secondary_scale[:, None] * into], axis=1)
                                   .astype(np.float32)),
                         g.const("trust_into_bias", thin_bias.astype(np.float32))])      # [batch, k + k_t]
    unused = np.zeros((k_trust, right.shape[1]))
    g.op("Gemm", [thin, g.const("primary.weight", np.concatenate([right, unused]).astype(np.float32)),
                  g.const("primary.bias", bias.astype(np.float32))], output="primary")
    thin_one = g.op("Cast", [g.op("Pad", [thin, g.ints("trust_ones_pads", 0, 0, 0, 1),
                                          g.const("trust_one", np.float32(1.0))])], to=TensorProto.DOUBLE)
    apart_rows = np.concatenate([right, -out, (bias - np.asarray(parts["primary_mean"], np.float64))[None, :]])
    size_rows = np.concatenate([right, unused, bias[None, :]])
    apart = quadratic_form(g, thin_one, apart_rows @ apart_rows.T, "trust_apart")              # |p - q|^2
    size = quadratic_form(g, thin_one, size_rows @ size_rows.T, "trust_size")                 # |p|^2
    ratio_squared = g.op("Div", [apart, g.op("Max", [size, g.const("trust_norm_floor",
                                                                    np.float64(parts["norm_floor"] ** 2))])])
    return trust_head(g, g.op("Cast", [ratio_squared], to=TensorProto.FLOAT), parts)


def quadratic_form(g: GraphBuilder, x: str, gram: np.ndarray, name: str) -> str:
    """x G x^T per row, [batch, 1]."""
    product = g.op("MatMul", [x, g.const(f"{name}_gram", np.ascontiguousarray(gram))])
    return g.op("ReduceSum", [g.op("Mul", [product, x]), g.ints(f"{name}_sum_axis", 1)], keepdims=1)


def trust_head(g: GraphBuilder, ratio_squared: str, parts: dict) -> str:
    """From d^2 [batch, 1] (float32) to the output "expected_rel_error" [batch]: the head
    and the calibration curve of transfer.trust."""
    ratio = g.op("Sqrt", [ratio_squared])
    capped = g.op("Min", [ratio, g.const("trust_cap", np.float32(parts["disagreement_cap"]))])
    features = g.op("Log", [g.op("Add", [capped, g.const("trust_feature_floor", np.float32(parts["norm_floor"]))])])
    score = g.op("MatMul", [features, g.const("trust_weights", np.asarray(parts["weights"], np.float32)[:, None])])
    clipped = g.op("Clip", [score, g.const("trust_first_knot", np.float32(parts["first_knot"] - parts["intercept"])),
                            g.const("trust_last_knot", np.float32(parts["last_knot"] - parts["intercept"]))])
    # the intercept moves the knots instead of the score: one Add fewer
    knots = (np.asarray(parts["knots"], np.float64) - parts["intercept"]).astype(np.float32)
    hinges = g.op("Relu", [g.op("Sub", [clipped, g.const("trust_knots", knots)])])       # [batch, K]
    value = g.op("MatMul", [hinges, g.const("trust_slopes", np.asarray(parts["slopes_delta"], np.float32)[:, None])])
    value = g.op("Add", [value, g.const("trust_first_value", np.float32(parts["first_value"]))])
    # beyond the calibrated range: times exp(score - clipped), the head's log relative error
    value = g.op("Mul", [value, g.op("Exp", [g.op("Sub", [score, clipped])])])
    return g.op("Reshape", [value, g.ints("trust_flat", -1)], output=TRUST_OUTPUT)
