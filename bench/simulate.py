"""Simulator throughput: paired spectra per second, simulated alone and written
through the paired-map store by generate_map, with peak memory.

Prints one JSON object. Each figure is the best of --repeats runs, because the
machine is shared and single runs are noisy; the load average at the start is
reported with them. Memory: peak RSS (getrusage) after a map of --spots spots
and after one three times larger; bounded, chunked generation keeps the two
close.

Example:
    .venv/bin/python bench/sim.py --spots 20160 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.generate import DEFAULT_CHUNK_SPOTS, generate_map  # noqa: E402
from sim.scene import PairedScene  # noqa: E402

TARGET_SPECTRA_PER_S = 5000
PAPER_TRAIN_SPOTS = 560 * 560
MAP_COLUMNS = 560


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def simulate_only(n_spots: int, chunk_spots: int) -> tuple[float, float]:
    """(spectra per second wall, per CPU second) of PairedScene.shots in map-row chunks."""
    scene = PairedScene(seed=1, day=0)
    rows = max(1, chunk_spots // MAP_COLUMNS)
    y, x = np.mgrid[0:n_spots // MAP_COLUMNS, 0:MAP_COLUMNS] * 40.0
    x, y = x.ravel(), y.ravel()
    scene.shots(x[:10], y[:10])                          # build the line-profile caches first
    step = rows * MAP_COLUMNS
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, x.size, step):
        scene.shots(x[start:start + step], y[start:start + step], rng=np.random.default_rng(start))
    return x.size / (time.perf_counter() - wall), x.size / (time.process_time() - cpu)


def end_to_end(directory: Path, n_spots: int, chunk_spots: int) -> float:
    path = directory / "bench-map.h5"
    shape = (max(1, n_spots // MAP_COLUMNS), MAP_COLUMNS)
    start = time.perf_counter()
    generate_map(path, shape=shape, step_um=40.0, seed=1, progress=False, chunk_spots=chunk_spots, overwrite=True)
    rate = shape[0] * shape[1] / (time.perf_counter() - start)
    path.unlink()
    return rate


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="example:\n  .venv/bin/python bench/sim.py --spots 20160 --repeats 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spots", type=int, default=20160, help="spots per measured map (default 20160 = 36 rows)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is kept (default 3)")
    parser.add_argument("--chunk-spots", type=int, default=DEFAULT_CHUNK_SPOTS, help="spots per chunk")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary maps")
    args = parser.parse_args(argv)
    if args.spots < MAP_COLUMNS or args.repeats < 1:
        parser.error(f"--spots must be >= {MAP_COLUMNS} and --repeats >= 1")

    load = os.getloadavg()[0]
    sim_wall, sim_cpu = zip(*(simulate_only(args.spots, args.chunk_spots) for _ in range(args.repeats)))
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-sim-") as tmp:
        generated = [end_to_end(Path(tmp), args.spots, args.chunk_spots) for _ in range(args.repeats)]
        rss_small = peak_rss_mb()
        end_to_end(Path(tmp), 3 * args.spots, args.chunk_spots)
        rss_large = peak_rss_mb()
    best = max(generated)
    print(json.dumps({
        "benchmark": "sim",
        "spectra_per_s": round(best, 1),
        "spectra_per_s_simulate_only": round(max(sim_wall), 1),
        "spectra_per_cpu_s_simulate_only": round(max(sim_cpu), 1),
        "spectra_per_s_runs": [round(v, 1) for v in generated],
        "paper_train_map_estimate_s": round(PAPER_TRAIN_SPOTS / best, 1),
        "chunk_spots": args.chunk_spots,
        "spots_per_map": (args.spots // MAP_COLUMNS) * MAP_COLUMNS,
        "peak_rss_mb": round(rss_small, 1),
        "peak_rss_mb_after_3x_map": round(rss_large, 1),
        "target_spectra_per_s": TARGET_SPECTRA_PER_S,
        "meets_target": bool(best >= TARGET_SPECTRA_PER_S),
        "load_average_at_start": round(load, 2),
        "cpus": os.cpu_count(),
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
