"""``libs-sim``: the simulated bench's command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
and ``run(args) -> int``; add a module to SUBCOMMANDS to add a subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

SUBCOMMANDS = [
    "sim.generate",
    "sim.bench_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="libs-sim", description="Simulated paired LIBS bench: generate maps, run instrument emulators.",
        epilog="example:\n  libs-sim generate --shape 100x100 --step-um 40 --day 0 --seed 1 --out map.h5",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(name)
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("libs-sim: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:
        print(f"libs-sim {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
