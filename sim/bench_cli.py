"""``libs-sim bench``: serve the simulated bench's instruments until Ctrl-C.

The delay generator, laser and stage emulators are served on their real
transports (loopback TCP, pseudo-terminals), and the simulated spectrometers
on a local socket (sim.bench.spectrometer_server), so that ``libs-acquire map
--config bench.toml`` in another process rehearses a bench config through the
real drivers and transports, as a lab will run it on hardware.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from acquisition.shared import cli
from sim.bench import BenchFaults, BenchFaultsError, SimulatedBench
from sim.scene import CALIBRATIONS

log = logging.getLogger(__name__)

DESCRIPTION = "Serve the simulated bench's instruments (delay generator, laser, stage, spectrometers) until Ctrl-C."
EXAMPLES = ["libs-sim bench --seed 1 --realtime --write-config bench.toml",
            "libs-acquire map --config bench.toml --shape 20x20 --out map.h5",
            "libs-sim bench --faults missed-trigger=0.01,timeout=0.002,interlock-at=500"]
NOTES = """\
Prints the pyvisa resource strings of the DG645 (TCP), the Big Sky laser and
the Zaber stage (pseudo-terminals) and the spectrometers' socket, and, with
--write-config, a ready bench config: `libs-acquire map --config`, in another
terminal while this one serves, then runs
a map through the real drivers and transports (the rehearsal of a lab's own
bench config). Without --realtime time is virtual: it moves only while a
client waits (polls a moving stage, reads a spectrometer), so use --realtime
for interactive work.

faults (comma-separated key=value): missed-trigger=P, timeout=P, garbled=P,
stall=P (probabilities), interlock-at=N (laser shot number).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``bench`` on a ``libs-sim`` subparsers object."""
    parser = cli.subcommand(subparsers, "bench", help="serve the simulated bench's instruments",
                            description=DESCRIPTION, run=run, examples=EXAMPLES, notes=NOTES)
    configure_parser(parser)
    return parser


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="sample and fault seed (default 0)")
    parser.add_argument("--day", type=int, default=0, help="measurement day: drifts of plasma and "
                        "spectrographs (default 0)")
    parser.add_argument("--calibration", choices=CALIBRATIONS, default="nominal",
                        help="wavelength axes the spectrometers report: nominal (the factory axis every "
                             "day, default) or daily (as recalibrated on --day)")
    parser.add_argument("--realtime", action="store_true",
                        help="run on the wall clock (default: virtual, as fast as possible)")
    parser.add_argument("--faults", default="", metavar="SPEC",
                        help="fault injection, e.g. missed-trigger=0.01,timeout=0.002")
    parser.add_argument("--write-config", type=Path, metavar="PATH",
                        help="write a ready bench config (TOML) to PATH")
    parser.add_argument("--rate", type=float, default=1000.0, metavar="HZ",
                        help="shot rate written into the config (default 1000)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        faults = BenchFaults.from_string(args.faults)
    except BenchFaultsError as exc:
        print(f"libs-sim bench: {exc}", file=sys.stderr)
        return 2
    if not args.rate > 0:
        print(f"libs-sim bench: --rate must be > 0 Hz, got {args.rate:g}", file=sys.stderr)
        return 2
    for name in ("seed", "day"):
        if getattr(args, name) < 0:
            print(f"libs-sim bench: --{name} must be >= 0, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.write_config is not None and not args.write_config.parent.exists():
        print(f"libs-sim bench: cannot write {args.write_config}: folder "
              f"{args.write_config.parent} does not exist", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with SimulatedBench(seed=args.seed, day=args.day, realtime=args.realtime, faults=faults,
                            calibration=args.calibration) as bench:
            for name, resource in bench.resources.items():
                print(f"{name:16s}{resource}")
            print(f"{'spectrometers':16s}{bench.spectrometer_resource}")
            if args.write_config is not None:
                args.write_config.write_text(bench.config_toml(rate_hz=args.rate))
                print(f"bench config written to {args.write_config}")
            print("serving; Ctrl-C to stop", flush=True)
            _serve(bench, stop)
            summary = bench.fault_log()
            print(f"stopped: {len(bench.fired)} laser shots reached the sample, laser made safe "
                  f"{bench.laser_safe_count} time(s), {len(summary['missed_triggers'])} missed "
                  f"trigger(s), {len(summary['stalls'])} stall(s)")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _serve(bench: SimulatedBench, stop: threading.Event) -> None:
    with tqdm(desc="laser shots", unit="shot", dynamic_ncols=True, file=sys.stderr) as progress:
        while not stop.wait(0.5):
            progress.update(len(bench.engine.fired) - progress.n)


def main(argv: list[str] | None = None) -> int:
    """``libs-sim bench`` on its own (``python -m sim.bench_cli``)."""
    from sim.cli import main as sim_main
    return sim_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
