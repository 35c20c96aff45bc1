"""Writing a map and reading it back through the public store API."""

from __future__ import annotations

import numpy as np
import pytest

from acquisition.store import (MapLayout, PairedMapError, PairedMapReader, PairedMapWriter, validate,
                               write_transferred, write_transferred_trust)

from .mapdata import N_PRIMARY, WAVELENGTHS, layout, shot_of, spot_spectra, write_spot


def test_layout_visit_order_snake_and_raster():
    snake = MapLayout((3, 4), (20.0, 40.0), "snake", (5.0, 7.0))
    assert snake.visit_order().tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [1, 3], [1, 2], [1, 1], [1, 0],
                                            [2, 0], [2, 1], [2, 2], [2, 3]]
    raster = MapLayout((2, 3), (20.0, 40.0), "raster")
    assert raster.visit_order().tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    np.testing.assert_allclose(snake.x_um, [5.0, 25.0, 45.0, 65.0])    # step (dx, dy), like positions
    np.testing.assert_allclose(snake.y_um, [7.0, 47.0, 87.0])
    with pytest.raises(ValueError, match="order"):
        MapLayout((2, 2), (1.0, 1.0), "spiral")
    with pytest.raises(ValueError, match="step_um"):
        MapLayout((2, 2), (0.0, 1.0))


def test_a_non_square_step_keeps_its_axes_through_the_file(tmp_path):
    import h5py

    path = tmp_path / "map.h5"
    lay = MapLayout((2, 3), (10.0, 25.0), "snake", (100.0, 200.0))
    PairedMapWriter.create(path, lay, WAVELENGTHS).close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/scan"].attrs["step_um"], [25.0, 10.0])   # [dy, dx] in the file
        np.testing.assert_allclose(f["entry/primary/x"][()], [100.0, 110.0, 120.0])
        np.testing.assert_allclose(f["entry/primary/y"][()], [200.0, 225.0])
    with PairedMapReader(path) as reader:
        assert reader.layout == lay
    PairedMapWriter.resume(path, layout=lay).close()


def test_round_trip_of_a_partial_map(tmp_path):
    path = tmp_path / "map.h5"
    lay = layout(6, 7)
    written = [tuple(s) for s in lay.visit_order()[:30]]
    with PairedMapWriter.create(path, lay, WAVELENGTHS, title="round trip", sample_name="granite",
                                instrument={"primary": {"model": "CT-1", "gate_delay_s": 1e-6},
                                            "laser": {"energy_mJ": 5.0}},
                                batch_spots=8) as writer:
        assert writer.systems == ("primary", "secondary")
        for iy, ix in written:
            write_spot(writer, iy, ix)
        assert writer.n_acquired == 30
        assert [tuple(s) for s in writer.missing()] == [tuple(s) for s in lay.visit_order()[30:]]

    validate(path)
    with PairedMapReader(path) as reader:
        assert reader.systems == ("primary", "secondary")
        assert reader.shape == (6, 7)
        assert reader.layout == lay
        assert reader.title == "round trip"
        assert reader.end_time is None
        assert reader.n_acquired == 30
        assert reader.instrument["primary"]["model"] == "CT-1"
        assert reader.instrument["laser"]["energy_mJ"] == 5.0
        assert reader.attrs["creator"].startswith("twinplume ")
        np.testing.assert_array_equal(reader.wavelengths("secondary"), WAVELENGTHS["secondary"])
        expected_mask = np.zeros((6, 7), bool)
        for iy, ix in written:
            expected_mask[iy, ix] = True
        np.testing.assert_array_equal(reader.acquired, expected_mask)
        for iy, ix in written:
            got = reader.spot(iy, ix)
            for system, spectrum in spot_spectra(iy, ix).items():
                np.testing.assert_array_equal(got[system], spectrum)
        not_written = tuple(lay.visit_order()[40])
        with pytest.raises(PairedMapError, match="not acquired"):
            reader.spot(*not_written)
        with pytest.raises(IndexError):
            reader.spot(6, 0)
        assert reader.scan_values("shot_id")[written[3]] == shot_of(*written[3], 7)

        chunks = list(reader.iter_chunks(chunk_spots=10))
        assert sum(len(c) for c in chunks) == 30
        assert max(len(c) for c in chunks) <= 10
        for chunk in chunks:
            assert set(chunk.spectra) == {"primary", "secondary"}
            for iy, ix, p, s in zip(chunk.iy, chunk.ix, chunk.spectra["primary"], chunk.spectra["secondary"]):
                assert expected_mask[iy, ix]
                np.testing.assert_array_equal(p, spot_spectra(iy, ix)["primary"])
                np.testing.assert_array_equal(s, spot_spectra(iy, ix)["secondary"])
        only_secondary = reader.read_all(systems=["secondary"], max_spots=12)
        assert list(only_secondary.spectra) == ["secondary"] and len(only_secondary) == 12
        everything = reader.read_all()
        order = np.lexsort((everything.ix, everything.iy))
        assert np.all(order == np.arange(30)), "read_all is in row-major order"
        with pytest.raises(KeyError, match="no system 'tertiary'"):
            reader.wavelengths("tertiary")


def test_wide_rows_are_read_in_column_blocks(tmp_path):
    path = tmp_path / "wide.h5"
    lay = MapLayout((2, 50), (10.0, 10.0), "raster")
    with PairedMapWriter.create(path, lay, WAVELENGTHS) as writer:
        for iy, ix in lay.visit_order():
            if (iy + ix) % 3:
                write_spot(writer, iy, ix)
    with PairedMapReader(path) as reader:
        chunks = list(reader.iter_chunks(systems="primary", chunk_spots=7))
        assert all(len(c) <= 7 for c in chunks)
        got = sorted((int(y), int(x)) for c in chunks for y, x in zip(c.iy, c.ix))
        assert got == sorted((y, x) for y in range(2) for x in range(50) if (y + x) % 3)
        for c in chunks:
            for y, x, spectrum in zip(c.iy, c.ix, c.spectra["primary"]):
                np.testing.assert_array_equal(spectrum, spot_spectra(y, x)["primary"])


def test_finish_writes_end_time_and_removes_the_journal(tmp_path):
    path = tmp_path / "done.h5"
    writer = PairedMapWriter.create(path, layout(2, 3), WAVELENGTHS)
    for iy, ix in writer.missing():
        write_spot(writer, iy, ix)
    writer.finish()
    assert not (tmp_path / "done.h5.journal").exists()
    with PairedMapReader(path) as reader:
        assert reader.end_time is not None and reader.n_acquired == 6
    with pytest.raises(PairedMapError, match="finished"):
        PairedMapWriter.resume(path)


def test_rewriting_a_spot_keeps_the_last_pair(tmp_path):
    path = tmp_path / "rewrite.h5"
    with PairedMapWriter.create(path, layout(2, 3), WAVELENGTHS, batch_spots=4) as writer:
        write_spot(writer, 0, 0)
        writer.write_spot(0, 0, spot_spectra(1, 2), 77, 1.0, (0.0, 0.0))
        assert writer.n_acquired == 1
    with PairedMapReader(path) as reader:
        np.testing.assert_array_equal(reader.spot(0, 0)["primary"], spot_spectra(1, 2)["primary"])
        assert reader.scan_values("shot_id")[0, 0] == 77


def test_single_system_map(tmp_path):
    path = tmp_path / "one.h5"
    with PairedMapWriter.create(path, layout(2, 2), {"secondary": WAVELENGTHS["secondary"]}) as writer:
        writer.write_spot(1, 1, {"secondary": spot_spectra(1, 1)["secondary"]}, 5, 2.0, (1.0, 2.0))
        with pytest.raises(ValueError, match="no system 'primary'"):
            writer.write_spot(0, 0, spot_spectra(0, 0), 6, 2.0, (1.0, 2.0))
    with PairedMapReader(path) as reader:
        assert reader.systems == ("secondary",)
        np.testing.assert_array_equal(reader.read_all().spectra["secondary"][0], spot_spectra(1, 1)["secondary"])


def test_sample_truth_and_derived_results(tmp_path):
    import h5py

    path = tmp_path / "derived.h5"
    lay = layout(3, 4)
    phase_map = np.arange(12, dtype=np.int16).reshape(3, 4) % 3
    truth = {"phase_map": phase_map, "phase_names": ["quartz", "albite", "muscovite"], "attrs": {"seed": 7}}
    with PairedMapWriter.create(path, lay, WAVELENGTHS, sample_truth=truth,
                                derived={"transferred": N_PRIMARY}) as writer:
        for iy, ix in writer.missing():
            write_spot(writer, iy, ix)
        writer.write_derived("transferred", [0, 0], [1, 2], spectra=np.ones((2, N_PRIMARY)), label=[4, 5],
                             novelty=[0.1, 0.2])
        with pytest.raises(PairedMapError, match="no derived group"):
            writer.write_derived("other", 0, 0, label=1)
    with PairedMapReader(path) as reader:
        got = reader.sample_truth
        np.testing.assert_array_equal(got["phase_map"], phase_map)
        assert got["phase_names"] == ["quartz", "albite", "muscovite"] and got["attrs"]["seed"] == 7
        assert reader.systems == ("primary", "secondary")
    write_transferred(path, [2], [3], np.full((1, N_PRIMARY), 3.0), [9], model_id="abc123")
    with h5py.File(path, "r") as f:
        group = f["entry/transferred"]
        assert group.attrs["model_id"] == "abc123"
        assert group["label"][0, 1] == 4 and group["label"][0, 2] == 5 and group["label"][2, 3] == 9
        assert group["label"][1, 1] == -1
        np.testing.assert_array_equal(group["spectra"][2, 3], np.full(N_PRIMARY, 3.0, np.float32))
        assert np.isnan(group["spectra"][1, 1]).all()
        np.testing.assert_allclose(group["novelty"][0, 1:3], [0.1, 0.2], rtol=1e-6)
        np.testing.assert_array_equal(group["wavelength"][()], WAVELENGTHS["primary"])


def test_write_transferred_creates_the_group_after_the_fact(tmp_path):
    import h5py

    path = tmp_path / "later.h5"
    with PairedMapWriter.create(path, layout(2, 2), WAVELENGTHS) as writer:
        write_spot(writer, 0, 0)
    write_transferred(path, 0, 0, np.zeros((1, N_PRIMARY)), [2], novelty=[0.5], model_id="m1")
    validate(path)
    with h5py.File(path, "r") as f:
        assert f["entry/transferred"].attrs["NX_class"] == "NXdata"
        assert f["entry/transferred/label"][0, 0] == 2
    with pytest.raises(PairedMapError, match="pixel"):
        write_transferred(path, 0, 0, np.zeros((1, 5)), [2])


def test_trust_of_transferred_spots_is_written_and_cleared_spot_by_spot(tmp_path):
    import h5py

    path = tmp_path / "trust.h5"
    with PairedMapWriter.create(path, layout(2, 3), WAVELENGTHS) as writer:
        for iy in range(2):
            for ix in range(3):
                write_spot(writer, iy, ix)
    write_transferred(path, [0, 0, 1], [0, 1, 2], np.zeros((3, N_PRIMARY)), [1, 1, 1], model_id="m1")
    with h5py.File(path, "r") as f:                     # no trust in the map yet: none made up
        assert "expected_rel_error" not in f["entry/transferred"]
    write_transferred_trust(path, [0, 0, 1], [0, 1, 2], [0.05, 0.3, np.nan], threshold=0.2)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["entry/transferred/untrusted"][()], [[0, 1, -1], [-1, -1, -1]])
    # spot (0, 1) transferred anew, by a model whose trust is not recorded
    write_transferred(path, [0], [1], np.ones((1, N_PRIMARY)), [2], model_id="m2")
    validate(path)
    with h5py.File(path, "r") as f:
        group = f["entry/transferred"]
        np.testing.assert_array_equal(group["untrusted"][()], [[0, -1, -1], [-1, -1, -1]])
        assert group["expected_rel_error"][0, 0] == np.float32(0.05)
        assert np.isnan(group["expected_rel_error"][()].reshape(-1)[1:]).all()
        assert group["untrusted"].attrs["threshold"] == np.float32(0.2)
    with pytest.raises(IndexError, match="outside"):
        write_transferred_trust(path, [2], [0], [0.1], threshold=0.2)


def test_write_spots_in_blocks_with_a_repeated_spot(tmp_path):
    path = tmp_path / "blocks.h5"
    lay = layout(3, 20)  # rows wider than a chunk: whole chunks go in as they are
    order = lay.visit_order()
    with PairedMapWriter.create(path, lay, WAVELENGTHS, batch_spots=5) as writer:
        write_spot(writer, *order[0])  # journalled first, committed before the block
        block = np.concatenate([order[1:50], order[[7]]])  # (spot 7 again at the end: it wins)
        spectra = {s: np.stack([spot_spectra(iy, ix)[s] for iy, ix in block]) for s in WAVELENGTHS}
        spectra["primary"][-1] += 0.25
        writer.write_spots(block[:, 0], block[:, 1], spectra, [shot_of(iy, ix, 20) for iy, ix in block],
                           1.0, np.zeros((len(block), 2)))
        assert writer.n_acquired == 50
        assert [tuple(s) for s in writer.missing()] == [tuple(s) for s in order[50:]]
    with PairedMapReader(path) as reader:
        assert reader.n_acquired == 50
        for iy, ix in order[:50]:
            got = reader.spot(iy, ix)
            shift = 0.25 if (iy, ix) == tuple(order[7]) else 0.0
            np.testing.assert_array_equal(got["primary"], spot_spectra(iy, ix)["primary"] + np.float32(shift))
            np.testing.assert_array_equal(got["secondary"], spot_spectra(iy, ix)["secondary"])


def test_writing_zero_derived_spots_creates_the_group_and_writes_nothing(tmp_path):
    import h5py

    path = tmp_path / "empty-derived.h5"
    with PairedMapWriter.create(path, layout(2, 3), WAVELENGTHS, derived={"live": N_PRIMARY}) as writer:
        write_spot(writer, 0, 0)
        writer.write_derived("live", [], [], spectra=np.zeros((0, N_PRIMARY)), label=[], novelty=[])
        with pytest.raises(ValueError, match="expected"):
            writer.write_derived("live", [], [], spectra=np.zeros((0, N_PRIMARY + 1)))
    write_transferred(path, [], [], np.zeros((0, N_PRIMARY), np.float32), [], model_id="m0")
    validate(path)
    with h5py.File(path, "r") as f:
        for name in ("live", "transferred"):
            group = f[f"entry/{name}"]
            assert group["spectra"].shape == (2, 3, N_PRIMARY) and np.isnan(group["spectra"][()]).all()
            assert (group["label"][()] == -1).all()
        assert f["entry/transferred"].attrs["model_id"] == "m0"
    write_transferred(path, [1], [2], np.ones((1, N_PRIMARY)), [7], model_id="m1")
    write_transferred(path, [], [], np.zeros((0, N_PRIMARY)), [], model_id="m2")
    with h5py.File(path, "r") as f:
        group = f["entry/transferred"]
        assert group.attrs["model_id"] == "m1"      # an empty write does not relabel earlier results
        assert group["label"][1, 2] == 7 and (group["label"][()] == 7).sum() == 1
    with pytest.raises(PairedMapError, match="pixel"):
        write_transferred(path, [], [], np.zeros((0, 5)), [])
