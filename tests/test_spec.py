"""The contracts in spec/ describe what the code does: versions, every path of a paired map,
every error code of the stream. A change to either side without the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from acquisition.store import FORMAT, FORMAT_VERSION, MapLayout, PairedMapWriter, write_transferred
from acquisition.shared.systems import SYSTEM_NAMES
from streaming import protocol

ROOT = Path(__file__).resolve().parents[1]
MAP_SPEC = (ROOT / "spec" / "paired-map-hdf5.md").read_text("utf-8")
STREAM_SPEC = (ROOT / "spec" / "stream-protocol.md").read_text("utf-8")
# paths the spec lists that only some writers make (acquisition, import, a live run)
WRITTEN_ELSEWHERE = {"/entry/instrument/acquisition", "/entry/instrument/source",
                     "/entry/transferred/live_relative_error", "/entry/transferred/live_cosine_distance",
                     # predict writes these only with a model that has a trust score
                     "/entry/transferred/expected_rel_error", "/entry/transferred/untrusted"}


def spec_paths() -> set[str]:
    """HDF5 paths in the paired-map spec's layout blocks, <system> as every system name."""
    paths = set()
    for block in re.findall(r"```\n(.*?)```", MAP_SPEC, re.S):
        for line in block.splitlines():
            match = re.match(r"^(/entry[\w/<>]*)(?:,\s*(\w+))?", line)
            if not match:
                continue
            path, sibling = match.groups()
            names = [path] + ([path.rsplit("/", 1)[0] + "/" + sibling] if sibling else [])
            for name in names:
                if "<other>" in name:
                    continue
                paths.update(name.replace("<system>", s) for s in SYSTEM_NAMES)
    return paths


def file_paths(path: Path) -> set[str]:
    """Every name in the file, hard links included (h5py's visit names each object once)."""
    found = set()

    def walk(group, prefix):
        for name in group:
            found.add(f"{prefix}/{name}")
            if isinstance(group[name], h5py.Group):
                walk(group[name], f"{prefix}/{name}")
    with h5py.File(path, "r") as f:
        walk(f, "")
    return found


def test_versions_and_format_name_match_the_code():
    assert re.search(rf"^# .*version {FORMAT_VERSION}$", MAP_SPEC, re.M)
    assert f'format = "{FORMAT}"' in MAP_SPEC and f"format_version = {FORMAT_VERSION}" in MAP_SPEC
    assert re.search(rf"^# .*version {protocol.VERSION}$", STREAM_SPEC, re.M)
    assert f'"v": {protocol.VERSION}' in STREAM_SPEC


def test_a_map_holds_exactly_the_paths_the_spec_lists(tmp_path):
    layout = MapLayout((3, 4), (40.0, 40.0), "snake", (100.0, 200.0))
    wavelengths = {"primary": np.linspace(245.0, 407.0, 30), "secondary": np.linspace(260.0, 370.0, 20)}
    path = tmp_path / "map.h5"
    truth = {"phase_map": np.zeros(layout.shape, np.int16), "phase_names": ["quartz"], "attrs": {"seed": 1},
             "true_position": None}
    with PairedMapWriter.create(path, layout, wavelengths, instrument={"laser": {"model": "CFR"}},
                                sample_truth=truth) as writer:
        for iy, ix in writer.missing():
            writer.write_spot(iy, ix, {s: np.ones(a.size, np.float32) for s, a in wavelengths.items()},
                              int(iy * 4 + ix), 1.7e9, (0.0, 0.0))
        writer.finish()
    write_transferred(path, [0], [0], np.ones((1, 30), np.float32), [2], [1.0], model_id="abc")

    listed, written = spec_paths(), file_paths(path)
    assert written - listed == set(), "written but not in spec/paired-map-hdf5.md"
    assert listed - written - WRITTEN_ELSEWHERE == set(), "in spec/paired-map-hdf5.md but not written"


def test_every_stream_error_code_is_in_the_spec_and_no_other():
    table = re.search(r"\| code \| the input message \|\n\|[-| ]+\|\n((?:\|.*\|\n)+)", STREAM_SPEC)
    assert table, "spec/stream-protocol.md has no error code table"
    in_spec = set(re.findall(r"^\| ([a-z-]+) \|", table.group(1), re.M))
    raised = set()
    # the worker's answers to input messages (streaming/results.py decodes the worker's own output)
    for source in (ROOT / "streaming" / "protocol.py", ROOT / "streaming" / "worker.py"):
        raised |= set(re.findall(r'(?:MessageError\(|fail\(|_message_error\(message,)\s*"([a-z-]+)"',
                                 source.read_text("utf-8")))
    assert raised, "found no error codes in streaming/"
    assert in_spec == raised


@pytest.mark.parametrize("key", ["model_id", "n_primary", "n_secondary", "primary_wavelengths",
                                 "secondary_wavelengths", "primary_baseline_windows",
                                 "secondary_baseline_windows", "secondary_mean_spectrum", "provenance", "trust_threshold", "trust_output",
                                 "trust_calibration"])
def test_the_model_file_keys_are_in_the_spec(key):
    assert f"| twinplume.{key} |" in STREAM_SPEC
