"""Reading paired maps for training: batches, streaming, and clear errors on bad maps."""

import h5py
import numpy as np
import pytest

from acquisition.shared.spectral import baseline_correct
from acquisition.store import MapLayout, PairedMapReader, PairedMapWriter
from tests.transfer.conftest import tiny_config
from transfer.data import (PairedBatches, TransferDataError, check_axis, fit_preprocessors, inspect_map,
                           sample_preprocessed)
from transfer.pipeline import train_model
from sim.scene import PairedScene


def write_map(path, wavelengths, spectra, shape=(4, 4)):
    layout = MapLayout(shape=shape, step_um=(150.0, 150.0))
    order = layout.visit_order()
    k = len(order)
    with PairedMapWriter.create(path, layout, wavelengths) as writer:
        writer.write_spots(order[:, 0], order[:, 1], {s: v[:k] for s, v in spectra.items()}, np.arange(k),
                           np.full(k, 1.7e9), np.zeros((k, 2)))
        writer.finish()
    return path


@pytest.fixture(scope="module")
def scene_spectra():
    scene = PairedScene(seed=0)
    x = np.arange(16) * 150.0
    shots = scene.shots(x, np.zeros(16), rng=np.random.default_rng(0))
    return {s: scene.wavelengths(s) for s in shots}, shots


@pytest.fixture(scope="module")
def preprocessors(sim_maps):
    info = inspect_map(sim_maps["train"])
    return fit_preprocessors([sim_maps["train"]], info.wavelengths, chunk_spots=64, progress=False,
                             scaling="global")


def rows(batches, epoch):
    parts = list(batches.epoch(epoch))
    return parts, np.concatenate([p["primary"] for p in parts])


def test_streamed_and_in_memory_batches_hold_the_same_spectra(sim_maps, preprocessors):
    in_memory = PairedBatches([sim_maps["train"]], preprocessors, 32, seed=1, chunk_spots=40)
    streamed = PairedBatches([sim_maps["train"]], preprocessors, 32, seed=1, chunk_spots=40, buffer_chunks=2,
                             in_memory_max_bytes=0)
    assert in_memory.in_memory and not streamed.in_memory
    memory_parts, memory_rows = rows(in_memory, 0)
    stream_parts, stream_rows = rows(streamed, 0)
    assert len(memory_rows) == len(stream_rows) == 256
    assert all(len(p["primary"]) == 32 for p in stream_parts)
    # Same spectra, in another order: compare as sorted row sums.
    np.testing.assert_allclose(np.sort(memory_rows.sum(1)), np.sort(stream_rows.sum(1)), rtol=1e-5)
    assert all(set(p) == {"primary", "secondary"} for p in memory_parts)


def test_order_depends_only_on_seed_and_epoch(sim_maps, preprocessors):
    make = lambda seed: PairedBatches([sim_maps["train"]], preprocessors, 32, seed=seed,  # noqa: E731
                                      chunk_spots=40, in_memory_max_bytes=0)
    _, a0 = rows(make(4), 0)
    _, b0 = rows(make(4), 0)
    _, a1 = rows(make(4), 1)
    _, c0 = rows(make(5), 0)
    np.testing.assert_array_equal(a0, b0)
    assert not np.array_equal(a0, a1) and not np.array_equal(a0, c0)


def test_sample_is_seeded_and_preprocessed(sim_maps, preprocessors):
    a = sample_preprocessed([sim_maps["train"]], preprocessors, 50, seed=3, chunk_spots=64)
    b = sample_preprocessed([sim_maps["train"]], preprocessors, 50, seed=3, chunk_spots=64)
    assert a["secondary"].shape == (50, 3872)
    np.testing.assert_array_equal(a["primary"], b["primary"])
    assert abs(float(a["primary"].mean())) < 0.5       # scaled with the training statistics


def test_wrong_pixel_count_is_named(sim_maps, scene_spectra, tmp_path):
    wavelengths, shots = scene_spectra
    short = write_map(tmp_path / "short.h5", {"primary": wavelengths["primary"],
                                              "secondary": wavelengths["secondary"][:3000]},
                      {"primary": shots["primary"], "secondary": shots["secondary"][:, :3000]})
    with pytest.raises(TransferDataError, match="secondary spectra have 3000 pixels, the training map expects 3872"):
        train_model(sim_maps["train"], short, tmp_path / "model", config=tiny_config(), progress=False)
    assert not (tmp_path / "model").exists()


def test_mismatched_wavelength_axis_is_named(sim_maps, scene_spectra, tmp_path):
    wavelengths, shots = scene_spectra
    shifted = write_map(tmp_path / "shifted.h5", {"primary": wavelengths["primary"] + 1.0,
                                                  "secondary": wavelengths["secondary"]}, shots)
    with pytest.raises(TransferDataError, match="primary wavelength axis does not match the training map"):
        train_model(sim_maps["train"], shifted, tmp_path / "model", config=tiny_config(), progress=False)
    info = inspect_map(shifted)
    check_axis(shifted, "secondary", info.wavelengths["secondary"], wavelengths["secondary"])   # this one is fine


def test_nan_in_an_acquired_spectrum_names_the_spot(scene_spectra, tmp_path):
    wavelengths, shots = scene_spectra
    path = write_map(tmp_path / "nan.h5", wavelengths, shots)
    with h5py.File(path, "r+") as f:     # as if another program had written the file
        f["entry/secondary/spectra"][2, 3, 100] = np.nan
    val = write_map(tmp_path / "val.h5", wavelengths, shots)
    with pytest.raises(TransferDataError, match=r"secondary spectrum at spot \(iy=2, ix=3\) holds NaN"):
        train_model(path, val, tmp_path / "model", config=tiny_config(), progress=False)
    # The failed start leaves nothing behind, so a corrected file trains without --resume.
    assert not (tmp_path / "model").exists()


def test_map_missing_a_system_is_named(scene_spectra, tmp_path):
    wavelengths, shots = scene_spectra
    only_primary = write_map(tmp_path / "primary.h5", {"primary": wavelengths["primary"]},
                             {"primary": shots["primary"]})
    with pytest.raises(TransferDataError, match="has no 'secondary' system"):
        inspect_map(only_primary)


# ------------------------------------------------------------------ a spectrometer recalibrated on the test day

def test_a_test_map_calibrated_on_its_day_is_resampled_onto_the_model_axes(trained_bundle, tmp_path):
    from dataclasses import replace

    from sim.generate import generate_map, scene_of, simulate_again, simulation_attributes
    from transfer.data import iter_raw_chunks
    from transfer.predict import evaluate_map, predict_map

    settings = dict(shape=(6, 6), step_um=(150.0, 150.0), day=1, origin_um=(2500.0, 2500.0), progress=False,
                    day_change="severe")
    calibrated = generate_map(tmp_path / "calibrated.h5", calibration="daily", **settings)
    factory = generate_map(tmp_path / "factory.h5", **settings)      # the same light, the factory axes
    axes = {"primary": trained_bundle.primary_wavelengths,
            "secondary": trained_bundle.secondary().wavelengths}
    info = inspect_map(calibrated)
    assert check_axis(calibrated, "secondary", info.wavelengths["secondary"], axes["secondary"]) is True

    # what the reader hands the model is the shots as the model's day saw their wavelengths
    with PairedMapReader(calibrated) as reader:
        layout, attrs = reader.layout, simulation_attributes(reader.sample_truth)
    scene = scene_of(attrs)
    for system in axes:
        scene = scene.with_drift(system, replace(scene.conditions.drift[system], shift_px=0.0, stretch_px=0.0))
    truth = simulate_again(layout, attrs, scene)
    read = {s: np.zeros_like(v) for s, v in truth.items()}
    as_stored = {s: np.zeros_like(v) for s, v in truth.items()}
    for _, iy, ix, spectra in iter_raw_chunks([calibrated], list(axes), 64, axes=axes):
        for s in axes:
            read[s][iy, ix] = spectra[s]
    for _, iy, ix, spectra in iter_raw_chunks([calibrated], list(axes), 64):
        for s in axes:
            as_stored[s][iy, ix] = spectra[s]
    for s in axes:
        def error(counts):
            return np.linalg.norm(baseline_correct(counts.reshape(36, -1)) - baseline_correct(truth[s].reshape(36, -1)))
        assert error(read[s]) < 0.3 * error(as_stored[s]), s

    # evaluate and predict take it; DS transfers the calibrated map better than the same light on factory axes
    reports = {name: evaluate_map(trained_bundle, path, tmp_path / name, progress=False, align=False)
               for name, path in (("calibrated", calibrated), ("factory", factory))}
    rse = {name: report["models"]["ds"]["rse"] for name, report in reports.items()}
    assert rse["calibrated"] < 0.8 * rse["factory"], rse
    # the report says where the lines sit against the model's: on the factory axes where the day's
    # drift put them (a shift of +d px moves a line d px to the blue), on the calibrated ones back home
    for system in axes:
        drift_px = scene_of(attrs).conditions.drift[system].shift_px
        assert abs(drift_px) > 0.5
        assert reports["factory"]["apparent_shift_px"][system] == pytest.approx(-drift_px, abs=0.15), system
        assert abs(reports["calibrated"]["apparent_shift_px"][system]) < 0.1, system
    assert "was not recalibrated" in reports["factory"]["notes"]
    assert "was not recalibrated" not in reports["calibrated"]["notes"]
    assert abs(predict_map(trained_bundle, factory, progress=False, align=False).secondary_shift_px) > 0.5
    done = predict_map(trained_bundle, calibrated, progress=False)
    assert abs(done.secondary_shift_px) < 0.1
    with h5py.File(calibrated, "r") as f:
        np.testing.assert_array_equal(f["entry/transferred/wavelength"][()], axes["primary"])
        assert f["entry/transferred/spectra"].shape == (6, 6, axes["primary"].size)


# ------------------------------------------------------------------ a spectrometer not recalibrated: lines aligned

def test_a_drifted_map_on_factory_axes_is_aligned_from_its_own_lines(trained_bundle, tmp_path):
    from dataclasses import replace

    from sim.generate import generate_map, scene_of, simulate_again, simulation_attributes
    from transfer.data import iter_raw_chunks, line_offsets
    from transfer.predict import evaluate_map, predict_map

    factory = generate_map(tmp_path / "factory.h5", shape=(8, 8), step_um=(150.0, 150.0), day=1,
                           origin_um=(2500.0, 2500.0), progress=False, day_change="severe")
    secondary = trained_bundle.secondary()
    references = {"primary": trained_bundle.primary_preprocess, "secondary": secondary.preprocess}
    axes = {"primary": trained_bundle.primary_wavelengths, "secondary": secondary.wavelengths}
    with PairedMapReader(factory) as reader:
        layout, attrs = reader.layout, simulation_attributes(reader.sample_truth)
    drifted = scene_of(attrs)

    # the offsets found are the simulator's drift: a drift of +d px moves a line d px to the blue
    offsets = line_offsets(factory, references)
    for system, offset in offsets.items():
        drift = drifted.conditions.drift[system]
        n = axes[system].size
        u = (np.arange(n) - 0.5 * (n - 1)) / (0.5 * n)
        assert abs(drift.shift_px) > 0.5
        np.testing.assert_allclose(offset.at(np.arange(n)), -(drift.shift_px + drift.stretch_px * u), atol=0.1)
        assert offset.worth_aligning

    # what the reader hands the model is close to the same shots without the drift
    undrifted = drifted
    for system in axes:
        undrifted = undrifted.with_drift(system, replace(drifted.conditions.drift[system], shift_px=0.0,
                                                         stretch_px=0.0))
    truth = simulate_again(layout, attrs, undrifted)
    for align in (references, None):
        read = {s: np.zeros_like(v) for s, v in truth.items()}
        for _, iy, ix, spectra in iter_raw_chunks([factory], list(axes), 64, axes=axes, align=align):
            for s in axes:
                read[s][iy, ix] = spectra[s]
        if align:
            aligned = read
    for s in axes:
        def error(counts):
            return np.linalg.norm(baseline_correct(counts.reshape(64, -1)) - baseline_correct(truth[s].reshape(64, -1)))
        assert error(aligned[s]) < 0.3 * error(read[s]), s

    # evaluate aligns by default and says so; DS transfers the aligned map better than the map as stored
    reports = {align: evaluate_map(trained_bundle, factory, tmp_path / str(align), progress=False, align=align)
               for align in (True, False)}
    assert reports[True]["models"]["ds"]["rse"] < 0.8 * reports[False]["models"]["ds"]["rse"]
    assert all(reports[True]["line_alignment"][s]["aligned"] for s in axes)
    assert not any(reports[False]["line_alignment"][s]["aligned"] for s in axes)
    assert "aligned from the map's own lines" in reports[True]["notes"]
    assert predict_map(trained_bundle, factory, progress=False).secondary_aligned
    assert not predict_map(trained_bundle, factory, progress=False, align=False).secondary_aligned


def test_a_map_of_the_training_day_is_read_as_stored(trained_bundle, sim_maps):
    from transfer.data import axis_resamplers, line_offsets

    secondary = trained_bundle.secondary()
    references = {"primary": trained_bundle.primary_preprocess, "secondary": secondary.preprocess}
    for path in (sim_maps["train"], sim_maps["val"]):
        offsets = line_offsets(path, references)
        assert not any(offset.worth_aligning for offset in offsets.values()), offsets
        axes = {"primary": trained_bundle.primary_wavelengths, "secondary": secondary.wavelengths}
        assert axis_resamplers(path, inspect_map(path).wavelengths, axes, references) == {}
