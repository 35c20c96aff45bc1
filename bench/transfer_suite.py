"""The transfer robustness suite: every model on every scenario, one JSON table.

Each scenario writes a paired training map, a validation map and a test map
(simulated); every transfer model (VAE + MLP, one-step MLP, PLS, KNN, DS, PDS)
is trained with the configuration (transfer/default_config.toml unless
--config) and scored on the test map under the causal protocol: RSE in
baseline-corrected primary counts and k-score. The scenario's `recommended`
model is the one `libs-transfer train` records (transfer.selection.recommend:
the lowest validation RSE, linear baselines within 15 % of each other told
apart under the simulated day change) and `exported` the one `export` writes by
default (the same rule among the exportable models).

Three sizes: without a flag, the full-size maps and the default (paper-size)
networks, hours on two cores; `--quick`, quarter-size maps and smaller
networks, every scenario distinct at that size, in about 15 minutes on two
cores with one process per core (`--jobs`, default: one per core); `--smoke`,
two small scenarios with every phase capped at three epochs, a check that
everything runs (about a minute).

For every exportable model (VAE + MLP, DS, PLS) it also measures the trust
score (transfer/trust.py) on the test map, fitted and calibrated as `train`
does (calibration on the validation map), and once more calibrated on one half
of the test map and scored on the other (transfer/trust_figures.py): Spearman ρ
of the expected relative error with the actual relative and absolute errors, the
median ρ within intensity deciles, the relative error of the 5 % highest scores
over the median, and the reliability per score decile (predicted against
observed mean error, the fraction of deciles within ±30 %).

Prints one JSON object and writes a markdown summary (WORK/transfer_suite.md
by default; docs/transfer_suite.md collects the measured runs by hand): the
table per scenario, the trust figures, where each model wins,
the targets of docs/transfer.md and docs/novelty.md checked, and RSE against
the number of paired training spectra (the `pegmatite-n*` scenarios);
`--reliability-figure PNG` draws the reliability of every scenario. After every
scenario the markdown and a `.partial.json` next to it are rewritten with what
was measured so far, so that a stopped run keeps its finished scenarios.

Adding a scenario is one line in SCENARIOS: a name and a callable
`(work_dir: Path, quick: bool) -> {"train": path, "val": path, "test": path}`
that writes the three maps (and may reuse them when they already exist).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from transfer.config import TransferConfig, load_config
from transfer.selection import EXPORTABLE, LINEAR, MODEL_NAMES, TIE_TOLERANCE, live_model, recommend
from transfer.suite import fit_and_score, load_maps, models_from_config

EPILOG = """examples:
  python bench/transfer_suite.py --smoke                            # smoke test: every model and figure, a minute
  nice -n 10 python bench/transfer_suite.py --quick                 # every scenario, quarter-size maps: ~15 min on 2 cores
  nice -n 10 python bench/transfer_suite.py                         # every scenario at full size, paper-size networks: hours
  python bench/transfer_suite.py --scenario pegmatite-n300 --scenario pegmatite-day2
  python bench/transfer_suite.py --quick --scenario basalt --model vae_mlp --model ds   # two models only
  nice -n 10 python bench/transfer_suite.py --quick --jobs 2 --scenario basalt --scenario slag   # one process per core
  python bench/transfer_suite.py --config my.toml --markdown /tmp/suite.md --work /tmp/suite-maps
  nice -n 10 python bench/transfer_suite.py --quick --calibrated   # a lab that calibrates its axes each day
"""

Maps = dict[str, Path]
#: (work, quick, calibrated=False) -> the scenario's maps; calibrated: both spectrometers' axes
#: calibrated on each map's day (sim.scene.CALIBRATIONS "daily")
Scenario = Callable[..., Maps]

# Map sizes of the pegmatite scenarios: (ny, nx) of the training map for n paired spectra.
TRAIN_SHAPES = {300: (15, 20), 1000: (25, 40), 3000: (50, 60), 10000: (100, 100)}
QUICK_SHAPES = {300: (15, 20), 1000: (25, 40), 3000: (25, 40), 10000: (25, 40)}

# Smaller networks and fewer epochs for --quick (with the quarter-size maps: the suite in under an hour).
QUICK_OVERRIDES = {
    "vae": {"hidden": [256, 128], "latent": 32, "epochs": 10},
    "mlp": {"hidden": [128, 256], "epochs": 30, "patience": 5},
    "one_step": {"epochs": 15, "patience": 4},
    "kmeans": {"silhouette_spots": 1000, "max_fit_spots": 4000},
}


def _sim_map(path: Path, *, shape, step_um, day, origin_um, seed=0, calibrated=False) -> Path:
    """The pegmatite map at ``path``, simulated unless the file is that map as this simulator writes it."""
    from sim.generate import generate_map
    from sim.scenarios import same_complete_map
    calibration = "daily" if calibrated else "nominal"
    settings = {"shape": shape, "step_um": step_um, "day": day, "origin_um": origin_um, "seed": seed,
                "sample": "pegmatite", "secondary": "standard", "day_change": "mild", "calibration": calibration}
    if not path.exists():
        generate_map(path, shape=shape, step_um=(step_um, step_um), day=day, seed=seed, origin_um=origin_um,
                     progress=False, calibration=calibration)
    elif not same_complete_map(path, settings):
        raise FileExistsError(f"{path} exists and is not this scenario's complete map as this simulator "
                              f"writes it (an earlier version's, or other settings): remove it or use "
                              f"another --work")
    return path


def pegmatite(n_train: int, test_day: int = 1) -> Scenario:
    """Today's simulated pegmatite: training and validation on day 0 (two regions), the test
    map on `test_day` in a third region (the maps of docs/transfer.md)."""
    def write(work: Path, quick: bool, calibrated: bool = False) -> Maps:
        shape = (QUICK_SHAPES if quick else TRAIN_SHAPES)[n_train]
        val_shape, test_shape = ((16, 24), (20, 20)) if quick else ((24, 48), (40, 40))
        tail = "-calibrated.h5" if calibrated else ".h5"
        return {
            "train": _sim_map(work / f"pegmatite-train-{shape[0]}x{shape[1]}{tail}", shape=shape, step_um=280.0,
                              day=0, origin_um=(0.0, 0.0), calibrated=calibrated),
            "val": _sim_map(work / f"pegmatite-val-{val_shape[0]}x{val_shape[1]}{tail}", shape=val_shape,
                            step_um=450.0, day=0, origin_um=(0.0, 24000.0), calibrated=calibrated),
            "test": _sim_map(work / f"pegmatite-test-day{test_day}-{test_shape[0]}x{test_shape[1]}{tail}",
                             shape=test_shape, step_um=300.0, day=test_day, origin_um=(24000.0, 4000.0),
                             calibrated=calibrated),
        }
    return write


def simulated(name: str) -> Scenario:
    """A scenario of sim.scenarios (another sample, spectrometer pair or day change; its own
    train 100x100 / val 40x60 / test 70x70 maps, a quarter of the spots with --quick)."""
    def write(work: Path, quick: bool, calibrated: bool = False) -> Maps:
        from dataclasses import replace

        from sim.scenarios import SCENARIOS as SIMULATED
        scenario = SIMULATED[name]
        if calibrated and scenario.calibration != "daily":
            scenario = replace(scenario, name=f"{name}-calibrated", calibration="daily")
        return scenario.write_maps(work, scale=0.25 if quick else 1.0, progress=False)
    return write


# name -> callable writing the scenario's maps, one line each.
SCENARIOS: dict[str, Scenario] = {
    "pegmatite-n300": pegmatite(300),            # few paired spectra
    "pegmatite-n1000": pegmatite(1000),
    "pegmatite-n3000": pegmatite(3000),          # the pegmatite as in docs/transfer.md
    "pegmatite-n10000": pegmatite(10000),        # many paired spectra
    "pegmatite-day2": pegmatite(3000, test_day=2),
    "pegmatite-n300-day2": pegmatite(300, test_day=2),
    "basalt": simulated("basalt"),                              # other samples
    "granite": simulated("granite"),
    "slag": simulated("slag"),
    "pegmatite-narrow-hires": simulated("pegmatite-narrow-hires"),  # other secondary spectrometers
    "pegmatite-broad-lowres": simulated("pegmatite-broad-lowres"),
    "pegmatite-severe": simulated("pegmatite-severe"),          # a severe day-to-day change
    "basalt-few-severe": simulated("basalt-few-severe"),        # 500 pairs and a severe change
    "pegmatite-severe-calibrated": simulated("pegmatite-severe-calibrated"),    # both, in a lab that
    "basalt-few-severe-calibrated": simulated("basalt-few-severe-calibrated"),  # calibrates its axes daily
}
#: --quick without --scenario: every scenario whose quick maps differ (the pegmatite's 1 000-, 3 000- and
#: 10 000-pair training maps are one 25x40 map at that scale)
QUICK = tuple(name for name in SCENARIOS if name not in ("pegmatite-n1000", "pegmatite-n10000"))
#: --smoke: two small scenarios, every model and figure, epochs capped (about a minute)
SMOKE = ("pegmatite-n300", "pegmatite-n300-day2")
SMOKE_MAX_EPOCHS = 3
LEARNING_CURVE = {"pegmatite-n300": 300, "pegmatite-n1000": 1000, "pegmatite-n3000": 3000,
                  "pegmatite-n10000": 10000}


def prepare_maps(names: Sequence[str], work: Path, quick: bool, calibrated: bool = False
                 ) -> tuple[dict[str, Maps], str | None]:
    """Simulates the scenarios' missing maps into `work` (a complete map of this simulator is
    kept): ({name: its maps}, None), or the error line where a file there is not the map this
    simulator writes."""
    paths = {}
    try:
        for name in names:
            paths[name] = SCENARIOS[name](work, quick, calibrated)
    except FileExistsError as exc:
        return paths, str(exc)
    return paths, None


def run_scenario(name: str, paths: Maps, config: TransferConfig, *, seed: int, only: Sequence[str] = (),
                 align: bool = True) -> dict:
    """Every model of `config` fitted and scored on one scenario's maps (`prepare_maps`)."""
    started = time.perf_counter()
    maps = load_maps(paths["train"], paths["val"], paths["test"], config, seed=seed, align=align)
    models = models_from_config(config, maps["wavelengths"], seed=seed, n_fit=len(maps["arrays"]["train"]["primary"]))
    models = {k: v for k, v in models.items() if not only or k in only}
    scores = fit_and_score(models, maps, config, seed=seed, trust_models=EXPORTABLE, decoder_floor=True)
    n_train = len(maps["arrays"]["train"]["primary"])
    return {"n_train": n_train, "n_val": len(maps["arrays"]["val"]["primary"]),
            "n_test": len(maps["arrays"]["test"]["primary"]), "maps": {k: p.name for k, p in paths.items()},
            "models": scores, "summary": summarise(scores, n_train),
            "seconds": round(time.perf_counter() - started, 1)}


def summarise(scores: Mapping[str, Mapping], n_train: int) -> dict:
    """Best model on test, recommended (transfer.selection.recommend, as `train`), and the targets of
    docs/transfer.md."""
    test = {k: v["rse"] for k, v in scores.items()}
    best = min(test, key=test.get)
    validation = {k: v["validation_rse"] for k, v in scores.items()}
    day_change = {k: v["day_change_rse"] for k, v in scores.items() if "day_change_rse" in v}
    recommended = recommend(validation, day_change) or min(validation, key=validation.get)
    linear = [test[k] for k in LINEAR if k in test]
    summary = {"best": best, "best_rse": test[best], "recommended": recommended,
               "recommended_over_best": test[recommended] / test[best]}
    available = [k for k in EXPORTABLE if k in test]
    exported = live_model({"recommended": recommended, "validation_rse": validation, "day_change_rse": day_change},
                          available) if available else None
    if exported in test:
        # what `libs-transfer export` writes by default (transfer.selection.live_model)
        summary.update(exported=exported, exported_over_best=test[exported] / test[best])
    halves = {k: v["rse_test_halves"] for k, v in scores.items() if "rse_test_halves" in v}
    if halves:
        # ranked on a short paired map of the test day (`train --val` with such a map): the first
        # half of the test map, scored on the second
        first, second = ({k: h[i] for k, h in halves.items()} for i in (0, 1))
        ranked = min(first, key=first.get)
        summary.update(ranked_on_test_half=ranked, ranked_on_test_half_over_best=second[ranked] / min(second.values()))
    if "vae_mlp" in test:
        summary["vae_mlp_over_best"] = test["vae_mlp"] / test[best]
        targets = {"recommended_within_10pct": summary["recommended_over_best"] <= 1.10,
                   "no_rse_above_1": max(test.values()) <= 1.0}
        if linear:
            summary["vae_mlp_over_best_linear"] = test["vae_mlp"] / min(linear)
            targets["vae_mlp_within_10pct_of_best_linear"] = summary["vae_mlp_over_best_linear"] <= 1.10
        floor = scores["vae_mlp"].get("decoder_floor_rse")
        if floor is not None:
            # no MLP onto this latent space beats its decoder's best reconstruction of the truth
            summary["decoder_floor_over_best"] = floor / test[best]
        if n_train >= 3000:
            targets["vae_mlp_within_5pct_of_best"] = summary["vae_mlp_over_best"] <= 1.05
            targets["vae_mlp_k_score_0.97"] = scores["vae_mlp"]["k_score"] >= 0.97
        summary["targets"] = targets
    trust = {model: {calibration: trust_targets(figures) for calibration, figures in m["trust"].items()
                     if "rho_relative" in figures}
             for model, m in scores.items() if "trust" in m}
    if trust:
        summary["trust_targets"] = trust
    return summary


def learning_curve(results: Mapping[str, Mapping]) -> dict[str, dict[int, float]]:
    curve: dict[str, dict[int, float]] = {}
    for name, n in LEARNING_CURVE.items():
        if name in results:
            for model, values in results[name]["models"].items():
                curve.setdefault(model, {})[results[name]["n_train"]] = values["rse"]
    return curve


def markdown(report: Mapping) -> str:
    lines = ["# Transfer robustness suite", "",
             f"`{report['command']}` ({'smoke' if report.get('smoke') else 'quick' if report['quick'] else 'full'} run, "
             f"{report['seconds'] / 60:.0f} min on {report['cpus']} CPU core(s), seed {report['seed']})"
             + ("; every map's wavelength axes calibrated on its day" if report.get("calibrated") else "")
             + ("; maps read as stored, without aligning their lines" if report.get("align") is False else "")
             + ".",
             "Causal protocol; RSE in baseline-corrected primary counts (1 = the mean test spectrum); "
             "k-score against the k-means labels of the true test spectra. Bold: the lowest test RSE; "
             "`recommended`: what `train` records (the lowest validation RSE; linear baselines within "
             f"{100 * TIE_TOLERANCE:g} % of each other told apart by their validation RSE under the simulated day "
             "change); `export` writes the same rule's choice among the exportable models. `blend`: w VAE + MLP "
             "+ (1 - w) DS with w chosen on validation, listed where 0 < w < 1 won, as `train` keeps it.", ""]
    for name, result in report["results"].items():
        s = result["summary"]
        lines += [f"## {name}", "",
                  f"{result['n_train']} training pairs, {result['n_val']} validation, {result['n_test']} test "
                  f"spectra; maps {', '.join(result['maps'].values())}; {result['seconds']:.0f} s.", "",
                  "| model | test RSE | k-score | validation RSE | under the day change | fit s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for model, m in result["models"].items():
            rse_text = f"**{m['rse']:.4f}**" if model == s["best"] else f"{m['rse']:.4f}"
            tag = " (recommended)" if model == s["recommended"] else ""
            changed = f"{m['day_change_rse']:.4f}" if "day_change_rse" in m else "–"
            lines.append(f"| {model}{tag} | {rse_text} | {m['k_score']:.3f} | {m['validation_rse']:.4f} | "
                         f"{changed} | {m['fit_s']:.0f} |")
        if "targets" in s:
            missed = [k for k, ok in s["targets"].items() if not ok]
            lines += ["", f"VAE + MLP / best: {s['vae_mlp_over_best']:.2f}; "
                      f"VAE + MLP / best linear: {s.get('vae_mlp_over_best_linear', float('nan')):.2f}; "
                      f"recommended / best: {s['recommended_over_best']:.2f}"
                      + (f"; exported by default: {s['exported']}, / best {s['exported_over_best']:.2f}"
                         if "exported" in s else "") + ". Targets missed: "
                      + (", ".join(missed) if missed else "none") + "."]
        if "ranked_on_test_half" in s:
            lines += ["", f"Ranked on the test map's first half instead (a short paired map of the test day as "
                      f"`--val`): {s['ranked_on_test_half']}, / best on the second half "
                      f"{s['ranked_on_test_half_over_best']:.2f}."]
        if "decoder_floor_over_best" in s:
            m = result["models"]["vae_mlp"]
            lines += ["", f"Decoder floor (the VAE's decoder at the best latent point for each measured primary): "
                      f"test RSE {m['decoder_floor_rse']:.4f} = {s['decoder_floor_over_best']:.2f} × the best model, "
                      f"validation RSE {m['decoder_floor_validation_rse']:.4f}"
                      + (" — no MLP onto this latent space can come within 5 % of the best."
                         if s["decoder_floor_over_best"] > 1.05 else ".")]
        lines += trust_lines(result["models"])
        if "trust_targets" in s:
            missed = [f"{model} ({calibration.replace('_', ' ')}): {', '.join(k for k, ok in t.items() if not ok)}"
                      for model, per in s["trust_targets"].items() for calibration, t in per.items()
                      if not all(t.values())]
            lines += ["", "Trust targets missed: " + ("; ".join(missed) if missed else "none") + "."]
        lines.append("")
    if report["learning_curve"]:
        sizes = sorted({n for values in report["learning_curve"].values() for n in values})
        lines += ["## RSE against the number of paired training spectra", "",
                  "| model | " + " | ".join(str(n) for n in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        for model, values in report["learning_curve"].items():
            lines.append(f"| {model} | " + " | ".join(f"{values[n]:.4f}" if n in values else "–" for n in sizes)
                         + " |")
        lines.append("")
    wins: dict[str, list[str]] = {}
    for name, result in report["results"].items():
        wins.setdefault(result["summary"]["best"], []).append(name)
    lines += ["## Where each model wins", ""]
    lines += [f"- {model}: {', '.join(names)}" for model, names in wins.items()]
    lines.append("")
    return "\n".join(lines)


TRUST_TARGETS = {"rho_relative": 0.5, "top5_over_median": 2.0, "fraction_of_deciles_within_30_percent": 1.0}


def trust_targets(figures: Mapping) -> dict[str, bool]:
    """The targets of docs/novelty.md for one model's trust figures."""
    return {f"{key} >= {floor:g}": bool(figures.get(key, float("nan")) >= floor)
            for key, floor in TRUST_TARGETS.items()}


def trust_lines(models: Mapping[str, Mapping]) -> list[str]:
    rows = [(model, calibration, m["trust"][calibration]) for model, m in models.items() if "trust" in m
            for calibration in ("validation", "test_half") if "rho_relative" in m["trust"].get(calibration, {})]
    if not rows:
        return []
    lines = ["", "Trust score on the test map (`expected_rel_error`; calibrated on the validation map as `train` "
             "ships it, or on the first half of the test map and scored on the second):", "",
             "| model | calibration | ρ rel. error | ρ abs. error | ρ within intensity deciles (median) | "
             "top 5 % / median rel. error | at most (the 5 % largest errors) | median rel. error | "
             "deciles within ±30 % | mean pred. / obs. | flagged |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, calibration, f in rows:
        possible = f.get("top5_possible_over_median")
        lines.append(f"| {model} | {calibration.replace('_', ' ')} | {f['rho_relative']:+.2f} | "
                     f"{f['rho_absolute']:+.2f} | {f['rho_within_deciles_median']:+.2f} | "
                     f"{f['top5_over_median']:.2f} | {'–' if possible is None else format(possible, '.2f')} | "
                     f"{f['median_relative_error']:.3f} | "
                     f"{f['deciles_within_30_percent']}/10 | {f['mean_predicted_over_observed']:.2f} | "
                     f"{100 * f['flagged']:.1f} % |")
    return lines


def reliability_figure(report: Mapping, path: Path) -> Path:
    """Predicted against observed mean relative error per score decile, one panel per scenario,
    every exportable model, calibration on the validation map (solid) and on half the test map
    (dashed); the grey band is ±30 %."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    names = list(report["results"])
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(4 * columns, 3.6 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for index, name in enumerate(names, 1):
        axes = figure.add_subplot(rows, columns, index)
        values = []
        for (model, m), colour in zip(report["results"][name]["models"].items(), [f"C{i}" for i in range(10)]):
            for calibration, style in (("validation", "o-"), ("test_half", "s--")):
                f = m.get("trust", {}).get(calibration, {})
                if "reliability" in f:
                    r = f["reliability"]
                    values += r["predicted"] + r["observed"]
                    axes.plot(r["predicted"], r["observed"], style, color=colour, ms=3, lw=1,
                              label=f"{model}, {calibration.replace('_', ' ')} "
                                    f"({f['deciles_within_30_percent']}/10)")
        if values:
            lo, hi = 0.8 * min(values), 1.25 * max(values)
            axes.fill_between([lo, hi], [lo / 1.3, hi / 1.3], [lo / 0.7, hi / 0.7], color="0.88", zorder=0)
            axes.plot([lo, hi], [lo, hi], color="0.4", lw=0.8)
            axes.set_xscale("log")
            axes.set_yscale("log")
            for axis in (axes.xaxis, axes.yaxis):     # labelled minor ticks overlap on a narrow range
                axis.set_minor_formatter(NullFormatter())
                axis.set_major_formatter(ScalarFormatter())
            axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.set_title(name, fontsize=9)
        axes.set_xlabel("predicted mean relative error", fontsize=8)
        axes.set_ylabel("observed mean relative error", fontsize=8)
        axes.legend(fontsize=6)
    figure.suptitle("Trust score reliability per score decile on each test map (band: ±30 %)", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def suite_config(path: Path | None, *, quick: bool, max_epochs: int | None) -> TransferConfig:
    """The configuration file (or the defaults), the quick mode's sizes, then the epoch cap
    (after the quick mode's epochs, so that it caps them too)."""
    config = load_config(path)
    return (config.with_overrides(QUICK_OVERRIDES) if quick else config).with_max_epochs(max_epochs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="quarter-size maps and smaller networks; every scenario distinct at that size")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the quick mode on {' and '.join(SMOKE)} with every phase capped at "
                             f"{SMOKE_MAX_EPOCHS} epochs: a check that everything runs, not a measurement")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), metavar="NAME",
                        help=f"run only this scenario (repeatable); known: {', '.join(SCENARIOS)}")
    fitted = [m for m in MODEL_NAMES if m != "blend"]
    parser.add_argument("--model", action="append", choices=fitted, metavar="NAME",
                        help=f"fit only this model (repeatable; default all: {', '.join(fitted)}; the blend of "
                             "VAE + MLP and DS is scored where both are fitted)")
    parser.add_argument("--config", type=Path, default=None, help="TOML overriding transfer/default_config.toml")
    parser.add_argument("--max-epochs", type=int, default=None, help="cap every training phase's epochs")
    parser.add_argument("--work", type=Path, default=Path("/tmp/transfer-suite"), help="where the maps are written")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="markdown summary to write (default: WORK/transfer_suite.md)")
    parser.add_argument("--reliability-figure", type=Path, default=None, metavar="PNG",
                        help="also draw the trust score's reliability per scenario into this PNG")
    parser.add_argument("--calibrated", action="store_true",
                        help="every map's wavelength axes calibrated on its day (a lab that calibrates "
                             "daily; its maps are resampled onto the model's axes): the scenarios' maps "
                             "with -calibrated in their names")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="read every map as stored: no alignment of a map's lines onto the training "
                             "map's (what the suite measured before alignment; docs/transfer.md)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="scenarios run in N processes at once, each with its share of the cores "
                             "(default: one per core, at most one per scenario)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every model's figures")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    if args.smoke:
        args.quick = True
        args.max_epochs = args.max_epochs or SMOKE_MAX_EPOCHS
    try:
        config = suite_config(args.config, quick=args.quick, max_epochs=args.max_epochs)
    except Exception as exc:   # a bad --config file: a message, not a traceback
        print(f"transfer_suite: {exc}", file=sys.stderr)
        return 2
    names = args.scenario or list(SMOKE if args.smoke else QUICK if args.quick else SCENARIOS)
    args.markdown = args.markdown or args.work / "transfer_suite.md"
    if args.jobs is None:
        args.jobs = max(1, min(len(os.sched_getaffinity(0)), len(names)))
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    partial = args.markdown.with_suffix(".partial.json")
    if args.jobs < 1:
        print(f"transfer_suite: --jobs {args.jobs}: at least 1", file=sys.stderr)
        return 2
    paths, stale = prepare_maps(names, args.work, args.quick, args.calibrated)
    if stale:
        print(f"transfer_suite: {stale}", file=sys.stderr)
        return 2
    results = {}
    for index, name, result in _run_all(names, paths, args, config):
        results[name] = result
        best = result["summary"]
        print(f"[{index}/{len(names)}] {name}: best {best['best']} {best['best_rse']:.4f}, recommended "
              f"{best['recommended']} ({result['seconds']:.0f} s)", file=sys.stderr, flush=True)
        # what is measured so far survives a stopped run: the summary and the JSON next to it
        report = _report(args, argv, config, results, started)
        args.markdown.write_text(markdown(report))
        partial.write_text(json.dumps(report, default=_json))
    results = {name: results[name] for name in names}
    report = _report(args, argv, config, results, started)
    print(json.dumps(report, default=_json))
    args.markdown.write_text(markdown(report))
    partial.unlink(missing_ok=True)
    print(f"summary written to {args.markdown}", file=sys.stderr)
    if args.reliability_figure is not None:
        print(f"reliability figure written to {reliability_figure(report, args.reliability_figure)}", file=sys.stderr)
    return 0


def _run_all(names: Sequence[str], paths: Mapping[str, Maps], args, config: TransferConfig):
    """(index, name, result) of every scenario as it finishes: in this process, or in `args.jobs`
    processes (`prepare_maps` has written the maps first, one after another: scenarios share map files)."""
    if args.jobs == 1:
        for index, name in enumerate(names, 1):
            print(f"[{index}/{len(names)}] {name}", file=sys.stderr, flush=True)
            yield index, name, run_scenario(name, paths[name], config, seed=args.seed, only=args.model or (),
                                             align=args.align)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    threads = max(1, len(os.sched_getaffinity(0)) // args.jobs)
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads, args.verbose)) as pool:
        futures = {pool.submit(run_scenario, name, paths[name], config, seed=args.seed,
                               only=args.model or (), align=args.align): name for name in names}
        print(f"{len(names)} scenarios in {args.jobs} processes of {threads} thread(s)", file=sys.stderr, flush=True)
        for index, future in enumerate(as_completed(futures), 1):
            yield index, futures[future], future.result()


def _worker_init(threads: int, verbose: bool) -> None:
    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(processName)s %(name)s: %(message)s")


def _report(args, argv, config: TransferConfig, results: Mapping, started: float) -> dict:
    return {"bench": "transfer_suite", "quick": args.quick, "calibrated": args.calibrated, "align": args.align,
            "smoke": args.smoke, "seed": args.seed,
            "command": "python bench/transfer_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "cpus": len(os.sched_getaffinity(0)), "seconds": round(time.perf_counter() - started, 1),
            "config": config.to_dict(), "results": results, "learning_curve": learning_curve(results)}


def _json(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


if __name__ == "__main__":
    sys.exit(main())
