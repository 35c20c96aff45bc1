"""`libs-acquire`: a small dispatcher over subcommand modules.

Each subcommand lives in its own module exposing `add_parser(subparsers)`
(returning the argparse parser it added, with its handler `run(args) -> int`
set as the `run` default) and `run(args) -> int`. To add one, append its
module name to SUBCOMMANDS. Flags, exit codes and output follow
:mod:`acquisition.shared.cli`.
"""

from __future__ import annotations

import importlib
import sys

from acquisition.shared import cli

SUBCOMMANDS = [
    "acquisition.npy_import",
    "acquisition.map_cmd",
    "acquisition.recover_cmd",
]

EXAMPLES = [
    "libs-acquire map --sim --shape 40x40 --step-um 40 --out map.h5",
    "libs-acquire import-npy ~/data/libs-transfer --split train --out train.h5",
    "libs-acquire COMMAND --help",
]


def _register(module_name: str):
    def register(subparsers):
        module = importlib.import_module(module_name)
        parser = module.add_parser(subparsers)
        parser.set_defaults(run=module.run)
        return parser
    return register


def build_parser():
    return cli.program("libs-acquire",
                       "Paired LIBS mapping: acquire maps and bring data into paired-map files.",
                       EXAMPLES, [_register(name) for name in SUBCOMMANDS])


def _input_errors():
    from acquisition.config import ConfigError
    from acquisition.store import PairedMapError
    return (PairedMapError, ConfigError, ValueError)


def main(argv=None) -> int:
    return cli.run_main(build_parser, argv, input_errors=_input_errors)


if __name__ == "__main__":
    sys.exit(main())
