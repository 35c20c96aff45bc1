"""A map's shots simulated again, through the same or another day's spectrometers.

The day-change floor (bench/day_change_floor.py) rests on two promises: a chunk of a map
simulated again gives the stored spectra bit for bit, and a scene with one spectrometer's
drift replaced sees the same plasmas with the same noise through the other one.
"""

import numpy as np
import pytest

from acquisition.store import PairedMapReader
from sim.generate import generate_map, scene_of, simulate_again, simulated_again, simulation_attributes
from sim.scene import DayConditions, PairedScene
from tests.sim.conftest import measure_line


def _stored(path):
    with PairedMapReader(path) as reader:
        layout, attrs = reader.layout, simulation_attributes(reader.sample_truth)
        spectra = {s: np.zeros((*layout.shape, n), np.float32) for s, n in (("primary", 4062), ("secondary", 3872))}
        for chunk in reader.iter_chunks(systems=list(spectra), chunk_spots=1000):
            for system, grid in spectra.items():
                grid[np.asarray(chunk.iy), np.asarray(chunk.ix)] = chunk.spectra[system]
    return layout, attrs, spectra


def test_a_map_simulated_again_is_the_stored_map_and_one_drift_moves_one_spectrometer(tmp_path):
    path = generate_map(tmp_path / "severe.h5", shape=(5, 6), step_um=40.0, day=1, seed=4, origin_um=(300.0, 80.0),
                        chunk_spots=12, progress=False, sample="basalt", day_change="severe")
    layout, attrs, stored = _stored(path)
    scene = scene_of(attrs)
    assert (scene.sample.name, scene.day, scene.day_change) == ("basalt", 1, "severe")
    again = simulate_again(layout, attrs)
    for system in stored:
        np.testing.assert_array_equal(again[system], stored[system])

    day0_primary = DayConditions.for_day(0).drift["primary"]
    steady = scene.with_drift("primary", day0_primary)
    assert steady.conditions.drift["primary"] == day0_primary
    assert scene.conditions.drift["primary"] != day0_primary            # the original is untouched
    moved = simulate_again(layout, attrs, steady)
    np.testing.assert_array_equal(moved["secondary"], stored["secondary"])
    assert not np.allclose(moved["primary"], stored["primary"])
    assert simulated_again(path)
    first_chunk = simulate_again(layout, attrs, first_chunk=True)
    assert first_chunk["primary"].shape == (2, 6, 4062)            # chunk_spots 12: two rows of six
    np.testing.assert_array_equal(first_chunk["primary"], stored["primary"][:2])


def test_the_primary_of_another_day_puts_a_line_back_where_that_day_saw_it(pure_spots):
    x = np.concatenate([pure_spots["quartz"][0], pure_spots["albite"][0]])
    y = np.concatenate([pure_spots["quartz"][1], pure_spots["albite"][1]])
    wavelengths = PairedScene(seed=3).wavelengths("primary")

    def si_288_position(scene):
        mean = scene.shots(x, y, rng=np.random.default_rng(9))["primary"].mean(axis=0)
        return measure_line(wavelengths, mean, 288.1579)[0]

    severe = PairedScene(seed=3, day=2, day_change="severe")
    day0 = si_288_position(PairedScene(seed=3, day=0))
    drifted = si_288_position(severe)
    steadied = si_288_position(severe.with_drift("primary", DayConditions.for_day(0).drift["primary"]))
    assert abs(drifted - day0) > 0.5
    assert abs(steadied - day0) < 0.05, (day0, drifted, steadied)


def test_a_daily_calibrated_axis_names_the_wavelength_each_pixel_sees(pure_spots):
    x = np.concatenate([pure_spots["quartz"][0], pure_spots["albite"][0]])
    y = np.concatenate([pure_spots["quartz"][1], pure_spots["albite"][1]])
    nominal = PairedScene(seed=3, day=2, day_change="severe")
    calibrated = PairedScene(seed=3, day=2, day_change="severe", calibration="daily")
    counts = {name: scene.shots(x, y, rng=np.random.default_rng(9))["primary"]
              for name, scene in (("nominal", nominal), ("daily", calibrated))}
    np.testing.assert_array_equal(counts["nominal"], counts["daily"])     # the light is the same
    mean = counts["daily"].mean(axis=0)

    def line_centre_nm(axis):
        # the centroid of the Si I 288.16 nm line above its local floor, in the axis's wavelengths
        pixel = int(np.argmin(np.abs(axis - 288.1579)))
        window = slice(pixel - 5, pixel + 6)
        net = np.clip(mean[window] - mean[pixel - 12:pixel + 13].min(), 0.0, None)
        return float((axis[window] * net).sum() / net.sum())

    pixel_nm = float(np.diff(nominal.wavelengths("primary")).mean())
    off_nominal = (line_centre_nm(nominal.wavelengths("primary")) - 288.1579) / pixel_nm
    off_calibrated = (line_centre_nm(calibrated.wavelengths("primary")) - 288.1579) / pixel_nm
    assert abs(off_nominal) > 0.5
    assert abs(off_calibrated) < 0.05, (off_nominal, off_calibrated)
    # day 0 is the factory's day: calibrating it changes nothing
    np.testing.assert_array_equal(PairedScene(seed=3, calibration="daily").wavelengths("secondary"),
                                  PairedScene(seed=3).wavelengths("secondary"))


def test_a_calibrated_map_is_simulated_again_and_refuses_a_resume_with_the_other_calibration(tmp_path):
    path = generate_map(tmp_path / "cal.h5", shape=(3, 4), step_um=40.0, day=1, seed=2, chunk_spots=8,
                        progress=False, day_change="severe", calibration="daily")
    with PairedMapReader(path) as reader:
        attrs = simulation_attributes(reader.sample_truth)
        stored_axis = reader.wavelengths("primary")
    assert attrs["calibration"] == "daily"
    np.testing.assert_array_equal(stored_axis, scene_of(attrs).spectrograph("primary").calibrated_wavelengths)
    assert simulated_again(path)
    with pytest.raises(ValueError, match="calibration='daily'"):
        generate_map(path, shape=(3, 4), step_um=40.0, day=1, seed=2, chunk_spots=8, progress=False,
                     day_change="severe", resume=True)
