"""`libs-transfer calibrate`: the trust score of a bundle calibrated again on a held-out map.

Training calibrates the trust score (`transfer.trust`) on the validation map, which is
measured on the training day. The transfer error of another day is larger and ordered
differently (docs/novelty.md), so a paired map of *another day* than training — a short
map measured for the purpose — calibrates the expected relative error and the "do not
trust" threshold far better. This command refits the head, the calibration curve and the
threshold on such a map (the second model fitted on the training pairs stays) and rewrites
the bundle's trust part; `predict` and `export` use it from then on, and the secondary
system's model id changes with it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from acquisition.shared import cli

from transfer.bundle import TransferBundle, load_bundle, read_json, save_state_tree, write_json, write_manifest
from transfer.data import check_axis, inspect_map
from transfer.predict import PredictError, Transferer, trust_model_name
from transfer.trust import TrustError, TrustScore, calibrate_from_maps, fit_from_maps

log = logging.getLogger(__name__)


def calibrate_bundle(model: str | Path, held_out: str | Path, *, secondary: str | None = None,
                     max_spots: int = 5000, seed: int = 0, progress: bool = True,
                     day_change: float = 0.0) -> TrustScore:
    """Refits the trust calibration of one secondary system on `held_out` and rewrites the bundle
    (`day_change` > 0: its secondaries seen through the simulated day change of that amplitude,
    as `train` calibrates a linear baseline on its training-day validation map)."""
    if not 0.0 <= day_change <= 1.0:
        raise TrustError(f"--day-change {day_change}: an amplitude between 0 and 1 (0.1 as train uses)")
    from transfer.pipeline import _manifest_entry
    bundle = load_bundle(model)
    system = bundle.secondary(secondary)
    held_out = Path(held_out)
    info = inspect_map(held_out, ("primary", "secondary"))
    check_axis(held_out, "secondary", info.wavelengths["secondary"], system.wavelengths)
    check_axis(held_out, "primary", info.wavelengths["primary"], bundle.primary_wavelengths)
    described = trust_model_name(bundle, system)
    predict = _calibrated_model(bundle, system, described)
    if system.trust is None:
        # a bundle from before the trust score: its shape statistics come from the training map
        train, why_not = bundle.data_map(system.name, "train")
        if train is None:
            raise TrustError(f"the bundle has no trust score yet and {why_not}")
        trust = fit_from_maps([train], [held_out], system.preprocess, bundle.primary_preprocess,
                              predict, max_spots=max_spots, seed=seed, progress=progress, day_change=day_change)
    else:
        trust = calibrate_from_maps(dataclasses.replace(system.trust), [held_out], system.preprocess,
                                    bundle.primary_preprocess, predict, max_spots=max_spots, seed=seed,
                                    progress=progress, day_change=day_change)
    trust.report_.update(map=str(held_out.resolve()), model=described)
    _rewrite(bundle, system.name, trust, _manifest_entry)
    log.info("trust of '%s' calibrated on %s: threshold %.3g, held-out median relative error %.3g",
             system.name, held_out, trust.threshold_, trust.report_["median_relative_error"])
    return trust


def _calibrated_model(bundle: TransferBundle, system, name: str):
    """Scaled secondary -> scaled primary of `name`, the model the trust score describes (the
    bundle's `trust_model`, the one `export` writes by default; VAE + MLP for older bundles)."""
    try:
        return Transferer(bundle, system.name, model=name).predict_scaled
    except PredictError:
        raise TrustError(f"the trust score of '{system.name}' describes {name}, which the bundle does not hold") \
            from None


def _rewrite(bundle: TransferBundle, name: str, trust: TrustScore, manifest_entry) -> None:
    model_dir = Path(bundle.path)
    save_state_tree(model_dir / "secondary" / name / "trust.safetensors", trust.get_state())
    provenance = read_json(model_dir / "provenance.json")
    provenance.setdefault("secondaries", {}).setdefault(name, {})["trust_calibration"] = trust.report_
    write_json(model_dir / "provenance.json", provenance)
    entries = {other: manifest_entry(bundle, other) for other in bundle.secondaries}
    entries[name]["trust"] = True
    write_manifest(model_dir, n_primary=bundle.n_primary, latent=bundle.config["vae"]["latent"],
                   secondaries=entries, default_secondary=bundle.default_secondary)


def add_calibrate(subparsers) -> None:
    help_text = "calibrate the trust score (expected relative error, 'do not trust' threshold) on a held-out map"
    p = cli.subcommand(
        subparsers, "calibrate", run=_calibrate, help=help_text, description=f"{help_text}.\n\n" + __doc__.split("\n\n")[1],
        examples=["libs-transfer calibrate model/ day2.h5          # a paired map of another day",
                  "libs-transfer calibrate model/ val.h5 --day-change 0.1   # a training-day map, as another day sees it",
                  "libs-transfer export model/ --out model.onnx      # the graph carries the new calibration"])
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="bundle directory written by train")
    p.add_argument("map", type=Path, metavar="HELD_OUT.h5",
                   help="paired map (both systems) the model was not trained on, best of another day")
    cli.add_secondary_option(p, help="which secondary system of the bundle (default: the first)")
    p.add_argument("--max-spots", type=int, default=5000, help="spectra sampled from the map (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default: %(default)s)")
    p.add_argument("--day-change", type=float, default=0.0, metavar="AMPLITUDE",
                   help="see the map's secondary spectra through random smooth gain curves of this amplitude, "
                        "a simulated other day (train uses [baselines] validation_gain for a linear model on its "
                        "training-day validation map; default: %(default)s, the map as measured)")
    cli.add_json_flag(p, "the new calibration")


def _calibrate(args) -> int:
    trust = calibrate_bundle(args.model, args.map, secondary=args.secondary, max_spots=args.max_spots,
                             seed=args.seed, day_change=args.day_change)
    doc = {"threshold": trust.threshold_, "held_out": trust.report_,
           "knots": [round(float(v), 4) for v in trust.knots_],
           "expected_rel_error": [round(float(v), 4) for v in trust.values_]}
    model = doc["model"] = trust.report_["model"]
    cli.emit(args, f"trust of {model} in {args.model} calibrated on {args.map}: 'do not trust' above an expected "
                   f"relative error of {trust.threshold_:.3g}", doc)
    return 0
