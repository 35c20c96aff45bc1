"""The synthetic pegmatite: phases, grain sizes, mixtures and within-phase variation."""

import numpy as np
import pytest
from scipy import ndimage

from sim.lines import ALL_ELEMENTS, ELEMENTS
from sim.sample import PHASE_NAMES, PegmatiteSample


@pytest.fixture(scope="module")
def sample():
    return PegmatiteSample(seed=5)


@pytest.fixture(scope="module")
def fine_map(sample):
    """A 6 x 6 mm region at 10 um."""
    y, x = np.mgrid[0:600, 0:600] * 10.0
    return sample.phase_at(x, y)


def test_phase_names_in_the_contract_order():
    assert PHASE_NAMES == ("quartz", "albite", "muscovite", "garnet", "beryl", "columbite", "microlite")


def test_every_phase_occurs_with_pegmatite_like_abundances(fine_map):
    fraction = np.bincount(fine_map.ravel(), minlength=7) / fine_map.size
    assert (fraction > 0).all(), dict(zip(PHASE_NAMES, fraction))
    majors = fraction[:3]
    assert majors.sum() > 0.85 and majors.min() > 0.08
    assert fraction[3:].max() < 0.1


def test_grains_are_tens_to_hundreds_of_micrometres(fine_map):
    diameters = {}
    for p, name in enumerate(PHASE_NAMES):
        labels, n = ndimage.label(fine_map == p)
        areas = np.bincount(labels.ravel())[1:] * 10.0 ** 2
        areas = areas[areas >= 4 * 10.0 ** 2]          # drop slivers of one or two pixels
        diameters[name] = np.median(2 * np.sqrt(areas / np.pi))
    assert all(10 <= d <= 1500 for d in diameters.values()), diameters
    assert diameters["columbite"] < diameters["garnet"] < diameters["quartz"]


def test_grain_boundaries_are_irregular(fine_map):
    """Boundary length exceeds that of smooth shapes with the same areas (isoperimetric ratio)."""
    mask = fine_map == 0
    boundary = (np.diff(mask, axis=0) != 0).sum() + (np.diff(mask, axis=1) != 0).sum()
    labels, n = ndimage.label(mask)
    areas = np.bincount(labels.ravel())[1:]
    smooth = (2 * np.sqrt(np.pi * areas)).sum()      # circles, in pixel units
    assert boundary > 1.5 * smooth


def test_the_sample_is_defined_by_seed_and_position_only(sample):
    x, y = np.array([-5000.0, 0.0, 1234.5, 9e5]), np.array([300.0, -7.0, 42.0, 1e6])
    np.testing.assert_array_equal(sample.phase_at(x, y), PegmatiteSample(seed=5).phase_at(x, y))
    # a point's phase does not depend on which other points are asked with it
    np.testing.assert_array_equal(sample.phase_at(x[2:3], y[2:3]), sample.phase_at(x, y)[2:3])
    other = PegmatiteSample(seed=6)
    grid_y, grid_x = np.mgrid[0:50, 0:50] * 40.0
    assert (other.phase_at(grid_x, grid_y) != sample.phase_at(grid_x, grid_y)).mean() > 0.3


def test_shots_on_boundaries_ablate_mixtures(sample):
    y, x = np.mgrid[0:100, 0:100] * 20.0
    composition = sample.spot_composition(x.ravel(), y.ravel())
    purity = composition.phase_weights.max(axis=1)
    np.testing.assert_allclose(composition.phase_weights.sum(axis=1), 1.0)
    assert 0.05 < (purity < 0.999).mean() < 0.6
    np.testing.assert_allclose(composition.atom_fraction.sum(axis=1) <= 1.0, True)


def test_minor_elements_and_solid_solutions_vary_within_a_phase(sample):
    y, x = np.mgrid[0:300, 0:300] * 20.0
    x, y = x.ravel(), y.ravel()
    phase = sample.phase_at(x, y)
    composition = sample.spot_composition(x, y)
    pure = composition.phase_weights.max(axis=1) > 0.999
    fe, mn = ELEMENTS.index("Fe"), ELEMENTS.index("Mn")
    garnet = pure & (phase == PHASE_NAMES.index("garnet"))
    ratio = composition.atom_fraction[garnet, mn] / (composition.atom_fraction[garnet, mn]
                                                     + composition.atom_fraction[garnet, fe])
    assert garnet.sum() > 20
    assert 0.3 <= ratio.min() and ratio.max() <= 0.8 and ratio.std() > 0.05   # almandine-spessartine
    muscovite = pure & (phase == PHASE_NAMES.index("muscovite"))
    li = composition.atom_fraction[muscovite, ELEMENTS.index("Li")]
    assert li.max() > 5 * li.min() > 0


def test_mineral_compositions_match_their_formulae(sample):
    y, x = np.mgrid[0:200, 0:200] * 20.0
    x, y = x.ravel(), y.ravel()
    phase = sample.phase_at(x, y)
    key = np.zeros(x.size, dtype=np.uint64)
    wt = sample.weight_percent(phase, key, x, y)
    np.testing.assert_allclose(wt.sum(axis=1), 100.0)
    quartz = wt[phase == 0].mean(axis=0)
    assert quartz[ALL_ELEMENTS.index("Si")] == pytest.approx(46.7, abs=0.2)
    albite = wt[phase == 1].mean(axis=0)
    assert albite[ALL_ELEMENTS.index("Na")] == pytest.approx(8.7, abs=0.3)
    beryl = wt[phase == 4].mean(axis=0)
    assert beryl[ALL_ELEMENTS.index("Be")] == pytest.approx(5.0, abs=0.2)
