"""Which validation picks the model that survives another day?

For each robustness-suite scenario (its quick maps, or with --full its full-size
ones): every candidate of the
linear baselines' grids is fitted on the training pairs (DS and PDS: every
`ridge_alpha_candidates`; PLS: every `pls_components_candidates`), and VAE +
MLP once with the configuration's defaults. Each is scored on the other day's
test map and on the validation map, as measured and with its secondary counts
under the fixed smooth gain curves of `transfer.day_change` at several
amplitudes. The summary then chooses each family's candidate by one of those
validation scores, recommends the model with the lowest validation RSE as
measured (what `train` does), and reports its test RSE against the best of
the chosen models: the measurement behind `[baselines] validation_gain`
(docs/transfer.md, "Ridge strength chosen for another day").

It also measures the trust score (`transfer.trust_figures.trust_on_maps`) of DS
(its ridge chosen under the change of amplitude 0.1) and of VAE + MLP on the
test map, calibrated on the validation map as measured and under that change:
the measurement behind `transfer.selection.calibration_day_change`
(docs/novelty.md, "Calibrated for another day").

Prints one JSON object: {"scenarios": {name: [rows]}, "trust": {name: {model:
{calibration: figures}}}, "summary": {choice: ...}}.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.transfer_suite import QUICK_OVERRIDES, SCENARIOS, prepare_maps  # noqa: E402
from transfer.config import load_config  # noqa: E402
from transfer.day_change import day_changed  # noqa: E402
from transfer.metrics import rse  # noqa: E402
from transfer.suite import load_maps, models_from_config  # noqa: E402
from transfer.trust_figures import trust_on_maps  # noqa: E402

EPILOG = """examples:
  nice -n 10 python bench/day_change_selection.py --work /tmp/suite-maps --scenario basalt --scenario slag
  python bench/day_change_selection.py --work DIR --scenario granite --no-network   # linear models only, minutes
  python bench/day_change_selection.py --work DIR --scenario basalt --no-network --full   # the 10 000-pair maps
"""

AMPLITUDES = (0.05, 0.1, 0.2, 0.3)
#: the amplitude of the trust comparison (the default `[baselines] validation_gain`)
TRUST_CHANGE = 0.1
GRIDS = {"ds": ("alpha", "ridge_alpha_candidates"), "pds": ("alpha", "ridge_alpha_candidates"),
         "pls": ("n_components", "pls_components_candidates")}


def measure(name: str, work: Path, config, *, network: bool, quick: bool = True) -> tuple[list[dict], dict]:
    """One row per fitted candidate (model, params, test RSE, validation RSE as measured and changed),
    and the trust figures of DS and VAE + MLP per calibration."""
    from sklearn.base import clone
    paths = SCENARIOS[name](work, quick)
    maps = load_maps(paths["train"], paths["val"], paths["test"], config, seed=0)
    arrays, prep = maps["arrays"], maps["preprocessors"]
    unscale, zero = prep["primary"].inverse_transform, prep["secondary"].scaled_zero()
    train = (arrays["train"]["secondary"], arrays["train"]["primary"])
    val_secondary = arrays["val"]["secondary"]
    val_truth = unscale(arrays["val"]["primary"]).astype(np.float64)
    test_truth = unscale(arrays["test"]["primary"]).astype(np.float64)
    inputs = {"val": val_secondary, **{f"val_gain{a:g}": day_changed(val_secondary, zero, a) for a in AMPLITUDES}}
    prototypes = models_from_config(config, maps["wavelengths"], seed=0)
    rows = []

    def score(model_name, model, params):
        row = {"model": model_name, "params": params,
               "test": rse(test_truth, unscale(model.predict(arrays["test"]["secondary"])).astype(np.float64))}
        row.update({key: rse(val_truth, unscale(model.predict(x)).astype(np.float64)) for key, x in inputs.items()})
        rows.append(row)
        print(f"{name} {model_name} {params}: test {row['test']:.4f}, validation {row['val']:.4f}", file=sys.stderr,
              flush=True)

    for key, (parameter, candidates) in GRIDS.items():
        for value in config["baselines"][candidates]:
            value = int(value) if parameter == "n_components" else float(value)
            score(key, clone(prototypes[key]).set_params(**{parameter: value}).fit(*train), {parameter: value})
    chosen = min((r for r in rows if r["model"] == "ds"), key=lambda r: r[f"val_gain{TRUST_CHANGE:g}"])
    trusted = {"ds": clone(prototypes["ds"]).set_params(**chosen["params"]).fit(*train)}
    if network:
        model = clone(prototypes["vae_mlp"]).fit(*train, validation=(val_secondary, arrays["val"]["primary"]),
                                                 secondary_zero=zero)
        score("vae_mlp", model, {})
        trusted["vae_mlp"] = model
    trust = {key: {label: trust_on_maps(model.predict, maps, day_change=change)["validation"]
                   for label, change in (("as_measured", 0.0), ("under_change", TRUST_CHANGE))}
             for key, model in trusted.items()}
    for key, figures in trust.items():
        print(f"{name} {key} trust: mean predicted / observed " + ", ".join(
            f"{label} {f['mean_predicted_over_observed']:.2f}" for label, f in figures.items()), file=sys.stderr)
    return rows, trust


def summarise(scenarios: dict[str, list[dict]]) -> dict:
    """Per way of choosing each family's candidate: the recommended model (lowest validation RSE
    as measured) per scenario, its test RSE over the best chosen one's, the worst and geometric
    mean over the scenarios."""
    out = {}
    for choice in ["val", *(f"val_gain{a:g}" for a in AMPLITUDES)]:
        per = {}
        for name, rows in scenarios.items():
            chosen = {m: min((r for r in rows if r["model"] == m), key=lambda r: r[choice])
                      for m in dict.fromkeys(r["model"] for r in rows)}
            best = min(r["test"] for r in chosen.values())
            recommended = min(chosen, key=lambda m: chosen[m]["val"])
            per[name] = {"recommended": recommended, "test": chosen[recommended]["test"],
                         "over_best": chosen[recommended]["test"] / best,
                         "chosen": {m: {"params": r["params"], "test": r["test"]} for m, r in chosen.items()}}
        out[choice] = {"scenarios": per, "worst_over_best": max(p["over_best"] for p in per.values()),
                       "geometric_mean_test": float(np.exp(np.mean([np.log(p["test"]) for p in per.values()])))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the suite's map folder (maps written if missing)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME", required=True,
                        help="a robustness-suite scenario (repeatable)")
    parser.add_argument("--no-network", action="store_true", help="the linear baselines only")
    parser.add_argument("--full", action="store_true",
                        help="the suite's full-size maps and the default networks (default: its quick mode's)")
    args = parser.parse_args(argv)
    config = load_config(None) if args.full else load_config(None).with_overrides(QUICK_OVERRIDES)
    _, stale = prepare_maps(args.scenario, args.work, quick=not args.full)
    if stale:
        print(f"day_change_selection: {stale}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    measured = {name: measure(name, args.work, config, network=not args.no_network, quick=not args.full)
                for name in args.scenario}
    scenarios = {name: rows for name, (rows, _) in measured.items()}
    print(json.dumps({"bench": "day_change_selection", "amplitudes": list(AMPLITUDES), "scenarios": scenarios,
                      "trust": {name: trust for name, (_, trust) in measured.items()},
                      "summary": summarise(scenarios), "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
