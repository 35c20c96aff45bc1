"""A map's shots simulated again, through the same or another day's spectrometers.

The day-change floor (bench/day_change_floor.py) rests on two promises: a chunk of a map
simulated again gives the stored spectra bit for bit, and a scene with one spectrometer's
drift replaced sees the same plasmas with the same noise through the other one.
"""

import numpy as np

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
