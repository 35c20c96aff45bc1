"""Derived results written after the fact: /entry/transferred of a finished (or stopped) map."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import check_contract
from .h5files import open_for_update
from .journal import writer_active
from .layout import MapLayout, PairedMapError, PairedMapFormatError
from .skeleton import create_derived_group
from .runs import write_derived_values

TRANSFERRED = "transferred"


def write_transferred(path, iy, ix, spectra, label, novelty=None, *, model_id: str = "", model: str = "",
                      wavelengths=None) -> None:
    """Store transferred primary spectra (float32 [k, n_primary]) and labels for spots (iy, ix).

    Creates /entry/transferred on first use; `model_id` and `model` (the transfer model's name,
    written where given) label the results. The spots' expected_rel_error and untrusted flag, where
    the map holds them, are cleared (NaN, -1) until write_transferred_trust writes the new ones. `wavelengths` is needed only when
    the map has no primary system whose axis the spectra share. Zero spots (empty
    iy/ix, spectra [0, n_primary]) write nothing but still create the group.
    """
    path = Path(path)
    if writer_active(path):
        raise PairedMapError(f"{path}: a writer has the map open; use its write_derived() instead")
    spectra = np.asarray(spectra, dtype=np.float32)
    if spectra.ndim != 2:
        raise ValueError(f"spectra must be [k, n_pixels], got shape {spectra.shape}")
    with open_for_update(path, rdcc_nbytes=32 * 1024 * 1024) as f:
        try:
            info = check_contract(f)
        except PairedMapFormatError as exc:
            raise PairedMapFormatError(f"{path}: {exc}") from None
        group = f["entry"].get(TRANSFERRED)
        created = group is None
        if created:
            first = f["entry"][info.systems[0]]
            layout = MapLayout(info.shape, info.step_um, info.order,
                               (float(first["x"][0]), float(first["y"][0])))
            spec = spectra.shape[1] if wavelengths is None else wavelengths
            try:
                group = create_derived_group(f, TRANSFERRED, layout, spec)
            except ValueError as exc:
                raise PairedMapError(f"{path}: {exc}") from None
        elif group["spectra"].shape[2] != spectra.shape[1]:
            raise PairedMapError(f"{path}: /entry/{TRANSFERRED} holds {group['spectra'].shape[2]}-pixel "
                                 f"spectra, got {spectra.shape[1]}")
        write_derived_values(group, iy, ix, info.shape, spectra=spectra, label=label, novelty=novelty)
        if "expected_rel_error" in group and spectra.shape[0]:
            # an earlier result's trust does not describe the spectra written now:
            # write_transferred_trust gives them theirs, if they have one
            spots_y, spots_x = np.atleast_1d(iy), np.atleast_1d(ix)
            _set_trust(group, spots_y, spots_x, np.full(spots_y.shape, np.nan, np.float32),
                       np.full(spots_y.shape, -1, np.int8))
        # An empty write must not relabel results that another model wrote earlier.
        if created or spectra.shape[0]:
            group.attrs["model_id"] = str(model_id)
            if model:
                group.attrs["model"] = str(model)
            elif "model" in group.attrs:
                del group.attrs["model"]


def remove_transferred_trust(path) -> None:
    """Remove /entry/transferred/expected_rel_error and /entry/transferred/untrusted where present:
    after results of a model without a trust score they would describe other spectra."""
    path = Path(path)
    if writer_active(path):
        raise PairedMapError(f"{path}: a writer has the map open")
    with open_for_update(path, rdcc_nbytes=1024 * 1024) as f:
        group = f["entry"].get(TRANSFERRED)
        for name in ("expected_rel_error", "untrusted"):
            if group is not None and name in group:
                del group[name]


def finite_threshold(value) -> float | None:
    """A "do not trust" threshold as given by a model or a worker's reply (any type): the float,
    or None where there is none (missing, not a number, not finite)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def write_transferred_trust(path, iy, ix, expected_rel_error, threshold: float) -> None:
    """The trust of transferred spots (iy, ix): /entry/transferred/expected_rel_error float32
    [ny, nx] (NaN: not transferred, or by a model without a trust score) and
    /entry/transferred/untrusted int8 [ny, nx] (1: expected_rel_error above `threshold`,
    0: not above, -1: no expected_rel_error), with the threshold as its attribute. Call after
    write_transferred for the same spots; a NaN value clears a spot's trust."""
    path = Path(path)
    if writer_active(path):
        raise PairedMapError(f"{path}: a writer has the map open")
    values = np.atleast_1d(np.asarray(expected_rel_error, dtype=np.float32))
    iy = np.atleast_1d(np.asarray(iy, dtype=np.int64))
    ix = np.atleast_1d(np.asarray(ix, dtype=np.int64))
    if not (iy.shape == ix.shape == values.shape):
        raise ValueError(f"iy, ix and expected_rel_error must have one length, got {iy.shape}, {ix.shape}, "
                         f"{values.shape}")
    with open_for_update(path, rdcc_nbytes=4 * 1024 * 1024) as f:
        group = f["entry"].get(TRANSFERRED)
        if group is None:
            raise PairedMapError(f"{path}: no /entry/{TRANSFERRED} to add the trust of transferred spots to")
        shape = group["label"].shape
        if "expected_rel_error" not in group:
            error = group.create_dataset("expected_rel_error", shape=shape, dtype=np.float32, chunks=(1, shape[1]),
                                         fillvalue=np.float32(np.nan))
            error.attrs["units"] = "1"
            flag = group.create_dataset("untrusted", shape=shape, dtype=np.int8, chunks=(1, shape[1]),
                                        fillvalue=np.int8(-1))
            flag.attrs["units"] = "1"
        group["untrusted"].attrs["threshold"] = np.float32(threshold)
        flags = np.where(np.isnan(values), -1, values > np.float32(threshold)).astype(np.int8)
        _set_trust(group, iy, ix, values, flags)


def _set_trust(group, iy, ix, values, flags) -> None:
    if not iy.size:
        return
    shape = group["label"].shape
    if iy.min() < 0 or ix.min() < 0 or iy.max() >= shape[0] or ix.max() >= shape[1]:
        raise IndexError(f"trust of spots outside the {shape[0]}x{shape[1]} map")
    error, flag = group["expected_rel_error"], group["untrusted"]
    full_error, full_flag = error[...], flag[...]
    full_error[iy, ix] = values
    full_flag[iy, ix] = flags
    error[...] = full_error
    flag[...] = full_flag
