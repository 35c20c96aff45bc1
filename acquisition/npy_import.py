"""`libs-acquire import-npy`: the paper's published dataset as paired-map files.

The dataset of Vrábel et al. 2023 (figshare, doi 10.6084/m9.figshare.20713504)
holds per split `s1_<split>.npy` (primary) and `s2_<split>.npy` (secondary),
one spectrum per row, rows in horizontal-snake order (row 0 of the map left to
right, row 1 right to left, ...), plus `s1_wavelengths.npy` and
`s2_wavelengths.npy`. The arrays are memory-mapped and copied block by block,
so the 10 GB train split needs little memory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from acquisition.shared import cli
from acquisition.shared.progress import Progress
from acquisition.store import MapLayout, PairedMapWriter

log = logging.getLogger(__name__)

DATASET_DOI = "10.6084/m9.figshare.20713504"
# (ny, nx) and step (µm) of each split, as measured in the paper.
PAPER_SPLITS = {
    "train": ((560, 560), 40.0),
    "val": ((266, 500), 40.0),
    "test": ((500, 500), 20.0),
}
BLOCK_SPOTS = 2048


def _load(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing ({what})")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None


def import_npy(directory, split: str, out, *, shape: tuple[int, int] | None = None,
               step_um: float | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Write `out` from the split's .npy files; return its path."""
    if split not in PAPER_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(PAPER_SPLITS)}")
    directory, out = Path(directory), Path(out)
    default_shape, default_step = PAPER_SPLITS[split]
    ny, nx = shape or default_shape
    step = float(step_um or default_step)

    primary = _load(directory / f"s1_{split}.npy", f"primary spectra of the {split} split")
    secondary = _load(directory / f"s2_{split}.npy", f"secondary spectra of the {split} split")
    axes = {"primary": np.asarray(_load(directory / "s1_wavelengths.npy", "primary wavelengths"), np.float64),
            "secondary": np.asarray(_load(directory / "s2_wavelengths.npy", "secondary wavelengths"), np.float64)}
    for name, arr, system in ((f"s1_{split}.npy", primary, "primary"), (f"s2_{split}.npy", secondary, "secondary")):
        if arr.ndim != 2:
            raise ValueError(f"{directory / name}: expected [spectra, pixels], got shape {arr.shape}")
        if arr.shape[1] != axes[system].size:
            wl = "s1" if system == "primary" else "s2"
            raise ValueError(f"{directory / name}: {arr.shape[1]} pixels, but {wl}_wavelengths.npy has "
                             f"{axes[system].size}")
    if primary.shape[0] != secondary.shape[0]:
        raise ValueError(f"s1_{split}.npy has {primary.shape[0]} rows but s2_{split}.npy has "
                         f"{secondary.shape[0]}: the spectra are not paired")
    rows = primary.shape[0]
    if rows != ny * nx:
        raise ValueError(f"s1_{split}.npy has {rows} rows, but a {ny}x{nx} map needs {ny * nx}; "
                         "give the map's shape with --shape ROWSxCOLUMNS")

    layout = MapLayout((ny, nx), (step, step), "snake")
    order = layout.visit_order()
    x_um, y_um = layout.x_um, layout.y_um
    instrument = {"source": {"dataset_doi": DATASET_DOI, "split": split, "directory": str(directory)}}
    writer = PairedMapWriter.create(out, layout, axes, title=f"Vrábel et al. 2023 dataset, {split} split",
                                    sample_name="rare-element granitic pegmatite", instrument=instrument,
                                    overwrite=overwrite)
    with writer, Progress(rows, desc=f"import {split}", unit="spot", enabled=progress) as bar:
        for start in range(0, rows, BLOCK_SPOTS):
            end = min(start + BLOCK_SPOTS, rows)
            iy, ix = order[start:end, 0], order[start:end, 1]
            try:
                writer.write_spots(iy, ix,
                                   {"primary": np.asarray(primary[start:end], dtype=np.float32),
                                    "secondary": np.asarray(secondary[start:end], dtype=np.float32)},
                                   shot_id=np.arange(start, end), timestamp=np.nan,
                                   position_um=np.stack([x_um[ix], y_um[iy]], axis=1),
                                   durable=False)   # the .npy files are still there to import again
            except ValueError as exc:
                raise ValueError(f"rows {start}..{end - 1} of the {split} split: {exc}") from None
            bar.update(end - start)
        writer.finish()
    log.info("%s: %d paired spots (%dx%d map)", out, rows, ny, nx)
    return out


EXAMPLES = ["libs-acquire import-npy ~/data/libs-transfer --split train --out train.h5",
            "libs-acquire import-npy ~/data/libs-transfer --split val --shape 266x500 --out val.h5"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = cli.subcommand(
        subparsers, "import-npy", run=run, help="convert the paper's published .npy dataset to a paired-map file",
        description="Convert one split of the published dataset (s1_/s2_<split>.npy, rows in "
                    "horizontal-snake order) into a paired-map HDF5 file.", examples=EXAMPLES)
    parser.add_argument("directory", type=Path, help="folder holding s1_<split>.npy, s2_<split>.npy, "
                                                     "s1_wavelengths.npy, s2_wavelengths.npy")
    parser.add_argument("--split", required=True, choices=sorted(PAPER_SPLITS), help="which split to convert")
    parser.add_argument("--shape", type=cli.shape_type, default=None, metavar="NYxNX",
                        help="map ROWSxCOLUMNS (default: the paper's, train 560x560, val 266x500, test 500x500)")
    parser.add_argument("--step-um", type=float, default=None,
                        help="grid step in µm (default: 40 for train and val, 20 for test)")
    parser.add_argument("--out", type=Path, required=True, help="paired-map file to write (.h5)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_json_flag(parser, "what was written")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out}: exists; add --overwrite to replace it")
    out = import_npy(args.directory, args.split, args.out, shape=args.shape, step_um=args.step_um,
                     overwrite=args.overwrite, progress=not args.no_progress)
    cli.emit(args, f"wrote {out}", {"map": str(out), "split": args.split})
    return 0
