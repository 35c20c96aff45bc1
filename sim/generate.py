"""Simulated paired maps written through the paired-map store, and the
``libs-sim generate`` subcommand.

Generation is chunked by whole map rows: one chunk of shots is simulated,
written with ``PairedMapWriter.write_spots`` and dropped, so memory stays
bounded whatever the map size. The ground-truth phase map and the simulation
settings go under ``/entry/sample``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from acquisition.shared import cli
from acquisition.shared.progress import Progress
from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.store import MapLayout, PairedMapError, PairedMapReader, PairedMapWriter
from sim.plasma import GATE_NODES
from sim.samples import SAMPLE_NAMES, make_sample
from sim.scene import CALIBRATIONS, DAY_CHANGES, DEFAULT_GATES, PairedScene
from sim.spectrograph import SECONDARY_VARIANTS

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SPOTS = 2048
SHOT_RATE_HZ = 50.0
#: Start of the simulated acquisition, Unix time (2022-06-01 09:00 UTC), plus one day per `day`.
EPOCH_S = 1654074000.0

#: The paper's three maps (Vrabel et al. 2023, section 3): train and validation
#: on one day, test on another day and another region of the sample.
PRESETS: dict[str, dict] = {
    "paper-train": {"shape": (560, 560), "step_um": 40.0, "day": 0, "origin_um": (0.0, 0.0)},
    "paper-val": {"shape": (266, 500), "step_um": 40.0, "day": 0, "origin_um": (0.0, 24000.0)},
    "paper-test": {"shape": (500, 500), "step_um": 20.0, "day": 1, "origin_um": (24000.0, 4000.0)},
}


def _pair(value, name: str) -> tuple[float, float]:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (2,))
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(arr[0]), float(arr[1])


def instrument_settings(scene: PairedScene, gates: dict[str, tuple[float, float]]) -> dict[str, dict]:
    """/entry/instrument contents for a simulated bench."""
    settings = {}
    for system in SYSTEM_NAMES:
        spectrograph = scene.spectrograph(system)
        d = spectrograph.design
        settings[system] = {
            "model": d.model, "serial": d.serial, "simulated": True,
            "gate_delay_s": gates[system][0], "gate_width_s": gates[system][1],
            "pixels": d.pixels, "grooves_per_mm": round(spectrograph.grating.grooves_per_mm, 3),
            "focal_length_mm": d.focal_mm, "pixel_um": d.pixel_um,
            "fwhm_nm": [d.fwhm_blue_nm, d.fwhm_red_nm], "gain_e_per_count": d.gain_e_per_count,
            "read_noise_e": d.read_noise_e, "dark_offset_counts": d.dark_offset_counts,
            "saturation_counts": 65535, "range_nm": [d.lambda_min_nm, d.lambda_max_nm]}
    settings["secondary"]["variant"] = scene.secondary_variant
    settings["laser"] = {"wavelength_nm": 266.0, "pulse_energy_mJ": 5.0, "pulse_width_ns": 5.0,
                         "rate_hz": SHOT_RATE_HZ, "spot_um": 30.0, "simulated": True}
    return settings


def simulate_rows(scene: PairedScene, layout: MapLayout, row0: int, rows: int, *, seed: int, day: int):
    """(iy, ix, {system: counts [k, n]}) of the map rows row0 .. row0 + rows - 1, as
    :func:`generate_map` simulates the chunk that starts at ``row0``.

    The chunk's random draws depend on (seed, day, origin, row0) only, so the same chunk
    simulated through another scene of that day (:meth:`PairedScene.with_drift`) sees the
    same plasmas with the same noise."""
    ny, nx = layout.shape
    chunk_rows = np.arange(row0, min(ny, row0 + rows))
    iy, ix = (a.ravel() for a in np.meshgrid(chunk_rows, np.arange(nx), indexing="ij"))
    origin_key = [int(round(v * 1000)) & 0xFFFFFFFF for v in layout.origin_um]
    rng = np.random.default_rng([int(seed), int(day), *origin_key, int(row0)])
    return iy, ix, scene.shots(layout.x_um[ix], layout.y_um[iy], rng=rng)


def truth_attributes(scene: PairedScene, *, seed, day, origin_um, step_um, chunk_spots) -> dict:
    conditions = scene.conditions
    attrs = {"simulator": "twinplume.sim", "seed": int(seed), "day": int(day),
             "origin_um": list(origin_um), "step_um": list(step_um), "chunk_spots": int(chunk_spots),
             "crater_radius_um": scene.sample.crater_radius_um, "gate_nodes": GATE_NODES,
             "day_intensity": conditions.intensity, "sample": scene.sample.name,
             "secondary_variant": scene.secondary_variant, "day_change": scene.day_change,
             "calibration": scene.calibration}
    attrs.update({f"plasma_{k}": v for k, v in asdict(conditions.plasma).items()})
    for system, drift in conditions.drift.items():
        attrs.update({f"{system}_{k}": v for k, v in asdict(drift).items()})
    return attrs


def generate_map(out, *, shape, step_um, day: int = 0, seed: int = 0, origin_um=(0.0, 0.0),
                 progress: bool = True, chunk_spots: int = DEFAULT_CHUNK_SPOTS,
                 overwrite: bool = False, resume: bool = False, sample: str = "pegmatite",
                 secondary: str = "standard", day_change: str = "mild", calibration: str = "nominal") -> Path:
    """Simulate a paired raster map and write it to ``out``; returns the path.

    The map is a deterministic function of (seed, day, shape, step, origin,
    chunk_spots); the sample itself depends on the seed and the absolute
    position only, so two origins give two regions of one sample.
    ``resume=True`` completes an interrupted map with the same settings; the
    result equals an uninterrupted run. ``sample`` names a sample of
    :data:`sim.samples.SAMPLE_NAMES`, ``secondary`` a secondary spectrometer of
    :data:`sim.spectrograph.SECONDARY_VARIANTS`, ``day_change`` a severity of
    :data:`sim.scene.DAY_CHANGES`, ``calibration`` how the stored wavelength axes are
    calibrated (:data:`sim.scene.CALIBRATIONS`).
    """
    out = Path(out)
    if int(chunk_spots) < 1:
        raise ValueError(f"chunk_spots must be >= 1, got {chunk_spots}")
    dx, dy = _pair(step_um, "step_um")
    layout = MapLayout(tuple(shape), (dx, dy), "snake", _pair(origin_um, "origin_um"))
    scene = PairedScene(seed=seed, day=day, sample=make_sample(sample, seed), secondary=secondary,
                        day_change=day_change, calibration=calibration)
    ny, nx = layout.shape
    xs, ys = layout.x_um, layout.y_um
    phase_map = scene.sample.phase_at(*np.meshgrid(xs, ys))
    rows_per_chunk = max(1, int(chunk_spots) // nx)
    visit_rank = np.empty((ny, nx), dtype=np.int64)
    order = layout.visit_order()
    visit_rank[order[:, 0], order[:, 1]] = np.arange(ny * nx)

    wavelengths = {s: scene.wavelengths(s) for s in SYSTEM_NAMES}
    truth_attrs = truth_attributes(scene, seed=seed, day=day, origin_um=layout.origin_um,
                                   step_um=(dx, dy), chunk_spots=chunk_spots)
    if resume:
        _check_same_simulation(out, truth_attrs)
        writer = PairedMapWriter.resume(out, layout=layout, wavelengths=wavelengths)
    else:
        writer = PairedMapWriter.create(
            out, layout, wavelengths, title=f"simulated paired map, seed {seed}, day {day}",
            sample_name=f"{scene.sample.description} (seed {seed})",
            instrument=instrument_settings(scene, DEFAULT_GATES),
            sample_truth={"phase_map": phase_map, "phase_names": list(scene.sample.phase_names),
                          "attrs": truth_attrs,
                          # every simulated shot hits its grid point exactly
                          "true_position": np.stack(np.meshgrid(xs, ys), axis=-1)},
            overwrite=overwrite)
    todo = np.ones((ny, nx), dtype=bool)
    if resume:
        todo[:] = False
        missing = writer.missing()
        todo[missing[:, 0], missing[:, 1]] = True
    log.info("generating %dx%d map (%d spots) at origin (x, y) %s um, step (x, y) %s um, day %d, seed %d -> %s",
             ny, nx, ny * nx, tuple(layout.origin_um), (dx, dy), day, seed, out)
    def simulate(row0: int):
        return simulate_rows(scene, layout, row0, rows_per_chunk, seed=seed, day=day)

    # The next chunk is simulated (numpy, GIL released) while this one is written:
    # at most two chunks are held at a time.
    starts = [r for r in range(0, ny, rows_per_chunk) if todo[r:r + rows_per_chunk].any()]
    # Ctrl-C stops between chunks even if a library swallowed the KeyboardInterrupt; what was
    # written stays, and --resume completes it.
    with cli.StopRequested() as stop, writer, \
            Progress(int(todo.sum()), desc=f"generate {out.name}", unit="spot", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-chunk") as pool:
        pending = pool.submit(simulate, starts[0]) if starts else None
        for i in range(len(starts)):
            stop.check()
            iy, ix, spectra = pending.result()
            if i + 1 < len(starts):
                pending = pool.submit(simulate, starts[i + 1])
            keep = todo[iy, ix]
            if not keep.all():
                iy, ix, spectra = iy[keep], ix[keep], {s: v[keep] for s, v in spectra.items()}
            shot_id = visit_rank[iy, ix]
            writer.write_spots(iy, ix, spectra, shot_id, EPOCH_S + 86400.0 * day + shot_id / SHOT_RATE_HZ,
                               np.stack([xs[ix], ys[iy]], axis=1), durable=False)   # can be simulated again
            bar.update(iy.size)
        stop.check()
        writer.finish()
    return out


def simulation_attributes(sample_truth: dict | None) -> dict:
    """The simulation settings under a map's /entry/sample (``PairedMapReader.sample_truth``),
    with the defaults of files written before samples, variants and severities existed."""
    return {"sample": "pegmatite", "secondary_variant": "standard", "day_change": "mild", "calibration": "nominal",
            **(sample_truth or {}).get("attrs", {})}


def scene_of(attrs: dict) -> PairedScene:
    """The scene a simulated map was written with, from its :func:`simulation_attributes`."""
    seed = int(attrs["seed"])
    return PairedScene(seed=seed, day=int(attrs["day"]), sample=make_sample(str(attrs["sample"]), seed),
                       secondary=str(attrs["secondary_variant"]), day_change=str(attrs["day_change"]),
                       calibration=str(attrs["calibration"]))


def simulate_again(layout: MapLayout, attrs: dict, scene: PairedScene | None = None, *,
                   first_chunk: bool = False) -> dict[str, np.ndarray]:
    """{system: counts [rows, nx, n]} of a simulated map (its layout and
    :func:`simulation_attributes`) simulated again chunk by chunk as :func:`generate_map` wrote
    it: every row, or the first chunk's. ``scene``: another scene of that day (e.g.
    ``scene_of(attrs).with_drift(...)``) to see the same shots through."""
    scene = scene if scene is not None else scene_of(attrs)
    ny, nx = layout.shape
    rows = max(1, int(attrs["chunk_spots"]) // nx)
    ny = min(rows, ny) if first_chunk else ny
    spectra: dict[str, np.ndarray] = {}
    for row0 in range(0, ny, rows):
        iy, ix, shots = simulate_rows(scene, layout, row0, rows, seed=int(attrs["seed"]), day=int(attrs["day"]))
        for system, counts in shots.items():
            spectra.setdefault(system, np.empty((ny, nx, counts.shape[1]), np.float32))[iy, ix] = counts
    return spectra


def simulated_again(path) -> bool:
    """Whether this simulator, given the settings stored in the map at ``path``, gives its
    first chunk bit for bit. False for a map an earlier version of the simulator wrote (or
    not a simulated, complete first chunk): its figures would not be today's."""
    with PairedMapReader(path) as reader:
        attrs = simulation_attributes(reader.sample_truth)
        layout = reader.layout
        if attrs.get("simulator") != "twinplume.sim" or "chunk_spots" not in attrs:
            return False
        rows = max(1, int(attrs["chunk_spots"]) // layout.shape[1])
        spots = min(rows, layout.shape[0]) * layout.shape[1]
        if not reader.acquired.reshape(-1)[:spots].all():
            return False
        stored = reader.read_all(max_spots=spots)
    again = simulate_again(layout, attrs, first_chunk=True)
    return all(np.array_equal(np.asarray(stored.spectra[system]), counts.reshape(spots, -1))
               for system, counts in again.items())


def _check_same_simulation(out: Path, attrs: dict) -> None:
    """Refuse to resume a map that was simulated with other settings."""
    if not out.exists():
        raise FileNotFoundError(f"{out}: no map to resume")
    with PairedMapReader(out) as reader:
        truth = reader.sample_truth
    found = simulation_attributes(truth)
    for key in ("simulator", "seed", "day", "chunk_spots", "sample", "secondary_variant", "day_change",
                "calibration"):
        if key not in found or np.any(np.asarray(found[key]) != np.asarray(attrs[key])):
            raise ValueError(f"{out}: cannot resume: the file was simulated with {key}="
                             f"{found.get(key)!r}, this run has {key}={attrs[key]!r}")


# -- libs-sim generate ------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = cli.subcommand(
        subparsers, "generate", run=run, help="simulate a paired LIBS map into a paired-map HDF5 file",
        description="Simulate a paired raster map of a synthetic sample (both spectrometers see "
                    "every plasma) and write it through the paired-map store, with the ground-truth "
                    "phase map under /entry/sample. With --scenario, write a transfer scenario's "
                    "train, validation and test maps into the directory --out.",
        examples=["libs-sim generate --shape 100x100 --step-um 40 --day 0 --seed 1 --out map.h5",
                  "libs-sim generate --preset paper-test --seed 1 --out test.h5",
                  "libs-sim generate --preset paper-train --seed 1 --out train.h5 --resume   # after an interruption",
                  "libs-sim generate --sample basalt --shape 60x60 --step-um 20 --day 1 --day-change severe --out b.h5",
                  "libs-sim generate --sample granite --secondary broad-lowres --shape 50x50 --step-um 60 --out g.h5",
                  "libs-sim generate --shape 60x60 --step-um 40 --day 1 --day-change severe --calibration daily --out d.h5",
                  "libs-sim generate --scenario basalt --out maps/            # maps/basalt-{train,val,test}.h5",
                  "libs-sim generate --scenario pegmatite-few --scale 0.25 --out maps/"],
        notes="samples: " + ", ".join(SAMPLE_NAMES) + "; secondary variants: " + ", ".join(SECONDARY_VARIANTS)
              + "; day changes: " + ", ".join(DAY_CHANGES) + "\n"
              "presets: " + "; ".join(f"{k}: {v['shape'][0]}x{v['shape'][1]} @ {v['step_um']:g} um, "
                                      f"day {v['day']}, origin {v['origin_um']}" for k, v in PRESETS.items()))
    parser.add_argument("--preset", choices=sorted(PRESETS), help="one of the paper's maps (other options override it)")
    parser.add_argument("--shape", type=cli.shape_type, metavar="NYxNX",
                        help="rows x columns, e.g. 100x100 (default: the preset's; required without --preset)")
    parser.add_argument("--step-um", type=float, metavar="UM",
                        help="grid step in um, both axes (default: the preset's; required without --preset)")
    parser.add_argument("--day", type=int, help="measurement day: background, intensity, drift (default 0)")
    parser.add_argument("--seed", type=int, default=0, help="sample and noise seed (default 0)")
    parser.add_argument("--origin-um", type=cli.position_type, metavar="X,Y",
                        help="stage position x,y of spot (0, 0) in um (default: the preset's, else 1 mm "
                             "inside the stage travel, 1000,1000, as libs-acquire map)")
    parser.add_argument("--chunk-spots", type=int, default=DEFAULT_CHUNK_SPOTS,
                        help=f"spots simulated per chunk, bounds memory (default {DEFAULT_CHUNK_SPOTS})")
    parser.add_argument("--sample", choices=SAMPLE_NAMES,
                        help="sample to map (default pegmatite)")
    parser.add_argument("--secondary", choices=sorted(SECONDARY_VARIANTS),
                        help="secondary spectrometer (default standard: the paper's 260-370 nm)")
    parser.add_argument("--day-change", choices=sorted(DAY_CHANGES),
                        help="how much a day other than 0 differs (default mild)")
    parser.add_argument("--calibration", choices=CALIBRATIONS,
                        help="wavelength axes stored: nominal (the factory axis every day, default) or daily "
                             "(the axis the day's wavelength calibration gives)")
    parser.add_argument("--scenario", help="write a named transfer scenario's train/val/test maps into the "
                                           "directory --out (see sim/scenarios.py; e.g. basalt, pegmatite-few)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="with --scenario: multiply every map's number of spots (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="output HDF5 file (a directory with --scenario)")
    cli.add_json_flag(parser, "what was written")
    replace = parser.add_mutually_exclusive_group()
    replace.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    replace.add_argument("--resume", action="store_true",
                         help="complete an interrupted map generated with the same options")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.scenario is not None:
        return _run_scenario(args)
    margin = cli.DEFAULT_ORIGIN_MARGIN_UM     # the simulated stage's travel starts at 0, 0
    settings = dict(PRESETS[args.preset]) if args.preset else {"day": 0, "origin_um": (margin, margin)}
    for key, value in (("shape", args.shape), ("step_um", args.step_um), ("day", args.day),
                       ("origin_um", args.origin_um)):
        if value is not None:
            settings[key] = value
    missing = [f"--{k.replace('_', '-')}" for k in ("shape", "step_um") if k not in settings]
    if missing:
        raise cli.UsageError(f"give --preset or {' and '.join(missing)}")
    if settings["step_um"] <= 0:
        raise cli.UsageError(f"--step-um must be positive, got {settings['step_um']}")
    if settings["day"] < 0 or args.seed < 0:
        raise cli.UsageError("--day and --seed must be non-negative")
    if args.out.exists() and not (args.overwrite or args.resume):
        raise cli.UsageError(f"{args.out} exists; pass --overwrite to replace it "
                         f"or --resume to complete it")
    try:
        path = generate_map(args.out, seed=args.seed, progress=not args.no_progress, chunk_spots=args.chunk_spots,
                            overwrite=args.overwrite, resume=args.resume, sample=args.sample or "pegmatite",
                            secondary=args.secondary or "standard", day_change=args.day_change or "mild",
                            calibration=args.calibration or "nominal", **settings)
    except PairedMapError as exc:
        raise cli.UsageError(str(exc)) from exc
    ny, nx = settings["shape"]
    cli.emit(args, f"wrote {path} ({ny}x{nx} spots, {settings['step_um']:g} um, day {settings['day']}, seed {args.seed})",
             {"map": str(path), "shape": [ny, nx], "step_um": settings["step_um"], "day": settings["day"],
              "seed": args.seed, "origin_um": list(settings["origin_um"])})
    return 0


def _run_scenario(args: argparse.Namespace) -> int:
    from sim.scenarios import SCENARIOS      # sim.scenarios builds on this module

    if args.scenario not in SCENARIOS:
        print(f"libs-sim generate: unknown scenario {args.scenario!r}; known: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    if not (np.isfinite(args.scale) and args.scale > 0):
        print(f"libs-sim generate: --scale must be positive, got {args.scale}", file=sys.stderr)
        return 2
    given = [flag for flag, value in (("--preset", args.preset), ("--shape", args.shape), ("--step-um", args.step_um),
                                      ("--day", args.day), ("--origin-um", args.origin_um), ("--resume", args.resume),
                                      ("--sample", args.sample), ("--secondary", args.secondary),
                                      ("--day-change", args.day_change), ("--calibration", args.calibration))
             if value not in (None, False)]
    if given:
        print(f"libs-sim generate: --scenario sets the maps itself; drop {', '.join(given)}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"libs-sim generate: with --scenario, --out must be a directory; {args.out} is a file", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    try:
        paths = scenario.write_maps(args.out, scale=args.scale, progress=not args.no_progress,
                                    overwrite=args.overwrite)
    except (PairedMapError, FileExistsError) as exc:
        print(f"libs-sim generate: {exc}", file=sys.stderr)
        return 2
    specs = scenario.maps(args.scale)
    cli.emit(args, "\n".join(f"{role}: {path} ({specs[role].shape[0]}x{specs[role].shape[1]} spots, "
                              f"{specs[role].step_um:g} um, day {specs[role].day})" for role, path in paths.items()),
             {"scenario": args.scenario, "maps": {role: str(path) for role, path in paths.items()}})
    return 0
