"""`libs-acquire recover MAP`: close an interrupted map cleanly, touching no instrument.

A writer killed with SIGKILL (or a power cut) leaves its last spots in the
journal beside the map and the file flagged "open for write", which HDF5
tools other than a SWMR reader refuse. Recovering replays the journal into
the file and closes it cleanly; the map stays unfinished, so
`libs-acquire map --resume MAP` still completes it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from acquisition.store import PairedMapError, PairedMapReader, PairedMapWriter
from acquisition.store.journal import journal_path, writer_active

EXIT_BAD_INPUT = 2

EXAMPLE = """examples:
  libs-acquire recover map.h5
  libs-acquire recover map.h5 --json

Afterwards any HDF5 tool opens the map (h5py, HDFView, silx), and
`libs-acquire map --resume map.h5` acquires the spots still missing.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "recover", help="close an interrupted map cleanly (no instrument is touched)",
        description="Replay the journal of an interrupted map into the file and close it cleanly, so that "
                    "any HDF5 tool opens it; the map stays resumable.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("map", type=Path, metavar="MAP", help="the interrupted map file")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def recover(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such map")
    if writer_active(path):
        raise PairedMapError(f"{path}: a writer is still running on it (its journal is locked); "
                             "stop it first, or let it finish")
    with PairedMapReader(path) as reader:
        finished = reader.end_time is not None
    if finished and not journal_path(path).exists():
        recovered = 0
    else:
        recovered = PairedMapWriter.recover(path)
    with PairedMapReader(path) as reader:
        acquired, total = reader.n_acquired, reader.shape[0] * reader.shape[1]
        finished = reader.end_time is not None
    return {"path": str(path), "recovered_from_journal": recovered, "acquired": acquired, "total": total,
            "finished": finished}


def run(args: argparse.Namespace) -> int:
    try:
        result = recover(args.map)
    except (PairedMapError, FileNotFoundError) as exc:
        print(f"libs-acquire recover: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result))
        return 0
    state = "finished" if result["finished"] else (
        f"unfinished; acquire the rest with: libs-acquire map --resume {result['path']}")
    print(f"{result['path']}: closed cleanly, {result['recovered_from_journal']} spot(s) recovered from the "
          f"journal, {result['acquired']}/{result['total']} spots acquired ({state})")
    return 0
