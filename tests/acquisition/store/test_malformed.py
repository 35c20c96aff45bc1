"""Broken files (made with plain h5py) are refused with an error naming the first violation."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from acquisition.store import PairedMapFormatError, PairedMapReader, PairedMapWriter, validate

from .mapdata import WAVELENGTHS, layout, write_spot


@pytest.fixture(scope="module")
def good_map(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "good.h5"
    writer = PairedMapWriter.create(path, layout(3, 4), WAVELENGTHS)
    for iy, ix in writer.missing()[:5]:
        write_spot(writer, iy, ix)
    writer.close()
    return path


def replace(f, path, data, **attrs):
    del f[path]
    ds = f.create_dataset(path, data=data)
    ds.attrs.update(attrs)


def reverse_some_wavelengths(f):
    w = f["entry/secondary/wavelength"][()]
    w[3], w[4] = w[4], w[3]
    f["entry/secondary/wavelength"][...] = w


BREAKAGES = {
    "no format attribute": (lambda f: f.attrs.__delitem__("format"), "/: missing the 'format' attribute"),
    "other format": (lambda f: f.attrs.__setitem__("format", "nexus.thing"), "format is 'nexus.thing'"),
    "unknown version": (lambda f: f.attrs.__setitem__("format_version", 2), "unknown format_version"),
    "no entry": (lambda f: f.__delitem__("entry"), "/entry: missing group"),
    "entry not NXentry": (lambda f: f["entry"].attrs.__setitem__("NX_class", "NXsubentry"),
                          "/entry: attribute NX_class is 'NXsubentry'"),
    "no start_time": (lambda f: f.__delitem__("entry/start_time"), "/entry/start_time: missing dataset"),
    "no spectra": (lambda f: f.__delitem__("entry/primary/spectra"), "/entry/primary/spectra: missing dataset"),
    "float64 spectra": (lambda f: replace(f, "entry/primary/spectra", np.zeros((3, 4, 40)), units="counts"),
                        "/entry/primary/spectra: dtype is float64, expected float32"),
    "spectra one pixel short": (lambda f: replace(f, "entry/secondary/spectra", np.zeros((3, 4, 23), np.float32),
                                                  units="counts"),
                                "/entry/secondary/spectra: shape is (3, 4, 23), expected (3, 4, 24)"),
    "non-increasing wavelengths": (reverse_some_wavelengths,
                                   "/entry/secondary/wavelength: not strictly increasing (index 3"),
    "wavelength without units": (lambda f: f["entry/primary/wavelength"].attrs.__delitem__("units"),
                                 "/entry/primary/wavelength: missing the 'units' attribute"),
    "wavelength in angstrom": (lambda f: f["entry/primary/wavelength"].attrs.__setitem__("units", "Å"),
                               "/entry/primary/wavelength: units are 'Å', expected 'nm'"),
    "float acquired": (lambda f: replace(f, "entry/scan/acquired", np.zeros((3, 4))),
                       "/entry/scan/acquired: dtype is float64, expected uint8"),
    "no position": (lambda f: f.__delitem__("entry/scan/position"), "/entry/scan/position: missing dataset"),
    "shot_id wrong shape": (lambda f: replace(f, "entry/scan/shot_id", np.zeros((4, 3), np.int64)),
                            "/entry/scan/shot_id: shape is (4, 3), expected (3, 4)"),
    "unknown scan order": (lambda f: f["entry/scan"].attrs.__setitem__("order", "spiral"),
                           "/entry/scan: attribute order is 'spiral'"),
    "no system at all": (lambda f: (f.__delitem__("entry/primary"), f.__delitem__("entry/secondary")),
                         "/entry/primary: missing group"),
    "x of wrong length": (lambda f: replace(f, "entry/primary/x", np.zeros(5), units="um"),
                          "/entry/primary/x: shape is (5,), expected (4,)"),
}


@pytest.mark.parametrize("name", list(BREAKAGES))
def test_broken_file_is_refused_naming_the_problem(good_map, tmp_path, name):
    break_it, message = BREAKAGES[name]
    path = tmp_path / "broken.h5"
    shutil.copy(good_map, path)
    with h5py.File(path, "r+") as f:
        break_it(f)
    with pytest.raises(PairedMapFormatError) as info:
        validate(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    with pytest.raises(PairedMapFormatError, match="^" + str(path)):
        PairedMapReader(path)
    with pytest.raises(PairedMapFormatError):
        PairedMapWriter.resume(path)


def test_the_first_violation_is_named(good_map, tmp_path):
    path = tmp_path / "two-problems.h5"
    shutil.copy(good_map, path)
    with h5py.File(path, "r+") as f:
        del f["entry/primary/spectra"]
        f.attrs["format_version"] = 7
    with pytest.raises(PairedMapFormatError, match="format_version 7"):
        validate(path)


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just text")
    with pytest.raises(PairedMapFormatError, match="not an HDF5 file"):
        validate(path)
    with pytest.raises(FileNotFoundError, match="no such paired-map file"):
        validate(tmp_path / "absent.h5")
