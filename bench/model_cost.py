"""What each exportable transfer model costs per spectrum in the live graph: prints ONE JSON object.

The graphs `libs-transfer export` writes (transfer.onnx_graph) with random weights of the
paper's sizes (as bench/trust_cost.py: 3872 -> 4062 pixels, MLP 3872-128-512-64, decoder
64-512-1024-4062, 16 novelty axes, the trust output), for each exportable model: VAE + MLP
(the reference), DS (a 3872 -> 4062 affine map, of rank 64 as `train` fits it by default:
two thin products) and the blend of the two (VAE + MLP and DS's map side by side), and DS
and the blend with DS's whole 3872 x 4062 matrix (`ds_rank = 0`, and bundles written before
the reduced rank). All run in ONNX Runtime in this process, all outputs requested, at
several batch sizes, in alternating rounds, each keeping its best round, so load from other
programs on a shared machine hits them alike. PLS exports DS's graph at its own rank
(its component count, 4-32).

Run: .venv/bin/python bench/model_cost.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trust_cost import (BATCHES, N_PRIMARY, N_SECONDARY, best_rounds, random_trust_parts,  # noqa: E402
                              session)

MODELS = ("vae_mlp", "ds", "blend", "ds_full_rank", "blend_full_rank")
#: DS's rank in the graphs (transfer/default_config.toml, baselines.ds_rank)
DS_RANK = 64


def build(model: str, trust: bool = True, ds_rank: int = DS_RANK):
    """The paper-size live graph of `model` with random weights, as an onnx.ModelProto (no metadata):
    vae_mlp, ds or blend with DS of rank `ds_rank` (0: its whole matrix), or ds_full_rank or
    blend_full_rank (ds_rank 0)."""
    if model.endswith("_full_rank"):
        model, ds_rank = model.removesuffix("_full_rank"), 0
    from onnx import helper

    from streaming.testing import random_dense_layers
    from transfer.export import OPSET
    from transfer.onnx_graph import AffineArrays, BlendParts, PipelineArrays, affine_graph, pipeline_graph
    rng = np.random.default_rng(1)
    frame = dict(
        min_window=100, smooth_window=50,
        secondary_mean=rng.uniform(0, 100, N_SECONDARY), secondary_scale=np.full(N_SECONDARY, 40.0),
        primary_mean=rng.uniform(0, 100, N_PRIMARY), primary_scale=np.full(N_PRIMARY, 40.0),
        centroids=rng.uniform(0, 1000, (8, N_PRIMARY)), novelty_mean=np.zeros(N_SECONDARY),
        novelty_axes=np.linalg.qr(rng.standard_normal((N_SECONDARY, 16)))[0].T, novelty_reference=1.0,
        trust=random_trust_parts(np.random.default_rng(2)) if trust else None)
    if ds_rank:     # L [n_secondary, k] and orthonormal rows R [k, n_primary], as baselines.DSTransfer keeps
        coef = {"coef": rng.standard_normal((N_SECONDARY, ds_rank)) / np.sqrt(N_SECONDARY),
                "coef_right": np.linalg.qr(rng.standard_normal((N_PRIMARY, ds_rank)))[0].T}
    else:
        coef = {"coef": rng.standard_normal((N_SECONDARY, N_PRIMARY)) / np.sqrt(N_SECONDARY)}
    intercept = rng.standard_normal(N_PRIMARY)
    if model == "ds":
        graph = affine_graph(AffineArrays(intercept=intercept, **coef, **frame), "bench_model_cost")
    else:
        graph = pipeline_graph(PipelineArrays(
            mlp=random_dense_layers(rng, [N_SECONDARY, 128, 512, 64]),
            decoder=random_dense_layers(rng, [64, 512, 1024, N_PRIMARY]),
            blend=BlendParts(0.25, intercept=intercept, **coef) if model == "blend" else None, **frame),
            "bench_model_cost")
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twinplume-bench")
    proto.ir_version = min(proto.ir_version, 9)
    return proto


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter rounds (a smoke test of the benchmark)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per batch size (default: 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ONNX Runtime threads (default: every core)")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else 1.5
    sessions = {name: session(build(name).SerializeToString(), args.threads) for name in MODELS}
    x_all = np.random.default_rng(0).uniform(0, 1000, (max(BATCHES), N_SECONDARY)).astype(np.float32)
    result = {"bench": "model_cost", "reference": "vae_mlp", "threads": args.threads, "cpu_count": os.cpu_count(),
              "loadavg_1min_before": round(os.getloadavg()[0], 2), "spectra_per_s": {}, "spectra_per_cpu_s": {},
              "time_per_spectrum_over_vae_mlp": {}}
    for batch in BATCHES:
        best, best_cpu = best_rounds(sessions, x_all[:batch], args.rounds, seconds)
        result["spectra_per_s"][str(batch)] = {name: round(v, 1) for name, v in best.items()}
        result["spectra_per_cpu_s"][str(batch)] = {name: round(v, 1) for name, v in best_cpu.items()}
        result["time_per_spectrum_over_vae_mlp"][str(batch)] = {
            name: round(best["vae_mlp"] / best[name], 3) for name in MODELS}
    result["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
