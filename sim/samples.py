"""Other rocks and materials for the simulated bench: a basalt, a granite and a
steelmaking slag, next to the pegmatite of :mod:`sim.sample`.

Each is a :class:`TexturedSample`: like the pegmatite a pure function of
(seed, x, y) through hashed lattice cells, built from a recipe:

* a matrix of grains from a weighted, anisotropic Voronoi tessellation in
  domain-warped coordinates, whose phase is drawn from modal proportions that
  drift regionally;
* one or more levels of isolated grains (phenocrysts, accessory oxides, metal
  droplets) that override the matrix where present.

Compositions are the standard mineral formulas (wt% computed from atom counts
with :func:`sim.sample._weight_percent`), with solid solutions and minor
elements varying per grain and regionally as in the pegmatite. Modal
proportions and grain sizes are typical textbook values; ablation efficiencies
(dark, absorbing phases ablate more at 266 nm) are illustrative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from sim.lines import ALL_ELEMENTS, ATOMIC_MASS
from sim.sample import PegmatiteSample, _vector, _weight_percent, nearest_weighted_cell

#: A formula: given ``v(i)`` (per-point draws in [0, 1] for solid-solution
#: parameter i), the atom count per element.
Formula = Callable[[Callable[[int], np.ndarray]], dict]


def oxides(**wt_percent: float) -> dict[str, float]:
    """Atom counts per 100 g of a composition given as oxide wt% (e.g. SiO2=52)."""
    atoms: dict[str, float] = {}
    for oxide, wt in wt_percent.items():
        parts = _parse_oxide(oxide)
        mass = sum(n * ATOMIC_MASS[e] for e, n in parts.items())
        for e, n in parts.items():
            atoms[e] = atoms.get(e, 0.0) + wt / mass * n
    return atoms


def _parse_oxide(oxide: str) -> dict[str, int]:
    parts, i = {}, 0
    while i < len(oxide):
        j = i + 1
        while j < len(oxide) and oxide[j].islower():
            j += 1
        k = j
        while k < len(oxide) and oxide[k].isdigit():
            k += 1
        parts[oxide[i:j]] = int(oxide[j:k] or 1)
        i = k
    return parts


def between(lo: float, hi: float, v: np.ndarray) -> np.ndarray:
    return lo + (hi - lo) * v


@dataclass(frozen=True)
class Phase:
    """One mineral or material: its formula, minor elements (element, low wt%, high wt%,
    log-uniform), relative ablated mass and matrix effect on the plasma temperature."""

    name: str
    formula: Formula
    minor: tuple = ()
    ablation: float = 1.0
    temperature_factor: float = 1.0


@dataclass(frozen=True)
class Matrix:
    """Voronoi grains: phase -> (modal share of the matrix, (aspect low, aspect high))."""

    phases: dict
    cell_um: float
    zone_um: float = 3000.0          # scale of the regional drift of the modal proportions
    zone_strength: float = 0.8


@dataclass(frozen=True)
class Grains:
    """Isolated grains, at most one per lattice cell: phase -> share of the grains."""

    phases: dict
    cell_um: float
    presence: float                  # fraction of cells holding a grain
    radius_um: tuple                 # (low, high)


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    phases: tuple                    # of Phase, in phase-map order
    matrix: Matrix
    grains: tuple = ()               # of Grains, coarser first; finer levels win
    warp_um: tuple = (70.0, 260.0, 12.0, 55.0)   # (amplitude, scale) of two warp octaves
    modal: dict = field(default_factory=dict)     # expected area fraction per phase (documentation, tests)


class TexturedSample(PegmatiteSample):
    """A sample built from a :class:`Recipe`; the same pure-function interface as the pegmatite."""

    def __init__(self, recipe: Recipe, seed: int = 0, *, crater_radius_um: float = 15.0):
        super().__init__(seed, crater_radius_um=crater_radius_um)
        self.recipe = recipe
        self.name = recipe.name
        self.description = recipe.description
        self.phase_names = tuple(p.name for p in recipe.phases)
        self.ablation = np.array([p.ablation for p in recipe.phases])
        self.temperature_factor = np.array([p.temperature_factor for p in recipe.phases])
        self._index = {name: i for i, name in enumerate(self.phase_names)}
        matrix = recipe.matrix
        self._matrix_phase = np.array([self._index[p] for p in matrix.phases])
        self._matrix_logshare = np.log([share for share, _ in matrix.phases.values()])
        self._matrix_aspect = np.array([aspect for _, aspect in matrix.phases.values()])

    def _warp(self, x, y):
        a1, s1, a2, s2 = self.recipe.warp_um
        wx = x + a1 * self._value_noise(x, y, s1, 1) + a2 * self._value_noise(x, y, s2, 3)
        wy = y + a1 * self._value_noise(x, y, s1, 2) + a2 * self._value_noise(x, y, s2, 4)
        return wx, wy

    def _matrix_cells(self, ix, iy, size):
        m = self.recipe.matrix
        sx = (ix + 0.1 + 0.8 * self._uniform(ix, iy, 11)) * size
        sy = (iy + 0.1 + 0.8 * self._uniform(ix, iy, 12)) * size
        logits = np.stack([self._matrix_logshare[j] + m.zone_strength * self._value_noise(sx, sy, m.zone_um, 20 + j)
                           for j in range(len(self._matrix_phase))])
        p = np.exp(logits - logits.max(axis=0))
        cumulative = np.cumsum(p / p.sum(axis=0), axis=0)
        u = self._uniform(ix, iy, 15)
        choice = np.minimum((u[None, :] > cumulative).sum(axis=0), len(self._matrix_phase) - 1)
        phase = self._matrix_phase[choice]
        lo, hi = self._matrix_aspect[choice].T
        aspect = lo + (hi - lo) * self._uniform(ix, iy, 17)
        theta = np.pi * self._uniform(ix, iy, 16)
        weight = (0.35 * size * self._uniform(ix, iy, 18)) ** 2
        return sx, sy, phase, np.cos(theta), np.sin(theta), aspect, weight, self._hash(ix, iy, 19)

    def _matrix(self, x, y):
        size = self.recipe.matrix.cell_um
        return nearest_weighted_cell(x, y, size, self._matrix_cells)

    def _phase_and_key(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        wx, wy = self._warp(x, y)
        phase, key = self._matrix(wx, wy)
        for level, grains in enumerate(self.recipe.grains):
            inside, _, kind, k2 = self._inclusions(wx, wy, grains.cell_um, grains.presence, 100 * (level + 1),
                                                   *grains.radius_um)
            shares = np.array(list(grains.phases.values()), dtype=np.float64)
            bounds = np.cumsum(shares / shares.sum())
            which = np.minimum(np.searchsorted(bounds, kind, side="right"), len(shares) - 1)
            grain_phase = np.array([self._index[p] for p in grains.phases])[which]
            phase = np.where(inside, grain_phase, phase).astype(np.int16)
            key = np.where(inside, k2, key)
        return phase, key

    def weight_percent(self, phase, key, x, y) -> np.ndarray:
        out = np.zeros((len(phase), len(ALL_ELEMENTS)))
        for p, spec in enumerate(self.recipe.phases):
            m = np.flatnonzero(phase == p)
            if m.size == 0:
                continue
            kk, xx, yy = key[m], x[m], y[m]
            atoms = spec.formula(lambda i: self._variation(kk, xx, yy, 1 + i))
            vec = _vector(_weight_percent(atoms), m.size)
            for j, (el, lo, hi) in enumerate(spec.minor):
                vec[:, ALL_ELEMENTS.index(el)] += lo * (hi / lo) ** self._variation(kk, xx, yy, 50 + j)
            out[m] = 100.0 * vec / vec.sum(axis=1, keepdims=True)
        return out


# -- recipes ---------------------------------------------------------------------------------

def _plagioclase(an_lo, an_hi):
    """Plagioclase Ca_x Na_(1-x) Al_(1+x) Si_(3-x) O8, anorthite fraction x."""
    def formula(v):
        x = between(an_lo, an_hi, v(0))
        return {"Ca": x, "Na": 1 - x, "Al": 1 + x, "Si": 3 - x, "O": 8}
    return formula


BASALT = Recipe(
    name="basalt", description="synthetic tholeiitic basalt",
    phases=(
        Phase("plagioclase", _plagioclase(0.50, 0.70),           # labradorite
              (("K", 0.05, 0.3), ("Fe", 0.2, 0.6), ("Mg", 0.02, 0.15)), 0.85, 0.99),
        Phase("clinopyroxene",                                   # augite, Fe/(Fe+Mg) 0.2-0.4
              lambda v: {"Ca": 0.8, "Mg": 1.1 * (1 - between(0.2, 0.4, v(0))),
                         "Fe": 1.1 * between(0.2, 0.4, v(0)), "Al": 0.2, "Si": 1.9, "O": 6},
              (("Ti", 0.3, 1.2), ("Na", 0.1, 0.4), ("Mn", 0.1, 0.3)), 1.10, 1.01),
        Phase("olivine",                                         # Fo70-85
              lambda v: {"Mg": 2 * (1 - between(0.15, 0.30, v(0))), "Fe": 2 * between(0.15, 0.30, v(0)),
                         "Si": 1, "O": 4},
              (("Mn", 0.15, 0.35), ("Ca", 0.05, 0.2)), 1.05, 1.01),
        Phase("magnetite",                                       # titanomagnetite Fe(3-x)Ti(x)O4
              lambda v: {"Fe": 3 - between(0.1, 0.6, v(0)), "Ti": between(0.1, 0.6, v(0)), "O": 4},
              (("Mg", 0.2, 1.0), ("Al", 0.2, 1.5), ("Mn", 0.2, 0.6)), 1.35, 1.03),
        Phase("glass",                                           # evolved interstitial glass
              lambda v: oxides(SiO2=between(51, 56, v(0)), Al2O3=14.0, FeO=between(13, 9, v(0)), MgO=4.5,
                               CaO=8.5, Na2O=3.5, K2O=1.5, TiO2=2.0),
              (), 1.0, 1.0),
    ),
    matrix=Matrix({"plagioclase": (0.52, (3.0, 5.0)),   # laths
                   "clinopyroxene": (0.34, (1.0, 1.8)),
                   "glass": (0.14, (1.0, 1.3))}, cell_um=120.0, zone_um=2000.0, zone_strength=0.5),
    grains=(Grains({"olivine": 1.0}, cell_um=800.0, presence=0.45, radius_um=(100.0, 300.0)),   # phenocrysts
            Grains({"magnetite": 1.0}, cell_um=90.0, presence=0.5, radius_um=(6.0, 25.0))),
    warp_um=(25.0, 120.0, 6.0, 30.0),
    modal={"plagioclase": 0.43, "clinopyroxene": 0.29, "olivine": 0.10, "magnetite": 0.05, "glass": 0.12})

GRANITE = Recipe(
    name="granite", description="synthetic biotite granite",
    phases=(
        Phase("quartz", lambda v: {"Si": 1, "O": 2}, (("Al", 0.005, 0.05), ("Ti", 0.001, 0.01)), 0.70, 1.00),
        Phase("k-feldspar", lambda v: {"K": 1 - between(0.05, 0.2, v(0)), "Na": between(0.05, 0.2, v(0)),
                                        "Al": 1, "Si": 3, "O": 8},   # perthitic orthoclase
              (("Ca", 0.05, 0.3), ("Fe", 0.02, 0.15), ("Rb", 0.02, 0.1)), 0.85, 0.99),
        Phase("plagioclase", _plagioclase(0.10, 0.30),           # oligoclase
              (("K", 0.1, 0.5), ("Fe", 0.02, 0.15)), 0.85, 0.99),
        Phase("biotite",                                         # K(Mg,Fe)3AlSi3O10(OH)2, Fe/(Fe+Mg) 0.4-0.7
              lambda v: {"K": 1, "Mg": 3 * (1 - between(0.4, 0.7, v(0))), "Fe": 3 * between(0.4, 0.7, v(0)),
                         "Al": 1, "Si": 3, "O": 12, "H": 2},
              (("Ti", 1.0, 2.5), ("Mn", 0.1, 0.4), ("Na", 0.05, 0.2), ("Li", 0.005, 0.05)), 1.15, 0.99),
        Phase("magnetite", lambda v: {"Fe": 3 - between(0.02, 0.1, v(0)), "Ti": between(0.02, 0.1, v(0)), "O": 4},
              (("Mn", 0.1, 0.4), ("Al", 0.1, 0.5)), 1.35, 1.03),
    ),
    matrix=Matrix({"quartz": (0.31, (1.0, 1.5)), "k-feldspar": (0.36, (1.2, 2.0)),
                   "plagioclase": (0.25, (1.3, 2.2)), "biotite": (0.08, (2.5, 4.0))},
                  cell_um=700.0, zone_um=5000.0, zone_strength=0.5),
    grains=(Grains({"magnetite": 1.0}, cell_um=500.0, presence=0.5, radius_um=(25.0, 90.0)),),
    modal={"quartz": 0.30, "k-feldspar": 0.35, "plagioclase": 0.25, "biotite": 0.08, "magnetite": 0.02})

SLAG = Recipe(
    name="slag", description="synthetic steelmaking (converter) slag",
    phases=(
        Phase("larnite", lambda v: {"Ca": 2, "Si": 1, "O": 4},     # dicalcium silicate
              (("Fe", 0.5, 2.0), ("Mg", 0.2, 0.6), ("Al", 0.1, 0.5)), 0.95, 1.00),
        Phase("wustite", lambda v: {"Fe": between(0.5, 0.7, v(0)), "Mg": 0.92 - between(0.5, 0.7, v(0)),
                                    "Mn": 0.08, "O": 1},         # RO phase (Fe,Mg,Mn)O
              (("Ca", 0.5, 2.0),), 1.25, 1.02),
        Phase("brownmillerite", lambda v: {"Ca": 2, "Al": 2 * between(0.2, 0.5, v(0)),
                                           "Fe": 2 * (1 - between(0.2, 0.5, v(0))), "O": 5},
              (("Ti", 0.3, 1.0), ("Mg", 0.5, 1.5), ("Si", 0.2, 1.0)), 1.20, 1.01),
        Phase("lime", lambda v: {"Ca": 1, "O": 1}, (("Mg", 0.5, 2.0), ("Fe", 0.5, 3.0)), 0.90, 1.00),
        Phase("metal", lambda v: {"Fe": 1}, (("Mn", 0.1, 0.5), ("Si", 0.02, 0.2)), 1.40, 1.04),
    ),
    matrix=Matrix({"larnite": (0.48, (1.0, 1.5)), "wustite": (0.28, (1.0, 1.3)),
                   "brownmillerite": (0.24, (1.5, 3.0))}, cell_um=80.0, zone_um=1500.0, zone_strength=0.6),
    grains=(Grains({"lime": 1.0}, cell_um=250.0, presence=0.6, radius_um=(20.0, 60.0)),
            Grains({"metal": 1.0}, cell_um=100.0, presence=0.5, radius_um=(4.0, 20.0))),
    warp_um=(20.0, 90.0, 5.0, 25.0),
    modal={"larnite": 0.42, "wustite": 0.24, "brownmillerite": 0.21, "lime": 0.05, "metal": 0.02})

RECIPES = {r.name: r for r in (BASALT, GRANITE, SLAG)}
#: Every sample the simulator knows, by name.
SAMPLE_NAMES = ("pegmatite",) + tuple(RECIPES)


def make_sample(name: str = "pegmatite", seed: int = 0) -> PegmatiteSample:
    """The named sample with this seed; raises ValueError naming the known samples."""
    if name == "pegmatite":
        return PegmatiteSample(seed)
    try:
        return TexturedSample(RECIPES[name], seed)
    except KeyError:
        raise ValueError(f"unknown sample {name!r}; known samples: {', '.join(SAMPLE_NAMES)}") from None
