"""``libs-sim``: the simulated bench's command line.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``
(built with :func:`acquisition.shared.cli.subcommand`) and ``run(args) -> int``;
add a module to SUBCOMMANDS to add a subcommand. Flags, exit codes and output
follow :mod:`acquisition.shared.cli`.
"""

from __future__ import annotations

import importlib
import sys

from acquisition.shared import cli

SUBCOMMANDS = [
    "sim.generate",
    "sim.bench_cli",
]

EXAMPLES = [
    "libs-sim generate --shape 100x100 --step-um 40 --day 0 --seed 1 --out map.h5",
    "libs-sim bench --write-config bench.toml",
]


def build_parser():
    return cli.program("libs-sim", "Simulated paired LIBS bench: generate maps, run instrument emulators.",
                       EXAMPLES, [importlib.import_module(name).add_parser for name in SUBCOMMANDS])


def _input_errors():
    from acquisition.store import PairedMapError
    return (ValueError, PairedMapError)


def main(argv: list[str] | None = None) -> int:
    return cli.run_main(build_parser, argv, input_errors=_input_errors)


if __name__ == "__main__":
    sys.exit(main())
