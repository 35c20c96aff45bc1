"""Validation of an open file against spec/paired-map-hdf5.md, version 1.

`check_contract` walks the contract in a fixed order and raises
PairedMapFormatError naming the first violation (HDF5 path and what is wrong),
so the same broken file always gets the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

from .h5files import attr_text
from acquisition.shared.spectral import WavelengthMismatchError, check_wavelength_axis
from acquisition.shared.systems import SYSTEM_NAMES

from .layout import (FORMAT, FORMAT_VERSION, ORDERS, MapLayout, PairedMapFormatError,
                     PairedMapMismatchError)
from .skeleton import checked_wavelengths

MICROMETRES = ("um", "µm", "micrometre", "micrometer")
# Units the contract fixes, by dataset name within its group.
REQUIRED_UNITS = {
    "spectra": ("counts",),
    "wavelength": ("nm",),
    "x": MICROMETRES,
    "y": MICROMETRES,
    "timestamp": ("s",),
    "position": MICROMETRES,
}


@dataclass(frozen=True)
class ContractInfo:
    systems: tuple[str, ...]
    shape: tuple[int, int]
    n_pixels: dict[str, int]
    order: str
    step_um: tuple[float, float]           # (dx, dy)


def _fail(message: str) -> None:
    raise PairedMapFormatError(message)


def _group(f: h5py.File, path: str, nx_class: str | None) -> h5py.Group:
    obj = f.get(path)
    if obj is None:
        _fail(f"{path}: missing group")
    if not isinstance(obj, h5py.Group):
        _fail(f"{path}: is a dataset, the contract wants a group")
    if nx_class is not None:
        found = attr_text(obj.attrs["NX_class"]) if "NX_class" in obj.attrs else None
        if found != nx_class:
            _fail(f"{path}: attribute NX_class is {found!r}, expected {nx_class!r}")
    return obj


def _dataset(f: h5py.File, path: str, dtype, shape: tuple | None) -> h5py.Dataset:
    obj = f.get(path)
    if obj is None:
        _fail(f"{path}: missing dataset")
    if not isinstance(obj, h5py.Dataset):
        _fail(f"{path}: is a group, the contract wants a dataset")
    if dtype == "str":
        if h5py.check_string_dtype(obj.dtype) is None or obj.shape != ():
            _fail(f"{path}: must be a scalar string, found dtype {obj.dtype} shape {obj.shape}")
        return obj
    if obj.dtype != np.dtype(dtype):
        _fail(f"{path}: dtype is {obj.dtype}, expected {np.dtype(dtype)}")
    if shape is not None and obj.shape != tuple(shape):
        _fail(f"{path}: shape is {obj.shape}, expected {tuple(shape)}")
    name = path.rsplit("/", 1)[-1]
    if name in REQUIRED_UNITS:
        if "units" not in obj.attrs:
            _fail(f"{path}: missing the 'units' attribute (expected {REQUIRED_UNITS[name][0]!r})")
        units = attr_text(obj.attrs["units"])
        if units not in REQUIRED_UNITS[name]:
            _fail(f"{path}: units are {units!r}, expected {REQUIRED_UNITS[name][0]!r}")
    return obj


def _check_wavelength(path: str, wavelength: np.ndarray) -> None:
    try:
        check_wavelength_axis(wavelength, name=path)
    except WavelengthMismatchError as exc:
        _fail(str(exc))


def check_contract(f: h5py.File) -> ContractInfo:
    """Raise PairedMapFormatError on the first violation; return what the file holds."""
    if "format" not in f.attrs:
        _fail("/: missing the 'format' attribute (not a twinplume paired map)")
    if attr_text(f.attrs["format"]) != FORMAT:
        _fail(f"/: format is {attr_text(f.attrs['format'])!r}, expected {FORMAT!r}")
    if "format_version" not in f.attrs:
        _fail("/: missing the 'format_version' attribute")
    try:
        version = int(np.asarray(f.attrs["format_version"]).item())
    except (TypeError, ValueError):
        version = None
    if version != FORMAT_VERSION:
        _fail(f"/: unknown format_version {attr_text(f.attrs['format_version'])} "
              f"(this program reads version {FORMAT_VERSION})")
    if "creator" not in f.attrs:
        _fail("/: missing the 'creator' attribute")

    _group(f, "/entry", "NXentry")
    _dataset(f, "/entry/title", "str", None)
    _dataset(f, "/entry/start_time", "str", None)
    if "/entry/end_time" in f:
        _dataset(f, "/entry/end_time", "str", None)
    _group(f, "/entry/sample", "NXsample")
    _dataset(f, "/entry/sample/name", "str", None)
    _group(f, "/entry/instrument", "NXinstrument")

    scan = _group(f, "/entry/scan", "NXcollection")
    order = attr_text(scan.attrs["order"]) if "order" in scan.attrs else None
    if order not in ORDERS:
        _fail(f"/entry/scan: attribute order is {order!r}, expected one of {ORDERS}")
    step = np.asarray(scan.attrs["step_um"], dtype=np.float64) if "step_um" in scan.attrs else None
    if step is None or step.shape != (2,):
        _fail("/entry/scan: attribute step_um must be [dy, dx]")
    acquired = _dataset(f, "/entry/scan/acquired", np.uint8, None)
    if acquired.ndim != 2:
        _fail(f"/entry/scan/acquired: shape is {acquired.shape}, expected [ny, nx]")
    shape = acquired.shape
    _dataset(f, "/entry/scan/shot_id", np.int64, shape)
    _dataset(f, "/entry/scan/timestamp", np.float64, shape)
    _dataset(f, "/entry/scan/position", np.float64, shape + (2,))
    if "/entry/sample/true_position" in f:
        _dataset(f, "/entry/sample/true_position", np.float64, shape + (2,))

    systems = tuple(s for s in SYSTEM_NAMES if s in f["/entry"])
    if not systems:
        _fail("/entry/primary: missing group (a paired map holds 'primary', 'secondary' or both)")
    n_pixels = {}
    for system in systems:
        base = f"/entry/{system}"
        group = _group(f, base, "NXdata")
        if attr_text(group.attrs.get("signal", "")) != "spectra":
            _fail(f"{base}: attribute signal must be 'spectra'")
        wavelength = _dataset(f, f"{base}/wavelength", np.float64, None)
        if wavelength.ndim != 1 or wavelength.shape[0] < 2:
            _fail(f"{base}/wavelength: shape is {wavelength.shape}, expected [n_pixels] with n_pixels >= 2")
        n = wavelength.shape[0]
        _dataset(f, f"{base}/spectra", np.float32, shape + (n,))
        _check_wavelength(f"{base}/wavelength", wavelength[()])
        _dataset(f, f"{base}/x", np.float64, (shape[1],))
        _dataset(f, f"{base}/y", np.float64, (shape[0],))
        n_pixels[system] = n
    # The file keeps [dy, dx]; positions (and so MapLayout.step_um) go (x, y).
    return ContractInfo(systems, (int(shape[0]), int(shape[1])), n_pixels, order,
                        (float(step[1]), float(step[0])))


def check_expectations(path, h5, info: ContractInfo, layout, wavelengths) -> None:
    """Raise PairedMapMismatchError when the file is not the map the caller means to resume."""
    entry = h5["entry"]
    if layout is not None:
        x = entry[info.systems[0]]["x"][()]
        y = entry[info.systems[0]]["y"][()]
        found = MapLayout(info.shape, info.step_um, info.order, (float(x[0]), float(y[0])))
        if not found.same_grid(layout):
            raise PairedMapMismatchError(
                f"{path}: the file's grid is {found.shape[0]}x{found.shape[1]} step {found.step_um} µm "
                f"order {found.order!r} origin {found.origin_um}, expected {layout.shape[0]}x{layout.shape[1]} "
                f"step {layout.step_um} µm order {layout.order!r} origin {layout.origin_um}")
    if wavelengths is not None:
        expected = checked_wavelengths(dict(wavelengths))
        if tuple(expected) != info.systems:
            raise PairedMapMismatchError(f"{path}: the file holds systems {info.systems}, "
                                         f"expected {tuple(expected)}")
        for system, axis in expected.items():
            found = entry[system]["wavelength"][()]
            if found.shape != axis.shape:
                raise PairedMapMismatchError(f"{path}: {system} has {found.size} pixels, expected {axis.size}")
            if not np.allclose(found, axis, rtol=1e-9, atol=1e-9):
                i = int(np.flatnonzero(~np.isclose(found, axis, rtol=1e-9, atol=1e-9))[0])
                raise PairedMapMismatchError(f"{path}: {system} wavelength axis differs from the expected one "
                                             f"(pixel {i}: {found[i]!r} nm in the file, {axis[i]!r} expected)")
