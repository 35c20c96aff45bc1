"""The file written by the store, checked against spec/paired-map-hdf5.md with plain h5py only."""

from __future__ import annotations

from datetime import datetime

import h5py
import numpy as np
import pytest

from acquisition.store import PairedMapError, PairedMapReader, PairedMapWriter

from .mapdata import N_PRIMARY, N_SECONDARY, WAVELENGTHS, layout, shot_of, spot_spectra, write_spot


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@pytest.fixture(scope="module")
def written_map(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance") / "map.h5"
    lay = layout(4, 5)
    writer = PairedMapWriter.create(path, lay, WAVELENGTHS, title="conformance", sample_name="pegmatite",
                                    instrument={"secondary": {"serial": "S-2"}}, batch_spots=3)
    spots = [tuple(int(v) for v in s) for s in lay.visit_order()[:13]]
    for iy, ix in spots:
        write_spot(writer, iy, ix)
    writer.finish()
    return path, lay, spots


def test_root_and_entry(written_map):
    path, _, _ = written_map
    with h5py.File(path, "r") as f:
        assert text(f.attrs["format"]) == "twinplume.paired-map"
        assert int(f.attrs["format_version"]) == 1
        creator = text(f.attrs["creator"])
        assert creator.split()[0] == "twinplume" and len(creator.split()) == 2
        entry = f["entry"]
        assert text(entry.attrs["NX_class"]) == "NXentry"
        assert text(entry.attrs["default"]) == "primary"
        assert text(entry["title"][()]) == "conformance"
        for name in ("start_time", "end_time"):
            stamp = datetime.fromisoformat(text(entry[name][()]))
            assert stamp.tzinfo is not None, f"{name} must carry a time zone"
        assert text(entry["sample"].attrs["NX_class"]) == "NXsample"
        assert text(entry["sample/name"][()]) == "pegmatite"
        assert text(entry["instrument"].attrs["NX_class"]) == "NXinstrument"
        for system in ("primary", "secondary"):
            assert text(entry[f"instrument/{system}"].attrs["NX_class"]) == "NXdetector"
        assert text(entry["instrument/secondary"].attrs["serial"]) == "S-2"


@pytest.mark.parametrize("system,n", [("primary", N_PRIMARY), ("secondary", N_SECONDARY)])
def test_system_groups(written_map, system, n):
    path, lay, spots = written_map
    with h5py.File(path, "r") as f:
        group = f[f"entry/{system}"]
        assert text(group.attrs["NX_class"]) == "NXdata"
        assert text(group.attrs["signal"]) == "spectra"
        assert [text(a) for a in group.attrs["axes"]] == ["y", "x", "wavelength"]
        spectra = group["spectra"]
        assert spectra.dtype == np.float32 and spectra.shape == (4, 5, n)
        assert spectra.chunks is not None
        assert np.isnan(spectra.fillvalue)
        assert text(spectra.attrs["units"]) == "counts"
        wavelength = group["wavelength"]
        assert wavelength.dtype == np.float64 and wavelength.shape == (n,)
        assert text(wavelength.attrs["units"]) == "nm"
        assert np.all(np.diff(wavelength[()]) > 0)
        np.testing.assert_array_equal(wavelength[()], WAVELENGTHS[system])
        for axis, values in (("x", lay.x_um), ("y", lay.y_um)):
            assert group[axis].dtype == np.float64
            assert text(group[axis].attrs["units"]) in ("um", "µm")
            np.testing.assert_array_equal(group[axis][()], values)
        data = spectra[()]
        for iy, ix in spots:
            np.testing.assert_array_equal(data[iy, ix], spot_spectra(iy, ix)[system])
        unwritten = [(iy, ix) for iy in range(4) for ix in range(5) if (iy, ix) not in spots]
        assert all(np.isnan(data[iy, ix]).all() for iy, ix in unwritten)


def test_scan_group(written_map):
    path, lay, spots = written_map
    with h5py.File(path, "r") as f:
        scan = f["entry/scan"]
        assert text(scan.attrs["NX_class"]) == "NXcollection"
        assert text(scan.attrs["order"]) == "snake"
        np.testing.assert_array_equal(scan.attrs["step_um"], [40.0, 40.0])
        expected = {"acquired": (np.uint8, (4, 5)), "shot_id": (np.int64, (4, 5)),
                    "timestamp": (np.float64, (4, 5)), "position": (np.float64, (4, 5, 2))}
        for name, (dtype, shape) in expected.items():
            assert scan[name].dtype == dtype and scan[name].shape == shape, name
            assert "units" in scan[name].attrs, f"{name} has no units"
        assert text(scan["timestamp"].attrs["units"]) == "s"
        assert text(scan["position"].attrs["units"]) in ("um", "µm")
        acquired, shot, stamp, pos = (scan[n][()] for n in ("acquired", "shot_id", "timestamp", "position"))
        for iy in range(4):
            for ix in range(5):
                if (iy, ix) in spots:
                    assert acquired[iy, ix] == 1
                    assert shot[iy, ix] == shot_of(iy, ix, 5)
                    assert stamp[iy, ix] == 1.7e9 + iy * 5 + ix
                    np.testing.assert_array_equal(pos[iy, ix], [lay.x_um[ix] + 0.25, lay.y_um[iy] - 0.25])
                else:
                    assert acquired[iy, ix] == 0 and shot[iy, ix] == -1
                    assert np.isnan(stamp[iy, ix]) and np.isnan(pos[iy, ix]).all()


def write_foreign_map(path, *, compression=None, libver=None):
    """Only what the contract lists, written with plain h5py (spectra chunked 2x2 spots)."""
    ny, nx, n = 2, 3, 5
    spectra = np.arange(ny * nx * n, dtype=np.float32).reshape(ny, nx, n)
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs.update(format="twinplume.paired-map", format_version=1, creator="someone 1.0")
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", default="primary")
        entry["title"] = "by hand"
        entry["start_time"] = "2024-01-01T00:00:00+00:00"
        entry.create_group("sample").attrs["NX_class"] = "NXsample"
        entry["sample/name"] = "x"
        entry.create_group("instrument").attrs["NX_class"] = "NXinstrument"
        primary = entry.create_group("primary")
        primary.attrs.update(NX_class="NXdata", signal="spectra", axes=["y", "x", "wavelength"])
        primary.create_dataset("spectra", data=spectra, chunks=(2, 2, n), compression=compression,
                               fillvalue=np.nan).attrs["units"] = "counts"
        primary.create_dataset("wavelength", data=np.linspace(300, 310, n)).attrs["units"] = "nm"
        primary.create_dataset("x", data=np.arange(nx) * 10.0).attrs["units"] = "um"
        primary.create_dataset("y", data=np.arange(ny) * 10.0).attrs["units"] = "um"
        scan = entry.create_group("scan")
        scan.attrs.update(NX_class="NXcollection", order="raster", step_um=[10.0, 10.0])
        scan.create_dataset("acquired", data=np.array([[1, 0, 1], [0, 1, 1]], np.uint8), chunks=(1, nx))
        scan.create_dataset("shot_id", data=np.arange(6, dtype=np.int64).reshape(2, 3), chunks=(1, nx))
        scan.create_dataset("timestamp", data=np.zeros((2, 3)), chunks=(1, nx)).attrs["units"] = "s"
        scan.create_dataset("position", data=np.zeros((2, 3, 2)), chunks=(1, nx, 2)).attrs["units"] = "um"
    return spectra


def test_a_file_written_by_another_program_from_the_spec_reads(tmp_path):
    path = tmp_path / "foreign.h5"
    spectra = write_foreign_map(path)
    with PairedMapReader(path) as reader:
        assert reader.systems == ("primary",) and reader.n_acquired == 4
        chunk = reader.read_all()
        assert list(zip(chunk.iy.tolist(), chunk.ix.tolist())) == [(0, 0), (0, 2), (1, 1), (1, 2)]
        np.testing.assert_array_equal(chunk.spectra["primary"], spectra[[0, 0, 1, 1], [0, 2, 1, 2]])


def test_a_compressed_foreign_file_is_resumed_without_raw_chunk_writes(tmp_path):
    path = tmp_path / "foreign-gzip.h5"
    spectra = write_foreign_map(path, compression="gzip", libver="latest")
    with PairedMapWriter.resume(path, batch_spots=2) as writer:
        assert [tuple(s) for s in writer.missing()] == [(0, 1), (1, 0)]
        for iy, ix in writer.missing():
            writer.write_spot(iy, ix, {"primary": np.full(5, 100.0 + ix)}, 50 + ix, 1.0, (0.0, 0.0))
        writer.finish()
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 6
        np.testing.assert_array_equal(reader.spot(0, 1)["primary"], np.full(5, 101.0, np.float32))
        np.testing.assert_array_equal(reader.spot(1, 0)["primary"], np.full(5, 100.0, np.float32))
        np.testing.assert_array_equal(reader.spot(1, 2)["primary"], spectra[1, 2])


def test_a_file_in_an_old_hdf5_format_is_not_resumed(tmp_path):
    path = tmp_path / "old-format.h5"
    write_foreign_map(path)
    with pytest.raises(PairedMapError, match="too old for SWMR"):
        PairedMapWriter.resume(path)
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 4, "the refused resume left the file as it was"
    assert not (tmp_path / "old-format.h5.journal").exists()
