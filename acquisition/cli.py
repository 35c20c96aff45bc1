"""`libs-acquire`: a small dispatcher over subcommand modules.

Each subcommand lives in its own module exposing `add_parser(subparsers)`
(returning the argparse parser it added) and `run(args) -> int`. To add one,
append its module name to SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from acquisition.store import PairedMapError

SUBCOMMANDS = [
    "acquisition.npy_import",
    "acquisition.map_cmd",
    "acquisition.recover_cmd",
]

EXAMPLE = """example:
  libs-acquire import-npy ~/data/libs-transfer --split train --out train.h5
  libs-acquire COMMAND --help
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="libs-acquire", description="Paired LIBS mapping: acquire maps and bring data into paired-map files.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(name)
        sub = module.add_parser(subparsers)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args))
    except (PairedMapError, OSError, ValueError) as exc:
        print(f"libs-acquire {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"libs-acquire {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
