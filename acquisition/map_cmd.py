"""`libs-acquire map`: record a paired raster map on real instruments or the simulated bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

from acquisition.config import (AcquisitionSettings, BenchConfig, ConfigError, load_config,
                                parse_config, parse_pair, parse_shape)
from acquisition.live import LiveOptions, LiveTransfer
from acquisition.live_record import describe_runs
from acquisition.mapping import MapSummary, acquire_map, stored_settings
from acquisition.plan import run_up_um
from acquisition.safety import AcquisitionAborted
from acquisition.shared import cli as shared_cli
from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.store import MapWriteError, PairedMapError
from drivers.errors import InstrumentError, LaserInterlockError

log = logging.getLogger(__name__)

EXIT_BAD_INPUT, EXIT_INTERLOCK, EXIT_INSTRUMENT, EXIT_WRITE = 2, 3, 4, 5
# The emulators answer over loopback in milliseconds; a lost reply need not cost the drivers' defaults.
SIM_TIMEOUT_S = 0.5
# Without --origin-um the map starts this far inside the stage travel (plus the fly run-up).
ORIGIN_MARGIN_UM = shared_cli.DEFAULT_ORIGIN_MARGIN_UM
# The simulated bench's timing.rate_hz (sim.bench.DEFAULT_RATE_HZ; acquisition does not import sim at load time).
SIM_DEFAULT_RATE_HZ = 1000.0
MAP_OPTIONS = ("shape", "step_um", "origin_um", "order", "mode", "rate", "shots", "systems", "seed", "day")

EPILOG = """\
examples:
  libs-acquire map --sim --shape 40x40 --step-um 40 --out map.h5
  libs-acquire map --config bench.toml --out map.h5 --mode step --shots 3
  libs-acquire map --sim --systems secondary --realtime --rate 1000 --out deployed.h5
  libs-acquire map --sim --sim-faults missed-trigger=0.01,timeout=0.002 --out faulty.h5
  libs-acquire map --resume map.h5
  libs-acquire map --sim --shape 20x20 --out map.h5 --live tcp://127.0.0.1:5557
  libs-acquire map --sim --shape 20x20 --out map.h5 --live tcp://127.0.0.1:5557 --view   # + browser view

--live streams every secondary spectrum to a running `libs-stream serve` worker
as it is acquired, without ever holding the map up, and writes the results
(transferred spectra, k-means labels, novelty) into /entry/transferred; with a
primary system it also compares each result with the measured primary spectrum
(drift monitor). Spots that got no live result are reported at the end.

Modes: `fly` sweeps each row at step x rate with one delay-generator burst per
row (a spot a spectrometer missed stays a gap, filled by --resume; spots no
shot hit, after a stall or a late trigger, are shot with the stage at rest);
`step` moves, waits, and fires --shots shots per spot, averaging them (missed
shots are fired again). Shape is rows x columns (NYxNX); steps and origin in µm.
Exit codes: 0 done (gaps are reported), 2 bad config or input (nothing fired),
3 laser interlock, 4 instrument failure, 5 the map file could not be written (disk
full: free space, then --resume), 130/143 stopped by SIGINT/SIGTERM.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "map", help="acquire a paired raster map (real instruments or --sim)",
        description="Acquire a paired LIBS raster map: every shot seen by each spectrometer system, "
                    "paired by shot id, written to a paired-map HDF5 file.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("instruments")
    source.add_argument("--config", type=Path, help="bench config (TOML) naming the instruments and timing")
    source.add_argument("--sim", action="store_true", help="use the built-in simulated bench")
    source.add_argument("--realtime", action=argparse.BooleanOptionalAction, default=None,
                        help="simulated bench on the wall clock (default: as fast as possible)")
    source.add_argument("--sim-faults", metavar="SPEC", help="fault rates for the simulated bench, e.g. "
                        "missed-trigger=0.01,timeout=0.002,garbled=0.002,stall=0.001,interlock-at=500")
    source.add_argument("--seed", type=int, help="simulated sample and fault seed (default 0)")
    source.add_argument("--day", type=int, help="simulated measurement day (default 0)")
    files = parser.add_argument_group("files")
    files.add_argument("--out", type=Path, help="map file to create")
    files.add_argument("--resume", type=Path, metavar="MAP", help="continue an interrupted map with its stored settings")
    files.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    files.add_argument("--title", default="", help="/entry/title")
    files.add_argument("--sample", default="", help="/entry/sample/name")
    scan = parser.add_argument_group("map")
    scan.add_argument("--shape", help="rows x columns, NYxNX (default 40x40)")
    scan.add_argument("--step-um", help="step in µm, one number or DX,DY (default 40)")
    scan.add_argument("--origin-um", help="stage X,Y of spot (0, 0) (default: 1 mm inside the travel, as "
                      "libs-sim generate; fly mode adds the run-up in x)")
    scan.add_argument("--order", choices=("snake", "raster"), help="visiting order (default snake)")
    scan.add_argument("--mode", choices=("step", "fly"), help="step-and-shoot or on the fly (default fly)")
    scan.add_argument("--rate", type=float, metavar="HZ", help="shot rate (default: the config's timing.rate_hz; "
                      f"with --sim {SIM_DEFAULT_RATE_HZ:g} Hz)")
    scan.add_argument("--shots", type=int, help="step mode: shots averaged per spot (default 1)")
    scan.add_argument("--systems", help="comma-separated systems (default primary,secondary)")
    scan.add_argument("--max-reshots", type=int, default=5, help="extra shots per spot shot with the stage at "
                      "rest (step mode, fly-mode leftovers) when a system missed one (default 5)")
    scan.add_argument("--retries", type=int, default=3, help="retries of a timed-out or garbled instrument "
                      "reply (default 3)")
    live = parser.add_argument_group("live transfer")
    live.add_argument("--live", metavar="ADDR", help="the worker's input address, e.g. tcp://127.0.0.1:5557")
    live.add_argument("--live-results", metavar="ADDR", help="the worker's output address (default: port + 1)")
    live.add_argument("--live-control", metavar="ADDR", help="the worker's control address (default: port + 2)")
    live.add_argument("--keys", dest="live_keys", type=Path, metavar="DIR", help="CURVE keys from `libs-stream "
                      "keys`: DIR/worker.key (the worker's public key) and DIR/clients/acquisition.key_secret; "
                      "needed for a non-loopback worker")
    live.add_argument("--live-keys", dest="live_keys", type=Path, action=shared_cli.DeprecatedAlias, new="--keys",
                      help=argparse.SUPPRESS)
    live.add_argument("--live-timeout", type=float, default=5.0, metavar="S", help="wait this long for the "
                      "worker at the start and for each result before counting it lost (default 5)")
    live.add_argument("--live-drift-window", type=int, default=100, metavar="N", help="drift monitor: compare "
                      "the mean error of the last N spots with the first N (default 100)")
    live.add_argument("--live-drift-threshold", type=float, default=0.5, metavar="F", help="warn when that "
                      "error grows by more than this fraction (default 0.5)")
    live.add_argument("--view", action="store_true", help="also start `libs-stream view` on the worker and this "
                      "map, and print its URL (stops with the map)")
    live.add_argument("--view-port", type=int, default=8050, metavar="N", help="the view's HTTP port (default 8050)")
    out = parser.add_argument_group("output")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parser


def _settings_from_args(args, config: BenchConfig | None) -> AcquisitionSettings:
    systems = tuple(s.strip() for s in args.systems.split(",")) if args.systems else SYSTEM_NAMES
    settings = AcquisitionSettings(
        shape=parse_shape(args.shape or "40x40"),
        step_um=parse_pair(args.step_um or "40", "--step-um"),
        order=args.order or "snake", mode=args.mode or "fly", rate_hz=args.rate, shots=args.shots or 1,
        systems=systems, max_reshots=args.max_reshots, retries=args.retries, sim=args.sim,
        realtime=bool(args.realtime), seed=args.seed or 0, day=args.day or 0, sim_faults=args.sim_faults or "",
        title=args.title, sample_name=args.sample)
    if args.origin_um:
        return replace(settings, origin_um=parse_pair(args.origin_um, "--origin-um"))
    if config is not None:
        (x_min, _), (y_min, _) = config.stage.travel_um
        settings = replace(settings, origin_um=(x_min + ORIGIN_MARGIN_UM + run_up_um(settings, config),
                                                y_min + ORIGIN_MARGIN_UM))
    return settings


def _sim_config(bench) -> BenchConfig:
    raw = tomllib.loads(bench.config_toml())
    for section in ("delay_generator", "laser", "stage"):
        raw[section].setdefault("timeout_s", SIM_TIMEOUT_S)
    return parse_config(raw, source="simulated bench")


def _check_args(args) -> None:
    if args.resume is not None:
        given = [f"--{name.replace('_', '-')}" for name in MAP_OPTIONS if getattr(args, name) is not None]
        if given:
            raise ConfigError(f"--resume takes the map's settings from the file; do not give {', '.join(given)}")
        if args.out is not None and args.out != args.resume:
            raise ConfigError("--resume continues the map in place; leave out --out")
        return
    if args.out is None:
        raise ConfigError("give --out FILE for a new map (or --resume FILE)")
    if args.out.exists() and not args.overwrite:
        raise ConfigError(f"{args.out}: exists; pass --overwrite to replace it, "
                          f"or continue it with: libs-acquire map --resume {args.out}")
    if args.sim == (args.config is not None):
        raise ConfigError("give either --config FILE (real instruments) or --sim (simulated bench)")
    if not args.sim and (args.realtime or args.sim_faults or args.seed is not None or args.day is not None):
        raise ConfigError("--realtime, --sim-faults, --seed and --day apply to --sim only")


def _live_from_args(args) -> LiveTransfer | None:
    if args.live is None:
        given = [f"--{name}" for name in ("live-results", "live-control", "keys")
                 if getattr(args, {"keys": "live_keys"}.get(name, name.replace("-", "_"))) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} need --live ADDR")
        return None
    options = LiveOptions(args.live, results=args.live_results, control=args.live_control, keys_dir=args.live_keys,
                          timeout_s=args.live_timeout, drift_window=args.live_drift_window,
                          drift_threshold=args.live_drift_threshold)
    return LiveTransfer(options, show_progress=not args.no_progress)


def _view_from_args(args):
    """`--view`: the live view on the worker and the map file, started before the map (it waits for the file)."""
    if not args.view:
        return None
    if args.live is None:
        raise ConfigError("--view needs --live ADDR")
    from acquisition.live_view import start_live_view

    shape = parse_shape(args.shape) if args.shape else (None if args.resume else parse_shape("40x40"))
    return start_live_view(LiveOptions(args.live, results=args.live_results, control=args.live_control,
                                       keys_dir=args.live_keys), args.resume or args.out, shape, port=args.view_port,
                           announce=lambda line: print(line, flush=True))


def _run(args) -> tuple[MapSummary, dict]:
    """Run the map; returns its summary and, on the simulated bench, what the bench recorded."""
    _check_args(args)
    live = _live_from_args(args)
    view = None
    try:
        view = _view_from_args(args)
        return _run_map(args, live)
    finally:
        if live is not None:
            live.close()
        if view is not None:
            view.stop()


def _run_map(args, live: LiveTransfer | None) -> tuple[MapSummary, dict]:
    resume = args.resume is not None
    stored_config = None
    if resume:
        settings, stored_config = stored_settings(args.resume)
        if args.realtime is not None:
            settings = replace(settings, realtime=args.realtime)
        if args.sim_faults is not None:
            settings = replace(settings, sim_faults=args.sim_faults)
        settings = replace(settings, retries=args.retries, max_reshots=args.max_reshots)
        out = args.resume
    else:
        out = args.out
        settings = _settings_from_args(args, None if args.sim else load_config(args.config))
    if not settings.sim:
        config = load_config(args.config) if args.config else parse_config(stored_config, source=f"{out} (stored)")
        return _acquire(out, settings, config, stored_config, args, live=live), {}
    from sim.bench import BenchFaults, BenchFaultsError, SimulatedBench

    try:
        faults = BenchFaults.from_string(settings.sim_faults)
    except BenchFaultsError as exc:
        raise ConfigError(str(exc)) from None
    with SimulatedBench(seed=settings.seed, day=settings.day, realtime=settings.realtime, faults=faults) as bench:
        config = _sim_config(bench)
        if not resume and not args.origin_um:
            settings = _settings_from_args(args, config)
        try:
            return _acquire(out, settings, config, stored_config, args, bench=bench, live=live), \
                {"laser_safe_events": bench.laser_safe_count}
        finally:
            log.info("simulated bench: laser made safe %d time(s), %d pulse(s) fired, faults %s",
                     bench.laser_safe_count, len(bench.fired), bench.fault_log())


def _acquire(out, settings, config: BenchConfig, stored_config: dict | None, args, bench=None,
             live: LiveTransfer | None = None) -> MapSummary:
    if stored_config is not None:
        stored = parse_config(stored_config, source=f"{out} (stored config)")
        if stored.timing_dict() != config.timing_dict():
            raise ConfigError(f"the config's timing and gates differ from those {out} was started with: "
                              f"{config.timing_dict()} != {stored.timing_dict()}")
    return acquire_map(out, settings, config, bench=bench, resume=stored_config is not None,
                       show_progress=not args.no_progress, overwrite=args.overwrite, live=live,
                       on_summary=lambda summary: setattr(args, "final_summary", summary))


def _report(summary: MapSummary, extra: dict, args) -> None:
    doc = {**summary.as_dict(), **extra}
    if args.json:
        print(json.dumps(doc))
        return
    print(f"{summary.path}: {summary.acquired}/{summary.total} spots acquired "
          f"({summary.acquired_this_run} this run, {summary.spots_per_s:.0f} spots/s); "
          f"missed shots {summary.missed_shots}, re-shot {summary.reshot}")
    if summary.gaps:
        print(f"{summary.gaps} spot(s) not acquired; fill them with: libs-acquire map --resume {summary.path}")
    if summary.live:
        _report_live(summary.live)


def _report_live(live: dict) -> None:
    print(f"live transfer: {live.get('results', 0)} of {live.get('spots', 0)} spots got a live result "
          f"(model {live.get('model') or 'unknown'}), {live.get('written', 0)} written to /entry/transferred")
    if live.get("without_result"):
        reasons = ", ".join(f"{name} {n}" for name, n in live["reasons"].items() if n)
        print(f"  {live['without_result']} spot(s) without a live result ({reasons}): "
              f"{describe_runs(live['without_result_spots'])}")
    drift = live.get("drift")
    if drift and drift.get("recent_relative_error") is not None:
        change = "" if drift["drift"] is None else f", drift {100 * drift['drift']:+.0f} %"
        print(f"  live error against the measured primary: relative {drift['recent_relative_error']:.3g}, "
              f"cosine distance {drift['recent_cosine_distance']:.3g} (last {drift['window']} spots){change}"
              f"{'  DRIFTING' if drift['drifting'] else ''}")
    for error in live.get("errors", []):
        print(f"  live transfer problem: {error}")


def run(args: argparse.Namespace) -> int:
    args.final_summary = None
    code = _run_and_report(args)
    if code and args.json and args.final_summary is not None:
        # --json promises the summary whenever the map file was opened, interrupted or not.
        print(json.dumps(args.final_summary.as_dict()))
    return code


def _run_and_report(args: argparse.Namespace) -> int:
    try:
        summary, extra = _run(args)
    except MapWriteError as exc:
        out = args.resume or args.out
        total = exc.in_file + exc.in_journal
        where = f"{exc.in_file} in the file" + (f", {exc.in_journal} in its journal" if exc.in_journal else "")
        print(f"libs-acquire map: stopped: {exc}\n  the laser was made safe; {total} spot(s) are safely stored "
              f"({where}).\n  Free some space, then continue with: libs-acquire map --resume {out}\n"
              f"  (or close it for other tools without acquiring: libs-acquire recover {out})", file=sys.stderr)
        return EXIT_WRITE
    except (ConfigError, PairedMapError, FileExistsError, FileNotFoundError) as exc:
        print(f"libs-acquire map: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AcquisitionAborted as exc:
        print(f"libs-acquire map: {exc}; the map can be resumed with --resume", file=sys.stderr)
        return exc.exit_code
    except LaserInterlockError as exc:
        print(f"libs-acquire map: stopped: {exc}; the map can be resumed once the interlock is closed",
              file=sys.stderr)
        return EXIT_INTERLOCK
    except InstrumentError as exc:
        print(f"libs-acquire map: stopped: instrument failure: {exc}; the map can be resumed",
              file=sys.stderr)
        return EXIT_INSTRUMENT
    _report(summary, extra, args)
    return 0
