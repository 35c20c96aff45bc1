"""The basalt, granite and slag: modal proportions, mineral chemistry and the lines
each phase shows, measured on the simulated bench against the recipes' truth."""

import numpy as np
import pytest

from sim.lines import ALL_ELEMENTS, ATOMIC_MASS, ELEMENTS, load_lines
from sim.samples import RECIPES, SAMPLE_NAMES, make_sample
from sim.scene import PairedScene
from tests.sim.conftest import line_significance

#: grid step for phase statistics and pure spots: fine against each rock's grain size
STEP_UM = {"basalt": 8.0, "granite": 40.0, "slag": 4.0}


def _grid(name, n=250):
    y, x = np.mgrid[0:n, 0:n] * STEP_UM[name]
    return x.ravel(), y.ravel()


@pytest.fixture(scope="module", params=sorted(RECIPES))
def sample(request):
    return make_sample(request.param, seed=3)


def test_every_sample_has_a_name_and_an_unknown_one_is_named():
    assert SAMPLE_NAMES == ("pegmatite", "basalt", "granite", "slag")
    with pytest.raises(ValueError, match="unknown sample 'gabbro'.*basalt"):
        make_sample("gabbro")


def test_phase_area_fractions_match_the_modal_composition(sample):
    x, y = _grid(sample.name)
    phase = sample.phase_at(x, y)
    measured = np.bincount(phase, minlength=len(sample.phase_names)) / phase.size
    for name, expected in sample.recipe.modal.items():
        got = measured[sample.phase_names.index(name)]
        assert abs(got - expected) < max(0.06, 0.4 * expected), f"{sample.name} {name}: {got:.3f} vs {expected}"


def test_grain_sizes_follow_the_texture(sample):
    """Mean run length of a phase along x (a chord of its grains) scales with the matrix cell."""
    x, y = _grid(sample.name)
    phase = sample.phase_at(x, y).reshape(250, 250)
    changes = (np.diff(phase, axis=1) != 0).sum()
    chord_um = phase.size / max(changes, 1) * STEP_UM[sample.name]
    cell = sample.recipe.matrix.cell_um
    assert 0.15 * cell < chord_um < 1.5 * cell, f"{sample.name}: mean chord {chord_um:.0f} um, cell {cell} um"


def _atoms(wt_row):
    return {e: wt_row[i] / ATOMIC_MASS[e] for i, e in enumerate(ALL_ELEMENTS)}


def test_mineral_formulae_hold(sample):
    """Stoichiometry of the major elements of a few phases, grain by grain."""
    x, y = _grid(sample.name, 120)
    phase, key = sample._phase_and_key(x, y)
    wt = sample.weight_percent(phase, key, x, y)
    np.testing.assert_allclose(wt.sum(axis=1), 100.0, rtol=1e-9)
    names = sample.phase_names
    for row, p in zip(wt[::7], phase[::7]):
        a = _atoms(row)
        name = names[p]
        if name == "olivine":
            assert (a["Mg"] + a["Fe"]) / a["Si"] == pytest.approx(2.0, rel=0.03)
            assert 0.15 <= a["Fe"] / (a["Mg"] + a["Fe"]) <= 0.31
        elif name == "plagioclase":
            an = a["Ca"] / (a["Ca"] + a["Na"])
            assert (0.48 if sample.name == "basalt" else 0.08) <= an <= (0.72 if sample.name == "basalt" else 0.32)
            assert a["O"] / (a["Si"] + a["Al"]) == pytest.approx(2.0, rel=0.03)
        elif name == "magnetite":
            assert row[ALL_ELEMENTS.index("Fe")] > 50.0
        elif name == "k-feldspar":
            assert 11.0 < row[ALL_ELEMENTS.index("K")] < 14.0
        elif name == "larnite":
            assert a["Ca"] / a["Si"] == pytest.approx(2.0, rel=0.05)
        elif name == "metal":
            assert row[ALL_ELEMENTS.index("Fe")] > 99.0


@pytest.fixture(scope="module")
def phase_spectra():
    """sample -> phase -> primary counts of pure spots (whole crater in one phase)."""
    out = {}
    rng = np.random.default_rng(21)
    for name in sorted(RECIPES):
        sample = make_sample(name, seed=3)
        scene = PairedScene(seed=3, sample=sample)
        x, y = _grid(name, 300)
        phase = sample.phase_at(x, y)
        out[name] = {}
        for p, phase_name in enumerate(sample.phase_names):
            idx = np.flatnonzero(phase == p)[::2][:2000]
            pure = sample.spot_composition(x[idx], y[idx]).phase_weights[:, p] > 0.999
            idx = idx[pure][:60]
            assert idx.size >= 20, f"{name}: too few pure {phase_name} spots"
            out[name][phase_name] = scene.shots(x[idx], y[idx], rng=rng)["primary"]
            out[name][phase_name, "atoms"] = sample.spot_composition(x[idx], y[idx]).atom_fraction.mean(axis=0)
        out[name]["wavelengths"] = scene.wavelengths("primary")
    return out


def _area(spectra, wavelengths, line_nm):
    pixel = int(round(np.interp(line_nm, wavelengths, np.arange(wavelengths.size))))
    mean = spectra.mean(axis=0)
    side = np.r_[mean[pixel - 40:pixel - 4], mean[pixel + 5:pixel + 41]]
    return mean[pixel - 1:pixel + 2].sum() - 3 * np.median(side)


# (sample, line, phases in which it is strong, phases where it is at most `ratio` of the weakest strong one)
CONTRASTS = [
    ("basalt", ("Fe", 2, 259.9396), ("magnetite", "olivine"), ("plagioclase",), 0.25),
    ("basalt", ("Fe", 1, 373.4860), ("magnetite", "olivine"), ("plagioclase",), 0.25),
    ("basalt", ("Ca", 2, 393.3663), ("plagioclase", "clinopyroxene"), ("olivine", "magnetite"), 0.35),
    ("basalt", ("Al", 1, 396.1520), ("plagioclase",), ("olivine",), 0.1),
    ("basalt", ("Na", 1, 330.2369), ("plagioclase",), ("olivine", "magnetite"), 0.1),
    ("basalt", ("Mg", 2, 279.5528), ("olivine", "clinopyroxene"), ("plagioclase",), 0.2),
    ("basalt", ("Ti", 2, 323.4520), ("magnetite",), ("olivine", "plagioclase"), 0.2),
    ("granite", ("K", 1, 404.4136), ("k-feldspar", "biotite"), ("quartz",), 0.15),
    ("granite", ("Si", 1, 288.1579), ("quartz", "k-feldspar", "plagioclase"), ("magnetite",), 0.1),
    ("granite", ("Fe", 2, 259.9396), ("biotite", "magnetite"), ("quartz", "k-feldspar"), 0.1),
    ("granite", ("Na", 1, 330.2369), ("plagioclase",), ("quartz",), 0.1),
    ("slag", ("Si", 1, 288.1579), ("larnite",), ("lime", "metal", "wustite"), 0.15),
    ("slag", ("Ca", 2, 393.3663), ("larnite", "lime", "brownmillerite"), ("metal",), 0.1),
    ("slag", ("Fe", 2, 259.9396), ("metal", "wustite"), ("larnite", "lime"), 0.25),
    ("slag", ("Mn", 2, 257.6105), ("wustite",), ("lime", "larnite"), 0.25),
    ("slag", ("Al", 1, 396.1520), ("brownmillerite",), ("lime", "metal"), 0.15),
]


@pytest.mark.parametrize("name, line, strong, weak, ratio", CONTRASTS,
                         ids=[f"{c[0]}-{c[1][0]}{c[1][1]}-{c[1][2]}" for c in CONTRASTS])
def test_phases_show_their_elements_lines(phase_spectra, name, line, strong, weak, ratio):
    load_lines().find(*line)
    wavelengths = phase_spectra[name]["wavelengths"]
    line_nm = line[2]
    strong_areas = {}
    for phase in strong:
        shots = phase_spectra[name][phase]
        assert line_significance(wavelengths, shots, line_nm) > 10, f"{line} not seen in {name} {phase}"
        strong_areas[phase] = _area(shots, wavelengths, line_nm)
    for phase in weak:
        area = _area(phase_spectra[name][phase], wavelengths, line_nm)
        assert area < ratio * min(strong_areas.values()), \
            f"{line} in {name} {phase}: {area:.0f} against {strong_areas}"


def test_every_major_element_has_a_visible_line_in_the_primary(phase_spectra):
    """Each element above 1 atom % of a phase shows at least one line at S/N > 10 there."""
    lines = load_lines()
    for name in sorted(RECIPES):
        wavelengths = phase_spectra[name]["wavelengths"]
        for phase_name in make_sample(name).phase_names:
            atoms = phase_spectra[name][phase_name, "atoms"]          # over ELEMENTS, of all atoms
            shots = phase_spectra[name][phase_name]
            for i, element in enumerate(ELEMENTS):
                if atoms[i] < 0.01:
                    continue
                candidates = lines.wavelength_nm[lines.element == element]
                best = max(line_significance(wavelengths, shots, w) for w in candidates if 246 < w < 406)
                assert best > 10, f"{name} {phase_name}: no visible {element} line (best S/N {best:.1f})"
