"""A writer in its own process, driven by the store tests (kill -9 and live-reading tests).

    python -m tests.acquisition.store.writer_script run PATH NY NX BATCH   write every missing spot, printing
                                                               "W iy ix" once write_spot returned
    python -m tests.acquisition.store.writer_script blocks PATH NY NX BATCH  the same with write_spots, 7 spots a call
    python -m tests.acquisition.store.writer_script live PATH NY NX        on stdin "write K" / "finish";
                                                               answers "ok N" / "done"
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from acquisition.store import PairedMapWriter

import numpy as np

from .mapdata import WAVELENGTHS, layout, shot_of, spot_spectra, write_spot


def open_writer(path: Path, ny: int, nx: int, batch: int) -> PairedMapWriter:
    lay = layout(ny, nx)
    if path.exists():
        return PairedMapWriter.resume(path, layout=lay, wavelengths=WAVELENGTHS, batch_spots=batch,
                                      commit_interval_s=3600)
    return PairedMapWriter.create(path, lay, WAVELENGTHS, title="kill test", batch_spots=batch,
                                  commit_interval_s=3600)


def run(path: Path, ny: int, nx: int, batch: int) -> None:
    writer = open_writer(path, ny, nx, batch)
    print("READY", writer.n_acquired, flush=True)
    for iy, ix in writer.missing():
        write_spot(writer, int(iy), int(ix))
        print("W", iy, ix, flush=True)
        time.sleep(0.0005)  # keeps the map in progress long enough to be killed mid-way
    writer.finish()
    print("FINISHED", flush=True)


def blocks(path: Path, ny: int, nx: int, batch: int) -> None:
    writer = open_writer(path, ny, nx, batch)
    print("READY", writer.n_acquired, flush=True)
    missing = writer.missing()
    for start in range(0, len(missing), 7):
        block = missing[start:start + 7]
        spectra = [spot_spectra(int(iy), int(ix)) for iy, ix in block]
        lay = writer.layout
        writer.write_spots(block[:, 0], block[:, 1], {s: np.stack([sp[s] for sp in spectra]) for s in spectra[0]},
                           [shot_of(int(iy), int(ix), lay.nx) for iy, ix in block],
                           [1.7e9 + iy * lay.nx + ix for iy, ix in block],
                           [(float(lay.x_um[ix]) + 0.25, float(lay.y_um[iy]) - 0.25) for iy, ix in block])
        for iy, ix in block:
            print("W", iy, ix, flush=True)
        time.sleep(0.002)
    writer.finish()
    print("FINISHED", flush=True)


def live(path: Path, ny: int, nx: int) -> None:
    writer = PairedMapWriter.create(path, layout(ny, nx), WAVELENGTHS, title="live test",
                                    batch_spots=1000, commit_interval_s=3600)
    todo = iter(writer.missing())
    print("ok", writer.n_acquired, flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "write":
            for _ in range(int(command[1])):
                iy, ix = next(todo)
                write_spot(writer, int(iy), int(ix))
            writer.flush()
            print("ok", writer.n_acquired, flush=True)
        elif command[0] == "finish":
            writer.finish()
            print("done", flush=True)
            return


if __name__ == "__main__":
    mode, path, ny, nx = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    if mode == "run":
        run(path, ny, nx, int(sys.argv[5]))
    elif mode == "blocks":
        blocks(path, ny, nx, int(sys.argv[5]))
    else:
        live(path, ny, nx)
