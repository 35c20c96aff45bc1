"""Paired-map store throughput against raw numpy I/O of the same bytes on the same disk.

Prints one JSON object. Writing: PairedMapWriter.write_spot of paired spots
(4062 + 3872 float32 pixels) with its kill -9 guarantee, against writing the
same spectra spot by spot to a flat file with f.write (both without fsync);
for reference also write_spots in blocks of 2048 spots without the journal
(durable=False, as an import), write_spots of map rows (560 spots) through the
journal (durable=True, as an acquisition records a fly row), and one np.save
of all of them. Reading:
PairedMapReader.iter_chunks over the written map against np.fromfile of the
flat file in blocks of the same size (both give new arrays per block); for
reference also against readinto one reused buffer. Each measurement is
repeated, raw and store interleaved, and the best run of each is kept, because
the page cache and other users of the disk make single runs noisy.

Example:
    .venv/bin/python bench/store.py --spots 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from acquisition.store import MapLayout, PairedMapReader, PairedMapWriter  # noqa: E402

N_PRIMARY, N_SECONDARY = 4062, 3872
MAP_COLUMNS = 560
WRITE_SPOTS_PER_S_TARGET = 2000
RATIO_TARGET = 0.5
READ_CHUNK_SPOTS = 4096
WRITE_BLOCK_SPOTS = 2048


def spectra_pool(n_distinct: int = 64):
    rng = np.random.default_rng(0)
    return (rng.gamma(2.0, 500.0, (n_distinct, N_PRIMARY)).astype(np.float32),
            rng.gamma(2.0, 500.0, (n_distinct, N_SECONDARY)).astype(np.float32))


def wavelengths():
    return {"primary": np.linspace(245.0, 407.0, N_PRIMARY), "secondary": np.linspace(260.0, 370.0, N_SECONDARY)}


def write_store(path: Path, layout: MapLayout, n_spots: int, pool) -> float:
    primary, secondary = pool
    spots = layout.visit_order()[:n_spots]
    writer = PairedMapWriter.create(path, layout, wavelengths(), title="bench", overwrite=True)
    t0 = time.perf_counter()
    for i, (iy, ix) in enumerate(spots):
        j = i % len(primary)
        writer.write_spot(iy, ix, {"primary": primary[j], "secondary": secondary[j]}, i, t0,
                          (float(ix), float(iy)))
    writer.close()
    return time.perf_counter() - t0


def write_store_blocks(path: Path, layout: MapLayout, n_spots: int, pool, *, block: int = WRITE_BLOCK_SPOTS,
                       durable: bool = False) -> float:
    """write_spots in blocks: an importer (durable=False) or an acquisition recording rows (durable=True)."""
    primary, secondary = pool
    spots = layout.visit_order()[:n_spots]
    rows = np.arange(n_spots) % len(primary)
    writer = PairedMapWriter.create(path, layout, wavelengths(), title="bench", overwrite=True,
                                    batch_spots=WRITE_BLOCK_SPOTS if not durable else 256)
    t0 = time.perf_counter()
    for a in range(0, n_spots, block):
        b = min(a + block, n_spots)
        writer.write_spots(spots[a:b, 0], spots[a:b, 1],
                           {"primary": primary[rows[a:b]], "secondary": secondary[rows[a:b]]},
                           np.arange(a, b), t0, spots[a:b, ::-1].astype(np.float64), durable=durable)
    writer.close()
    return time.perf_counter() - t0


def write_raw(path: Path, n_spots: int, pool) -> float:
    primary, secondary = pool
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for i in range(n_spots):
            j = i % len(primary)
            f.write(primary[j])
            f.write(secondary[j])
    return time.perf_counter() - t0


def read_store(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    with PairedMapReader(path) as reader:
        for chunk in reader.iter_chunks(chunk_spots=READ_CHUNK_SPOTS):
            n += len(chunk)
    return time.perf_counter() - t0, n


def read_raw(path: Path, n_spots: int) -> float:
    """Plain numpy reading of the same bytes: np.fromfile, a new array per block (as the reader yields)."""
    per_spot = N_PRIMARY + N_SECONDARY
    t0 = time.perf_counter()
    with open(path, "rb") as f:
        left = n_spots
        while left:
            k = min(left, READ_CHUNK_SPOTS)
            if np.fromfile(f, dtype=np.float32, count=k * per_spot).size != k * per_spot:
                raise RuntimeError("raw file shorter than written")
            left -= k
    return time.perf_counter() - t0


def read_raw_reused(path: Path, n_spots: int) -> float:
    """The fastest plain read, for reference: unbuffered readinto one reused array."""
    per_spot = N_PRIMARY + N_SECONDARY
    block = np.empty(READ_CHUNK_SPOTS * per_spot, np.float32)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        left = n_spots
        while left:
            k = min(left, READ_CHUNK_SPOTS)
            if f.readinto(block[:k * per_spot]) != k * per_spot * 4:
                raise RuntimeError("raw file shorter than written")
            left -= k
    return time.perf_counter() - t0


def write_raw_bulk(path: Path, n_spots: int, pool) -> float:
    """For reference: all spots as one array written with a single np.save."""
    primary, secondary = pool
    rows = np.arange(n_spots) % len(primary)
    data = np.concatenate([primary[rows], secondary[rows]], axis=1)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        np.save(f, data)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 3)[-1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spots", type=int, default=20000, help="paired spots to write (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (default 3)")
    parser.add_argument("--dir", type=Path, default=None, help="directory on the disk to test (default: temp)")
    args = parser.parse_args(argv)
    if args.spots < 1 or args.repeats < 1:
        parser.error("--spots and --repeats must be >= 1")

    pool = spectra_pool()
    nx = min(MAP_COLUMNS, args.spots)
    layout = MapLayout((-(-args.spots // nx), nx), (40.0, 40.0))
    nbytes = args.spots * (N_PRIMARY + N_SECONDARY) * 4
    write_s, raw_write_s, bulk_write_s, block_write_s, row_write_s = [], [], [], [], []
    read_s, raw_read_s, reused_read_s = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=args.dir) as tmp:
        store_path, raw_path = Path(tmp) / "map.h5", Path(tmp) / "raw.f32"
        for _ in range(args.repeats):
            bulk_write_s.append(write_raw_bulk(raw_path, args.spots, pool))
            raw_write_s.append(write_raw(raw_path, args.spots, pool))
            block_write_s.append(write_store_blocks(store_path, layout, args.spots, pool))
            row_write_s.append(write_store_blocks(store_path, layout, args.spots, pool, block=nx, durable=True))
            write_s.append(write_store(store_path, layout, args.spots, pool))
        for _ in range(args.repeats):
            raw_read_s.append(read_raw(raw_path, args.spots))
            reused_read_s.append(read_raw_reused(raw_path, args.spots))
            seconds, n_read = read_store(store_path)
            if n_read != args.spots:
                raise RuntimeError(f"read back {n_read} spots, wrote {args.spots}")
            read_s.append(seconds)

    mb = nbytes / 1e6
    w, rw, r, rr = min(write_s), min(raw_write_s), min(read_s), min(raw_read_s)
    write_ratio, read_ratio = rw / w, rr / r
    result = {
        "bench": "store",
        "spots": args.spots,
        "pixels_per_spot": [N_PRIMARY, N_SECONDARY],
        "megabytes": round(mb, 1),
        "repeats": args.repeats,
        "method": "best of repeats, raw and store interleaved, no fsync on either side; ratios with "
                  "'vs' are for reference only (no target)",
        "write_spots_per_s": round(args.spots / w),
        "write_MB_per_s": round(mb / w, 1),
        "raw_write_MB_per_s": round(mb / rw, 1),
        "write_ratio": round(write_ratio, 3),
        "raw_bulk_write_MB_per_s": round(mb / min(bulk_write_s), 1),
        "write_ratio_vs_bulk": round(min(bulk_write_s) / w, 3),
        "write_spots_blocks_MB_per_s": round(mb / min(block_write_s), 1),
        "write_spots_blocks_ratio_vs_bulk": round(min(bulk_write_s) / min(block_write_s), 3),
        # fly rows through the journal (kill -9 safe once each call returns) against the same
        # blocks straight into HDF5 (the path acquisition used before)
        "write_rows_journalled_spots_per_s": round(args.spots / min(row_write_s)),
        "write_rows_journalled_ratio_vs_blocks_unjournalled": round(min(block_write_s) / min(row_write_s), 3),
        "read_MB_per_s": round(mb / r, 1),
        "raw_read_MB_per_s": round(mb / rr, 1),
        "read_ratio": round(read_ratio, 3),
        "raw_read_reused_buffer_MB_per_s": round(mb / min(reused_read_s), 1),
        "read_ratio_vs_reused_buffer": round(min(reused_read_s) / r, 3),
        "all_write_s": [round(v, 3) for v in write_s],
        "all_raw_write_s": [round(v, 3) for v in raw_write_s],
        "all_write_spots_blocks_s": [round(v, 3) for v in block_write_s],
        "all_write_rows_journalled_s": [round(v, 3) for v in row_write_s],
        "all_raw_bulk_write_s": [round(v, 3) for v in bulk_write_s],
        "all_read_s": [round(v, 3) for v in read_s],
        "all_raw_read_s": [round(v, 3) for v in raw_read_s],
        "targets": {"write_spots_per_s": WRITE_SPOTS_PER_S_TARGET, "write_ratio": RATIO_TARGET,
                    "read_ratio": RATIO_TARGET},
        "pass": {
            "write_spots_per_s": args.spots / w >= WRITE_SPOTS_PER_S_TARGET,
            "write_ratio": write_ratio >= RATIO_TARGET,
            "read_ratio": read_ratio >= RATIO_TARGET,
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
