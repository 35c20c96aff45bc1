"""A synthetic heterogeneous granitic pegmatite, defined everywhere on the plane.

The phase and the composition at any point are pure functions of (seed, x, y):
counter-based hashing of lattice cells replaces a random-number stream, so a
map of any size, step or origin is "another region of the same sample".

Structure (three levels, the finer one wins where present):

* matrix: quartz, albite and muscovite grains from an anisotropic, weighted
  Voronoi tessellation (cells ~450 um) in domain-warped coordinates, so grain
  boundaries are irregular at the 10-100 um scale; modal proportions drift over
  millimetres (quartz-rich / albite-rich / mica-rich zones). Muscovite grains
  are elongated books;
* garnet and beryl crystals, 40-150 um in radius, in ~520 um cells;
* columbite and microlite grains, 12-50 um, in ~240 um cells; some columbite
  grains carry a microlite rim (microlite replacing columbite).

Minor elements vary per grain and smoothly across the sample, within the
ranges of libs-physics.md section 10.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.lines import ALL_ELEMENTS, ATOMIC_MASS, ELEMENTS, atom_fractions

PHASE_NAMES = ("quartz", "albite", "muscovite", "garnet", "beryl", "columbite", "microlite")
QUARTZ, ALBITE, MUSCOVITE, GARNET, BERYL, COLUMBITE, MICROLITE = range(7)

#: Relative ablated mass per shot (266 nm absorption: the transparent
#: quartz ablates least, the dark oxides most) and a small matrix effect on
#: plasma temperature. Illustrative values, not measured.
ABLATION = np.array([0.70, 0.85, 1.05, 1.20, 0.80, 1.35, 1.25])
TEMPERATURE_FACTOR = np.array([1.00, 0.99, 0.98, 1.02, 1.00, 1.03, 1.02])

#: Minor elements: (element, low wt%, high wt%) per phase, log-uniform within
#: the range (libs-physics.md section 10; ranges marked unverified there too).
MINOR_ELEMENTS = {
    QUARTZ: (("Al", 0.005, 0.08), ("Li", 0.0005, 0.005), ("Ti", 0.001, 0.01), ("Na", 0.002, 0.02)),
    ALBITE: (("Ca", 0.05, 0.8), ("K", 0.05, 0.4), ("Rb", 0.001, 0.01), ("Fe", 0.005, 0.05)),
    MUSCOVITE: (("Fe", 0.4, 2.5), ("Mg", 0.05, 0.6), ("Li", 0.01, 1.0), ("Rb", 0.05, 0.4),
                ("Cs", 0.002, 0.05), ("Na", 0.2, 0.6), ("Ti", 0.01, 0.15), ("Sn", 0.005, 0.03)),
    GARNET: (("Ca", 0.3, 1.5), ("Mg", 0.1, 0.6), ("Ti", 0.02, 0.1)),
    BERYL: (("Na", 0.2, 1.0), ("Cs", 0.05, 0.5), ("Li", 0.05, 0.3), ("Fe", 0.1, 0.8), ("Mg", 0.05, 0.2)),
    COLUMBITE: (("Ti", 0.2, 1.5), ("Sn", 0.05, 0.4)),
    MICROLITE: (("Sn", 0.2, 1.0), ("Fe", 0.05, 0.3)),
}
#: Solid-solution parameters: name -> (low, high).
SOLID_SOLUTION = {"garnet_mn": (0.3, 0.8), "columbite_mn": (0.29, 0.92),
                  "columbite_ta": (0.05, 0.5), "microlite_f": (0.0, 1.0), "microlite_nb": (0.02, 0.15)}


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective scramble of uint64 values."""
    h = h ^ (h >> np.uint64(30))
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    h = h ^ (h >> np.uint64(27))
    h = h * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def _salt(salt: int, multiplier: int) -> np.uint64:
    return np.uint64((salt * multiplier) & 0xFFFFFFFFFFFFFFFF)


def nearest_weighted_cell(x, y, size: float, cell_attributes):
    """(phase, grain key) of each point from a weighted anisotropic Voronoi diagram of cells of
    ``size`` um: ``cell_attributes(ix, iy, size)`` gives each cell's (sx, sy, phase, cos, sin,
    aspect, weight, key); every point takes the cell whose weighted distance is smallest."""
    cells, inverse = _distinct_cells(x, y, size)
    best = np.full(x.shape, np.inf)
    phase = np.zeros(x.shape, dtype=np.int16)
    key = np.zeros(x.shape, dtype=np.uint64)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            attrs = cell_attributes(cells[0] + dx, cells[1] + dy, size)
            sx, sy, cell_phase, cos_t, sin_t, aspect, weight, cell_key = (a[inverse] for a in attrs)
            u_, v_ = x - sx, y - sy
            along = u_ * cos_t + v_ * sin_t
            across = v_ * cos_t - u_ * sin_t
            d2 = along ** 2 / aspect + across ** 2 * aspect - weight
            closer = d2 < best
            best = np.where(closer, d2, best)
            phase = np.where(closer, cell_phase, phase).astype(np.int16)
            key = np.where(closer, cell_key, key)
    return phase, key


def _distinct_cells(x, y, size):
    """Distinct lattice cells of the points and, per point, the index of its cell."""
    ix = np.floor(x / size).astype(np.int64)
    iy = np.floor(y / size).astype(np.int64)
    packed, inverse = np.unique((ix << 32) + (iy & 0xFFFFFFFF), return_inverse=True)
    return ((packed >> 32).astype(np.float64), (packed & 0xFFFFFFFF).astype(np.int32).astype(np.float64)), inverse


def _weight_percent(formula: dict[str, np.ndarray | float]) -> dict[str, np.ndarray]:
    """wt% of each element of a formula whose atom counts may vary per point."""
    mass = {e: np.asarray(n, dtype=np.float64) * ATOMIC_MASS[e] for e, n in formula.items()}
    total = sum(mass.values())
    return {e: 100.0 * m / total for e, m in mass.items()}


def _vector(wt: dict[str, np.ndarray | float], n: int) -> np.ndarray:
    out = np.zeros((n, len(ALL_ELEMENTS)))
    for e, v in wt.items():
        out[:, ALL_ELEMENTS.index(e)] += v
    return out


@dataclass(frozen=True)
class SpotComposition:
    """What one laser spot ablates."""

    atom_fraction: np.ndarray    # [k, len(ELEMENTS)] number fraction of all ablated atoms
    phase_weights: np.ndarray    # [k, n_phases], sums to 1: the mixture inside the crater
    ablation: np.ndarray         # [k] relative ablated mass
    temperature_factor: np.ndarray  # [k] matrix effect on the plasma temperature
    phase: np.ndarray            # [k] int16 phase at the spot centre


class PegmatiteSample:
    """A seedable pegmatite; ``phase_at`` and ``spot_composition`` are pure functions."""

    name = "pegmatite"
    description = "synthetic granitic pegmatite"
    phase_names = PHASE_NAMES
    ablation = ABLATION
    temperature_factor = TEMPERATURE_FACTOR

    def __init__(self, seed: int = 0, *, crater_radius_um: float = 15.0):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"sample seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.crater_radius_um = float(crater_radius_um)
        self._key = _mix(np.array([self.seed * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]

    # -- hashing and noise ------------------------------------------------------
    def _hash(self, ix, iy, salt: int) -> np.ndarray:
        ix = np.asarray(ix, dtype=np.int64).astype(np.uint64)
        iy = np.asarray(iy, dtype=np.int64).astype(np.uint64)
        salted = self._key ^ _salt(salt, 0x632BE59BD9B4E019)
        h = _mix(ix * np.uint64(0x9E3779B97F4A7C15) ^ salted)
        return _mix(h ^ iy * np.uint64(0xD1B54A32D192ED03))

    def _uniform(self, ix, iy, salt: int) -> np.ndarray:
        return (self._hash(ix, iy, salt) >> np.uint64(11)).astype(np.float64) / 2.0 ** 53

    def _value_noise(self, x, y, scale_um: float, salt: int) -> np.ndarray:
        """Smooth noise in [-1, 1] with features of about ``scale_um``."""
        gx, gy = np.asarray(x) / scale_um, np.asarray(y) / scale_um
        ix, iy = np.floor(gx), np.floor(gy)
        fx, fy = gx - ix, gy - iy
        sx, sy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
        v00, v10 = self._uniform(ix, iy, salt), self._uniform(ix + 1, iy, salt)
        v01, v11 = self._uniform(ix, iy + 1, salt), self._uniform(ix + 1, iy + 1, salt)
        v = (v00 * (1 - sx) + v10 * sx) * (1 - sy) + (v01 * (1 - sx) + v11 * sx) * sy
        return 2.0 * v - 1.0

    def _warp(self, x, y):
        wx = x + 70 * self._value_noise(x, y, 260, 1) + 12 * self._value_noise(x, y, 55, 3)
        wy = y + 70 * self._value_noise(x, y, 260, 2) + 12 * self._value_noise(x, y, 55, 4)
        return wx, wy

    # -- phase field ----------------------------------------------------------------
    def _matrix_cells(self, ix, iy, size):
        """Attributes of matrix cells (evaluated once per distinct cell)."""
        sx = (ix + 0.1 + 0.8 * self._uniform(ix, iy, 11)) * size
        sy = (iy + 0.1 + 0.8 * self._uniform(ix, iy, 12)) * size
        zone_q = self._value_noise(sx, sy, 3000, 13)
        zone_m = self._value_noise(sx, sy, 3000, 14)
        logits = np.stack([1.3 * zone_q, -1.3 * zone_q + 0.4 * zone_m, -0.5 + 1.4 * zone_m])
        p = np.exp(logits) / np.exp(logits).sum(axis=0)
        u = self._uniform(ix, iy, 15)
        phase = np.where(u < p[0], QUARTZ, np.where(u < p[0] + p[1], ALBITE, MUSCOVITE))
        theta = np.pi * self._uniform(ix, iy, 16)
        aspect = np.where(phase == MUSCOVITE, 2.2 + 1.3 * self._uniform(ix, iy, 17),
                          1.0 + 0.5 * self._uniform(ix, iy, 17))
        weight = (0.35 * size * self._uniform(ix, iy, 18)) ** 2
        return sx, sy, phase, np.cos(theta), np.sin(theta), aspect, weight, self._hash(ix, iy, 19)

    def _matrix(self, x, y):
        """Matrix phase and grain key from a weighted anisotropic Voronoi diagram."""
        size = 450.0
        return nearest_weighted_cell(x, y, size, self._matrix_cells)

    def _inclusions(self, x, y, size, present, salt, r_lo, r_hi):
        """Grains confined to their own cell: (inside, rim, kind_u, key)."""
        cells, inverse = _distinct_cells(x, y, size)
        ix, iy = cells
        r = r_lo + (r_hi - r_lo) * self._uniform(ix, iy, salt + 1)
        rim = np.where(self._uniform(ix, iy, salt + 2) < 0.4, 6 + 8 * self._uniform(ix, iy, salt + 3), 0.0)
        margin = np.minimum(1.4 * (r + rim), 0.5 * size)
        sx = ix * size + margin + (size - 2 * margin) * self._uniform(ix, iy, salt + 4)
        sy = iy * size + margin + (size - 2 * margin) * self._uniform(ix, iy, salt + 5)
        theta = np.pi * self._uniform(ix, iy, salt + 6)
        exists = self._uniform(ix, iy, salt) < present
        kind = self._uniform(ix, iy, salt + 7)
        key = self._hash(ix, iy, salt + 8)
        r, rim, sx, sy, theta, exists, kind, key = (a[inverse] for a in (r, rim, sx, sy, theta, exists, kind, key))
        u_, v_ = x - sx, y - sy
        along = u_ * np.cos(theta) + v_ * np.sin(theta)
        across = -u_ * np.sin(theta) + v_ * np.cos(theta)
        # blend of a hexagonal and an elliptical norm: euhedral-looking, slightly rounded sections
        hexd = np.maximum(np.abs(along), np.abs(0.5 * along) + 0.8660254 * np.abs(across))
        d = 0.5 * hexd + 0.5 * np.hypot(along, across * 1.3)
        inside = exists & (d < r)
        in_rim = exists & ~inside & (d < r + rim)
        return inside, in_rim, kind, key

    def _phase_and_key(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        wx, wy = self._warp(x, y)
        phase, key = self._matrix(wx, wy)
        inside, _, kind, k2 = self._inclusions(wx, wy, 520.0, 0.35, 100, 40.0, 150.0)
        phase = np.where(inside, np.where(kind < 0.6, GARNET, BERYL), phase).astype(np.int16)
        key = np.where(inside, k2, key)
        inside, rim, kind, k3 = self._inclusions(wx, wy, 240.0, 0.14, 200, 12.0, 50.0)
        small = np.where(kind < 0.6, COLUMBITE, MICROLITE)
        phase = np.where(inside, small, phase)
        phase = np.where(rim & (small == COLUMBITE), MICROLITE, phase).astype(np.int16)
        key = np.where(inside | (rim & (small == COLUMBITE)), k3, key)
        return phase, key

    def phase_at(self, x_um, y_um) -> np.ndarray:
        """Phase index (into ``phase_names``) at each point, int16."""
        return self._phase_and_key(x_um, y_um)[0]

    # -- composition -----------------------------------------------------------
    def _variation(self, key, x, y, salt: int) -> np.ndarray:
        """Value in [0, 1]: a per-grain draw blended with a smooth regional trend."""
        bits = _mix(key ^ _salt(salt, 0x2545F4914F6CDD1D)) >> np.uint64(11)
        grain = bits.astype(np.float64) / 2.0 ** 53
        return np.clip(0.6 * grain + 0.2 * (1 + self._value_noise(x, y, 350, 300 + salt)), 0.0, 1.0)

    def weight_percent(self, phase, key, x, y) -> np.ndarray:
        """Composition in wt% over ALL_ELEMENTS for points of known phase and grain."""
        out = np.zeros((len(phase), len(ALL_ELEMENTS)))
        for p in range(len(PHASE_NAMES)):
            m = np.flatnonzero(phase == p)
            if m.size == 0:
                continue
            kk, xx, yy = key[m], x[m], y[m]

            def ss(name, salt):
                lo, hi = SOLID_SOLUTION[name]
                return lo + (hi - lo) * self._variation(kk, xx, yy, salt)

            if p == QUARTZ:
                wt = _weight_percent({"Si": 1, "O": 2})
            elif p == ALBITE:
                wt = _weight_percent({"Na": 1, "Al": 1, "Si": 3, "O": 8})
            elif p == MUSCOVITE:
                wt = _weight_percent({"K": 1, "Al": 3, "Si": 3, "O": 12, "H": 2})
            elif p == GARNET:
                xm = ss("garnet_mn", 1)
                wt = _weight_percent({"Fe": 3 * (1 - xm), "Mn": 3 * xm, "Al": 2, "Si": 3, "O": 12})
            elif p == BERYL:
                wt = _weight_percent({"Be": 3, "Al": 2, "Si": 6, "O": 18})
            elif p == COLUMBITE:
                xm, xt = ss("columbite_mn", 2), ss("columbite_ta", 3)
                wt = _weight_percent({"Fe": 1 - xm, "Mn": xm, "Nb": 2 * (1 - xt), "Ta": 2 * xt, "O": 6})
            else:
                xf, xn = ss("microlite_f", 4), ss("microlite_nb", 5)
                wt = _weight_percent({"Na": xf, "Ca": 2 - xf, "Ta": 2 * (1 - xn), "Nb": 2 * xn,
                                            "O": 7 - xf, "F": xf})
            vec = _vector(wt, m.size)
            for j, (el, lo, hi) in enumerate(MINOR_ELEMENTS[p]):
                vec[:, ALL_ELEMENTS.index(el)] += lo * (hi / lo) ** self._variation(kk, xx, yy, 50 + j)
            out[m] = 100.0 * vec / vec.sum(axis=1, keepdims=True)
        return out

    def spot_composition(self, x_um, y_um) -> SpotComposition:
        """Mixture ablated by a Gaussian-weighted crater centred on each point."""
        x = np.asarray(x_um, dtype=np.float64).ravel()
        y = np.asarray(y_um, dtype=np.float64).ravel()
        k = x.size
        r = 0.65 * self.crater_radius_um
        turn = 2 * np.pi * self._uniform(np.round(x * 8), np.round(y * 8), 400)
        angles = turn[:, None] + np.arange(6)[None, :] * (np.pi / 3)
        sx = np.concatenate([x[:, None], x[:, None] + r * np.cos(angles)], axis=1).ravel()
        sy = np.concatenate([y[:, None], y[:, None] + r * np.sin(angles)], axis=1).ravel()
        weights = np.array([0.34] + [0.11] * 6)
        phase, key = self._phase_and_key(sx, sy)
        wt = self.weight_percent(phase, key, sx, sy).reshape(k, 7, len(ALL_ELEMENTS))
        phase = phase.reshape(k, 7)
        phase_weights = np.zeros((k, len(self.phase_names)))
        for j in range(7):
            phase_weights[np.arange(k), phase[:, j]] += weights[j]
        mass = self.ablation[phase] * weights
        mixed_wt = (wt * mass[..., None]).sum(axis=1) / mass.sum(axis=1, keepdims=True)
        fractions = atom_fractions(mixed_wt)[:, :len(ELEMENTS)]
        return SpotComposition(
            atom_fraction=fractions.astype(np.float32),
            phase_weights=phase_weights,
            ablation=phase_weights @ self.ablation,
            temperature_factor=phase_weights @ self.temperature_factor,
            phase=phase[:, 0].astype(np.int16))

