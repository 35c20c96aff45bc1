"""Which augmentation of the MLP's training closes VAE + MLP's gap on another day?

Fits VAE + MLP once on a scenario's maps (no augmentation), then trains the MLP
again from the same initial weights once per augmentation kind, the VAE kept,
and scores each on the test map (RSE in baseline-corrected primary counts,
causal protocol, as the robustness suite does). Kinds, combinable with "+":

  none        the MLP trained again as it was (how much a second training moves)
  gain        the secondary's counts times 1 + a0 + a1 P1(t) + a2 P2(t), a ~ N(0, 0.1^2)
              (what `[mlp] gain_augment` does, transfer.estimators.with_gain_augmentation);
              gain05 / gain20: amplitude 0.05 / 0.2
  gainc       the same curve on the scaled (centred) values: a gain about the mean spectrum
  bright      both systems' counts times one factor in [0.6, 1.6] (the plasma's brightness)
  shift       the secondary shifted by up to 0.7 pixel (its wavelength calibration)
  bg          a smooth additive background on the secondary

The draws come from this script's own generator (seed 1), not from the
training loop's, so "gain" here and `gain_augment` in `train` differ in their
random numbers, not in what they do. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer_suite import QUICK_OVERRIDES  # noqa: E402
from transfer.config import load_config  # noqa: E402
from transfer.data import ArrayBatches  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.models import ComposedTransfer, LatentMLP  # noqa: E402
from transfer.suite import load_maps, models_from_config  # noqa: E402
from transfer.train import derived_seed, latent_phase_losses  # noqa: E402

EPILOG = """examples:
  nice -n 10 python bench/gain_augmentation.py --maps /tmp/suite-maps --scenario basalt --quick none gain gain20
  python bench/gain_augmentation.py --maps DIR --scenario slag none gain   # DIR/slag-{train,val,test}.h5
"""


def augmentation(kind: str, zero_secondary: torch.Tensor, zero_primary: torch.Tensor, generator: torch.Generator):
    """batch -> augmented batch; zero_*: the scaled value of zero counts per pixel."""
    t = torch.linspace(-1.0, 1.0, zero_secondary.numel())
    basis = torch.stack([torch.ones_like(t), t, 1.5 * t ** 2 - 0.5])
    parts = kind.split("+")

    def apply(batch):
        xs, xp = batch["secondary"], batch["primary"]
        n = xs.shape[0]
        if "bright" in parts:
            s = torch.exp(torch.empty(n, 1).uniform_(np.log(0.6), np.log(1.6), generator=generator))
            xs = zero_secondary + s * (xs - zero_secondary)
            xp = zero_primary + s * (xp - zero_primary)
        for name, amplitude in (("gain", 0.1), ("gain05", 0.05), ("gain20", 0.2), ("gainc", 0.1)):
            if name in parts:
                gain = 1.0 + (amplitude * torch.randn(n, 3, generator=generator)) @ basis
                xs = gain * xs if name == "gainc" else zero_secondary + gain * (xs - zero_secondary)
        if "bg" in parts:
            level = zero_secondary.abs().mean()
            xs = xs + level * (0.05 * torch.randn(n, 3, generator=generator)) @ basis
        if "shift" in parts:
            d = torch.empty(n, 1).uniform_(-0.7, 0.7, generator=generator)
            c = xs - zero_secondary
            left, right = torch.roll(c, 1, 1), torch.roll(c, -1, 1)
            xs = torch.where(d > 0, (1 - d) * c + d * left, (1 + d) * c - d * right) + zero_secondary
        return dict(batch, secondary=xs, primary=xp)
    return apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kinds", nargs="+", help="augmentation kinds (see the module docstring)")
    parser.add_argument("--maps", type=Path, required=True, help="folder with SCENARIO-{train,val,test}.h5")
    parser.add_argument("--scenario", required=True, help="the maps' name prefix, e.g. basalt")
    parser.add_argument("--quick", action="store_true", help="the robustness suite's quick networks")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(None).with_overrides({"mlp": {"gain_augment": 0.0}})
    if args.quick:
        config = config.with_overrides(QUICK_OVERRIDES)
    paths = [args.maps / f"{args.scenario}-{part}.h5" for part in ("train", "val", "test")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"gain_augmentation: no such map: {', '.join(missing)}", file=sys.stderr)
        return 2
    maps = load_maps(*paths, config, seed=0)
    arrays, prep = maps["arrays"], maps["preprocessors"]
    zero_s = torch.from_numpy(prep["secondary"].scaled_zero().astype(np.float32))
    zero_p = torch.from_numpy(prep["primary"].scaled_zero().astype(np.float32))
    unscale = prep["primary"].inverse_transform
    truth = unscale(arrays["test"]["primary"]).astype(np.float64)
    started = time.perf_counter()
    model = models_from_config(config, maps["wavelengths"], seed=0)["vae_mlp"]
    model.fit(arrays["train"]["secondary"], arrays["train"]["primary"],
              validation=(arrays["val"]["secondary"], arrays["val"]["primary"]))
    report = {"bench": "gain_augmentation", "scenario": args.scenario, "quick": args.quick,
              "fitted": {"test_rse": rse(truth, unscale(model.predict(arrays["test"]["secondary"]))),
                         "seconds": round(time.perf_counter() - started, 1)}, "kinds": {}}
    train = ArrayBatches({"secondary": arrays["train"]["secondary"], "primary": arrays["train"]["primary"]}, 128,
                         seed=3)
    val = ArrayBatches({"secondary": arrays["val"]["secondary"], "primary": arrays["val"]["primary"]}, 1024,
                       shuffle=False)
    for kind in args.kinds:
        started = time.perf_counter()
        refit = copy.deepcopy(model)
        loss_fn, val_fn = latent_phase_losses(refit.vae_, float(refit.l2))
        augment = augmentation(kind, zero_s, zero_p, torch.Generator().manual_seed(1))
        torch.manual_seed(derived_seed(0, "init", "mlp"))
        mlp = LatentMLP(refit.n_secondary_, refit.mlp_hidden_, refit.latent_, refit.negative_slope)
        refit._run("mlp", mlp, lambda m, batch, progress, g: loss_fn(m, augment(batch), progress, g), val_fn,
                   train, val, refit.mlp_epochs)
        refit.network_ = ComposedTransfer(mlp, refit.vae_.decoder).eval()
        report["kinds"][kind] = {
            "test_rse": rse(truth, unscale(refit.predict(arrays["test"]["secondary"]))),
            "validation_rse": rse(unscale(arrays["val"]["primary"]), unscale(refit.predict(arrays["val"]["secondary"]))),
            "seconds": round(time.perf_counter() - started, 1)}
        print(f"{args.scenario} {kind}: test RSE {report['kinds'][kind]['test_rse']:.4f}", file=sys.stderr, flush=True)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
