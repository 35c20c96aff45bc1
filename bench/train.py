"""Training throughput of the transfer networks on a small simulated paired map.

Simulates a train and a validation map (day 0), trains the paper's
architecture (VAE 4062-1024-512-64, MLP 3872-128-512-64; or the sizes of
--config) for a few epochs through the real pipeline, and prints one JSON
object with spectra per second per epoch for the VAE and the MLP (progress
and logs go to stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from sim.generate import generate_map
from transfer.config import load_config
from transfer.models import build_mlp, build_vae, count_parameters
from transfer.pipeline import train_model

EPILOG = """example:
  python bench/train.py --side 24 --epochs 3 --device auto
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=24, help="the training map is side x side spots")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the VAE and of the MLP")
    parser.add_argument("--config", type=Path, default=None, help="TOML overriding the paper's sizes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config, overrides={
        "vae": {"epochs": args.epochs, "min_steps": 0}, "mlp": {"epochs": args.epochs, "patience": 0, "min_steps": 0},
        "one_step": {"enabled": False}, "finetune": {"epochs": 0}, "baselines": {"models": []},
        "kmeans": {"k_candidates": [4], "silhouette_spots": 200, "max_fit_spots": 1000}})
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        scratch = Path(scratch)
        started = time.perf_counter()
        train = generate_map(scratch / "train.h5", shape=(args.side, args.side), step_um=40.0, progress=False)
        val = generate_map(scratch / "val.h5", shape=(max(args.side // 3, 2), args.side), step_um=40.0,
                           origin_um=(0.0, 24000.0), progress=False)
        simulate_s = time.perf_counter() - started
        started = time.perf_counter()
        bundle = train_model(train, val, scratch / "model", config=config, device=args.device, seed=0)
        total_s = time.perf_counter() - started
    history = bundle.history
    mlp_history = history["secondaries"]["secondary"]["mlp"]
    n_primary = bundle.n_primary
    n_secondary = bundle.secondary().n_pixels
    result = {
        "benchmark": "transfer training throughput",
        "device": str(bundle.provenance["primary"]["device"]),
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "train_spectra": args.side * args.side,
        "epochs": args.epochs,
        "vae": {"parameters": count_parameters(build_vae(n_primary, config["vae"])),
                "hidden": config["vae"]["hidden"], "latent": config["vae"]["latent"],
                "batch_size": config["vae"]["batch_size"],
                "spectra_per_s": [round(r["spectra_per_s"], 1) for r in history["vae"]]},
        "mlp": {"parameters": count_parameters(build_mlp(n_secondary, config["mlp"], config["vae"]["latent"])),
                "hidden": config["mlp"]["hidden"], "batch_size": config["mlp"]["batch_size"],
                "spectra_per_s": [round(r["spectra_per_s"], 1) for r in mlp_history]},
        "simulate_s": round(simulate_s, 2),
        "pipeline_s": round(total_s, 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
