"""`libs-transfer`: train, extend, evaluate and apply spectral-transfer models.

Each subcommand is registered by a function `add_<name>(subparsers)` that
builds its parser and sets `handler`. To add a subcommand from another
module, append its registration function to `SUBCOMMANDS` (one line).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from acquisition.shared import cli

log = logging.getLogger("libs-transfer")


def _parser(subparsers, name: str, help_text: str, example: str, run) -> argparse.ArgumentParser:
    return cli.subcommand(subparsers, name, help=help_text, run=run, examples=example)


def _common_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-epochs", type=int, default=None, metavar="N",
                        help="cap every training phase at N epochs (default: the config's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, batch order and sampling (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoints")


# -- train ---------------------------------------------------------------------------

def add_train(subparsers) -> None:
    p = _parser(subparsers, "train", "train the VAE + MLP transfer model, the one-step MLP and the baselines (and "
                "weigh a blend of VAE + MLP and DS), and recommend the one to run live (export's default)",
                "libs-transfer train train.h5 --val val.h5 --out model/ --max-epochs 5", _train)
    p.add_argument("train", type=Path, metavar="TRAIN.h5", help="paired map to train on")
    p.add_argument("--val", type=Path, required=True, metavar="VAL.h5", help="paired map for validation")
    p.add_argument("--out", type=Path, required=True, metavar="MODEL_DIR", help="bundle directory to write")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML file overriding transfer/default_config.toml")
    cli.add_secondary_option(p, default="secondary", aliases=["--name"],
                             help="name of the secondary system in the bundle (default: secondary)")
    _common_training(p)
    cli.add_json_flag(p, "the bundle written and its model ranking")


def _train(args) -> int:
    from transfer.config import load_config
    from transfer.pipeline import train_model
    config = load_config(args.config).with_max_epochs(args.max_epochs)
    bundle = train_model(args.train, args.val, args.out, config=config, device=args.device, seed=args.seed,
                         resume=args.resume, secondary_name=args.secondary)
    cli.emit(args, f"model {bundle.model_id} written to {args.out}\n{_ranking_summary(bundle, args.secondary)}".rstrip(),
             _bundle_result(bundle, args.secondary, args.out))
    return 0


def _ranking_summary(bundle, name: str) -> str:
    entry = bundle.manifest["secondaries"].get(name, {})
    ranking = sorted(((k, v) for k, v in (entry.get("validation_rse") or {}).items() if v is not None),
                     key=lambda kv: kv[1])
    if not ranking:
        return ""
    changed = entry.get("day_change_rse") or {}
    return ("validation RSE: " + ", ".join(f"{key} {value:.4f}" for key, value in ranking)
            + ("\nunder a simulated day change: " + ", ".join(f"{key} {value:.4f}" for key, value in
                                                             sorted(changed.items(), key=lambda kv: kv[1]))
               if changed else "")
            + (f"\nblend: {entry['blend_weight']:g} x VAE + MLP + {1 - entry['blend_weight']:g} x DS"
               if "blend_weight" in entry else "")
            + f"\nrecommended model: {entry['recommended']}" + _live_line(entry.get("recommended"),
                                                                      _live_model(bundle, name)))


def _live_model(bundle, name: str) -> str:
    from transfer.predict import default_model
    return default_model(bundle, bundle.secondary(name))


def _live_line(recommended: str | None, live: str | None) -> str:
    """A line naming the model export and predict run, where it is not the recommended one."""
    if not live or live == recommended:
        return ""
    return f"\nexport and predict run: {live} (the exportable model the same rule picks)"


def _bundle_result(bundle, name: str, path) -> dict:
    entry = bundle.manifest["secondaries"].get(name, {})
    return {"bundle": str(path), "model_id": bundle.model_id, "secondary": name,
            "secondary_model_id": bundle.secondary(name).model_id,
            "validation_rse": entry.get("validation_rse"), "day_change_rse": entry.get("day_change_rse"),
            "recommended": entry.get("recommended"), "live_model": _live_model(bundle, name),
            "blend_weight": entry.get("blend_weight")}


# -- add-secondary --------------------------------------------------------------------

def add_add_secondary(subparsers) -> None:
    p = _parser(subparsers, "add-secondary",
                "train only a new MLP for another secondary system against a bundle's existing VAE",
                "libs-transfer add-secondary model/ cheap_train.h5 --val cheap_val.h5 --secondary cheap", _add_secondary)
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="bundle directory written by train")
    p.add_argument("train", type=Path, metavar="TRAIN.h5", help="paired map: the bundle's primary + the new secondary")
    p.add_argument("--val", type=Path, required=True, metavar="VAL.h5", help="paired map for validation")
    cli.add_secondary_option(p, aliases=["--name"], help="name of the new secondary system (required)")
    cli.require(p, "secondary", "--secondary")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="TOML overriding the bundle's settings (not [vae])")
    _common_training(p)
    cli.add_json_flag(p, "the bundle written and its model ranking")


def _add_secondary(args) -> int:
    import tomllib
    from transfer.config import ConfigError
    from transfer.pipeline import add_secondary
    overrides = {}
    if args.config is not None:
        try:
            overrides = tomllib.loads(args.config.read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration {args.config}: {exc}") from None
    bundle = add_secondary(args.model, args.train, args.val, name=args.secondary, overrides=overrides,
                           max_epochs=args.max_epochs, device=args.device, seed=args.seed, resume=args.resume)
    cli.emit(args, f"secondary '{args.secondary}' added to {args.model} (model "
                   f"{bundle.secondary(args.secondary).model_id})\n{_ranking_summary(bundle, args.secondary)}".rstrip(),
             _bundle_result(bundle, args.secondary, args.model))
    return 0


# -- evaluate ---------------------------------------------------------------------------

def add_align_flag(p) -> None:
    p.add_argument("--no-align", dest="align", action="store_false",
                   help="read the map's spectra as stored, even where its lines sit a tenth of a pixel or more "
                        "from the model's (by default such a map is aligned from its own lines, each "
                        "spectrometer apart: docs/transfer.md, \"Lines aligned from the map itself\")")


def add_evaluate(subparsers) -> None:
    p = _parser(subparsers, "evaluate", "compare every model of a bundle on a paired test map",
                ["libs-transfer evaluate model/ test.h5 --out report/ --protocol causal",
                 "libs-transfer evaluate model/ test.h5 --out report/ --learning-curve 300 1000 3000",
                 "libs-transfer evaluate model/ drifted.h5 --out as-stored/ --no-align   # what the drift costs"],
                _evaluate)
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="bundle directory written by train")
    p.add_argument("test", type=Path, metavar="TEST.h5", help="paired map to evaluate on (both systems)")
    p.add_argument("--out", type=Path, required=True, metavar="REPORT_DIR",
                   help="where report.json, report.md and the PNG figures go")
    p.add_argument("--protocol", choices=("causal", "paper"), default="causal",
                   help="causal (default): training statistics only; paper: the test set scaled with its own "
                        "statistics, as the paper did")
    cli.add_secondary_option(p, help="which secondary system of the bundle (default: the first)")
    p.add_argument("--chunk-spots", type=int, default=4096, help="spots read at a time (default: 4096)")
    add_align_flag(p)
    cli.add_json_flag(p, "the scores of every model")
    p.add_argument("--learning-curve", type=int, nargs="*", default=None, metavar="N",
                   help="also retrain every model on N random pairs of the bundle's training map (default "
                        "those of 300 1000 3000 10000 that fit the map, else a quarter, a half and all of it) and draw test RSE against N "
                        "into learning_curve.png/.json: how many paired spectra the maps need (the training and "
                        "validation maps the bundle names must be where they were, unchanged)")


def _evaluate(args) -> int:
    from transfer.predict import evaluate_map
    if args.learning_curve is not None:    # its maps are checked before the evaluation's minutes, not after
        from transfer.bundle import load_bundle
        from transfer.suite import learning_curve_maps
        if any(n < 2 for n in args.learning_curve):
            raise cli.UsageError("--learning-curve sizes must be at least 2 pairs")
        bundle = load_bundle(args.model)
        learning_curve_maps(bundle, args.secondary or bundle.default_secondary)
    report = evaluate_map(args.model, args.test, args.out, protocol=args.protocol, secondary=args.secondary,
                          chunk_spots=args.chunk_spots, align=args.align)
    doc = {"protocol": report["protocol"], "n_spectra": report["n_spectra"], "models": report["models"],
           "recommended": report.get("recommended"), "live_model": report.get("live_model"),
           "apparent_shift_px": report.get("apparent_shift_px"), "line_alignment": report.get("line_alignment")}
    if args.learning_curve is not None:
        from transfer.suite import learning_curve_for_bundle
        sizes = args.learning_curve or None          # none given: the defaults that fit the map
        curve = learning_curve_for_bundle(args.model, args.test, args.out, sizes, secondary=args.secondary)
        doc["learning_curve"] = {n: {m: v["rse"] for m, v in models.items()} for n, models in curve.items()}
    cli.emit(args, _evaluate_summary(doc, args.out), doc)
    return 0


def _evaluate_summary(doc: dict, out: Path) -> str:
    lines = [f"{doc['n_spectra']} spectra, protocol {doc['protocol']}; report in {out}/report.md"]
    for name, scores in doc["models"].items():
        shown = ", ".join(f"{key} {value:.3g}" for key, value in scores.items()
                          if isinstance(value, (int, float)) and not isinstance(value, bool))[:110]
        lines.append(f"  {name:12s} {shown}")
    if doc.get("recommended"):
        lines.append(f"recommended model: {doc['recommended']}" + _live_line(doc["recommended"],
                                                                             doc.get("live_model")))
    shifts = doc.get("apparent_shift_px") or {}
    aligned = [system for system, done in (doc.get("line_alignment") or {}).items() if done and done["aligned"]]
    if shifts:
        lines.append("lines against the model's: " + ", ".join(
            f"{system} {'n/a' if shift is None else format(shift, '+.2f')} px" for system, shift in shifts.items())
            + (f" ({' and '.join(aligned)} aligned from the map's own lines)" if aligned else ""))
    if doc.get("learning_curve"):
        lines.append(f"learning curve: {out}/learning_curve.png")
    return "\n".join(lines)


# -- predict -----------------------------------------------------------------------------

def add_predict(subparsers) -> None:
    from transfer.selection import MODEL_NAMES
    p = _parser(subparsers, "predict",
                "write transferred spectra, k-means labels, novelty and (with a trust score) expected_rel_error "
                "and the untrusted flag into /entry/transferred of a map",
                "libs-transfer predict model/ map.h5", _predict)
    p.add_argument("model", type=Path, metavar="MODEL_DIR", help="bundle directory written by train")
    p.add_argument("map", type=Path, metavar="MAP.h5", help="map with secondary spectra (raw data is not changed)")
    cli.add_secondary_option(p, help="which secondary system of the bundle (default: the first)")
    p.add_argument("--model", default=None, choices=MODEL_NAMES, dest="model_name",
                   help="which transfer model to apply (default: the one export writes, the model train "
                        "recommended if it is exportable; expected_rel_error only for the model the trust "
                        "score was calibrated on, that same one)")
    p.add_argument("--chunk-spots", type=int, default=4096, help="spots read at a time (default: 4096)")
    add_align_flag(p)
    cli.add_json_flag(p, "what was written")


def _predict(args) -> int:
    from dataclasses import asdict

    from transfer.predict import predict_map
    done = predict_map(args.model, args.map, secondary=args.secondary, model_name=args.model_name,
                       chunk_spots=args.chunk_spots, align=args.align)
    if done.untrusted is not None:
        trust = (f"{done.untrusted} of {done.n_transferred} flagged untrusted "
                 f"(expected relative error above {done.threshold:.3g})")
    elif done.trust_model is None:
        trust = "no expected_rel_error (the bundle has no trust score)"
    else:
        trust = f"no expected_rel_error (the trust score describes {done.trust_model}: --model {done.trust_model})"
    lines = ("" if done.secondary_shift_px is None else
             f"; the secondary's lines sit {done.secondary_shift_px:+.2f} px from the model's"
             + (", aligned before the transfer" if done.secondary_aligned else ""))
    cli.emit(args, f"{done.n_transferred} spectra transferred with {done.model} written to "
                   f"{args.map}:/entry/transferred; {trust}{lines}",
             {"map": str(args.map), "group": "/entry/transferred", **asdict(done)})
    return 0


# -- search ------------------------------------------------------------------------------

def add_search(subparsers) -> None:
    p = _parser(subparsers, "search",
                "hyper-parameter search (Optuna, Hyperband pruner) over the paper's search space",
                "libs-transfer search train.h5 --val val.h5 --trials 8 --out best.toml", _search)
    p.add_argument("train", type=Path, metavar="TRAIN.h5", help="paired map to train the trials on")
    p.add_argument("--val", type=Path, required=True, metavar="VAL.h5", help="paired map the trials are scored on")
    p.add_argument("--config", type=Path, default=None, metavar="FILE", help="base configuration (TOML)")
    p.add_argument("--trials", type=int, default=None, help="trials per stage (default: the config's search.trials)")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="Hyperband's maximum epochs per trial (default: the config's search.max_epochs)")
    p.add_argument("--out", type=Path, default=None, metavar="FILE", help="write the best configuration as TOML")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samplers and the networks (default: 0)")
    cli.add_json_flag(p, "the best trial")


def _search(args) -> int:
    from transfer.config import load_config, to_toml
    from transfer.search import run_search
    config = load_config(args.config)
    result = run_search(args.train, args.val, config=config, trials=args.trials, max_epochs=args.max_epochs,
                        device=args.device, seed=args.seed)
    text = to_toml(result["config"])
    if args.out is not None:
        args.out.write_text(text, "utf-8")
        print(f"best configuration written to {args.out}")
    doc = {k: v for k, v in result.items() if k != "config"}
    cli.emit(args, "best trial: " + ", ".join(f"{k} {v}" for k, v in doc.items() if not isinstance(v, (dict, list)))
             + "\n" + text.strip(), doc)
    return 0


# -- registry -----------------------------------------------------------------------------

def _lazy(module: str, function: str) -> Callable:
    """A registration function imported only when the parser is built (keeps --help fast)."""
    def register(subparsers) -> None:
        getattr(importlib.import_module(module), function)(subparsers)
    return register


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the input, reported as one line instead of a traceback."""
    from acquisition.store import PairedMapError
    from transfer.bundle import BundleError
    from transfer.config import ConfigError
    from transfer.data import TransferDataError
    from transfer.novelty import NoveltyError
    from transfer.predict import PredictError
    from transfer.preprocess import SpectraError, WavelengthMismatchError
    from transfer.suite import LearningCurveError
    from transfer.train import TrainingError
    from transfer.trust import TrustError
    return (PairedMapError, BundleError, ConfigError, TransferDataError, SpectraError, WavelengthMismatchError,
            TrainingError, NoveltyError, LearningCurveError, TrustError, PredictError, FileNotFoundError)


SUBCOMMANDS: list[Callable] = [
    add_train,
    add_add_secondary,
    add_evaluate,
    add_predict,
    add_search,
    _lazy("transfer.export", "add_export"),
    _lazy("transfer.calibrate", "add_calibrate"),
]


def build_parser() -> argparse.ArgumentParser:
    return cli.program(
        "libs-transfer", "Spectral transfer between LIBS systems (VAE + MLP, after Vrabel et al. 2023).",
        ["libs-transfer train train.h5 --val val.h5 --out model/", "libs-transfer evaluate model/ test.h5 --out report/"],
        SUBCOMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run_main(build_parser, argv, input_errors=_user_errors,
                        interrupted_hint="--resume continues a training from its last epoch")


if __name__ == "__main__":
    sys.exit(main())
