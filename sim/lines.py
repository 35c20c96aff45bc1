"""Atomic data for the plasma model: the line table, ionisation energies,
partition functions and atomic masses.

Sources are those of ``reference/libs-physics.md``: NIST ionisation energies,
Barklem & Collet (2016) partition functions at 8000 K and 10 000 K. Between and
around those two temperatures U(T) is taken as a power law, which is smooth and
positive over the 0.4-2.5 eV range the plasma model visits.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Emitting elements, in the order used for composition vectors.
ELEMENTS = ("Si", "Al", "Na", "K", "Ca", "Mg", "Fe", "Mn", "Li", "Be",
            "Rb", "Cs", "Nb", "Ta", "Ti", "Sn")
#: Atoms without lines in 245-407 nm; they count for the atom budget only.
SILENT_ELEMENTS = ("O", "H", "F")
ALL_ELEMENTS = ELEMENTS + SILENT_ELEMENTS

ATOMIC_MASS = {
    "Si": 28.085, "Al": 26.982, "Na": 22.990, "K": 39.098, "Ca": 40.078,
    "Mg": 24.305, "Fe": 55.845, "Mn": 54.938, "Li": 6.94, "Be": 9.012,
    "Rb": 85.468, "Cs": 132.905, "Nb": 92.906, "Ta": 180.948, "Ti": 47.867,
    "Sn": 118.71, "O": 15.999, "H": 1.008, "F": 18.998,
}

#: First and second ionisation energies, eV (NIST).
IONISATION_EV = {
    "Li": (5.392, 75.64), "Be": (9.323, 18.21), "Na": (5.139, 47.29),
    "Mg": (7.646, 15.04), "Al": (5.986, 18.83), "Si": (8.151, 16.35),
    "K": (4.341, 31.63), "Ca": (6.113, 11.87), "Mn": (7.434, 15.64),
    "Fe": (7.902, 16.19), "Rb": (4.177, 27.29), "Nb": (6.759, 14.32),
    "Sn": (7.344, 14.63), "Cs": (3.894, 23.16), "Ta": (7.549, 16.2),
    "Ti": (6.828, 13.58),
}

#: Partition functions (neutral, singly ionised) at 8000 K and 10 000 K,
#: Barklem & Collet 2016. The alkali neutrals are replaced by truncated values
#: (2-4): the tabulated sums run over Rydberg levels that ionisation-potential
#: lowering removes in a LIBS plasma (libs-physics.md section 2 caveat).
PARTITION_8K_10K = {
    "Si": ((10.50, 11.36), (5.80, 5.87)),
    "Al": ((6.19, 7.05), (1.01, 1.04)),
    "Na": ((2.3, 2.6), (1.00, 1.00)),
    "K": ((2.8, 3.3), (1.00, 1.00)),
    "Ca": ((2.60, 5.70), (2.92, 3.56)),
    "Mg": ((1.21, 1.64), (2.01, 2.04)),
    "Li": ((2.70, 3.87), (1.00, 1.00)),
    "Be": ((1.18, 1.41), (2.02, 2.06)),
    "Ti": ((55.3, 83.2), (72.4, 83.7)),
    "Mn": ((9.82, 15.35), (10.71, 14.56)),
    "Fe": ((42.8, 59.7), (56.5, 66.9)),
    "Nb": ((94.2, 132.7), (72.3, 93.5)),
    "Ta": ((38.1, 59.5), (42.5, 57.2)),
    "Sn": ((7.09, 8.37), (3.86, 4.18)),
    "Cs": ((3.2, 3.9), (1.00, 1.00)),
    "Rb": ((3.0, 3.6), (1.00, 1.00)),
}
#: Doubly ionised stages only act as a sink in the Saha balance; U = 1 is the
#: closed-shell value and within a factor 2 for the others (documented).
PARTITION_III = 1.0

LINE_TABLE_PATH = Path(__file__).with_name("data") / "lines.csv"

K_B_EV_PER_K = 8.617333e-5
#: 2 (2 pi m_e k T / h^2)^(3/2) at T = 1 eV, in cm^-3 (libs-physics.md section 3).
SAHA_CONSTANT_CM3 = 6.04e21


@dataclass(frozen=True)
class LineTable:
    """Columns of ``sim/data/lines.csv`` as arrays, one entry per line."""

    element: np.ndarray          # str
    ion_stage: np.ndarray        # int, 1 = neutral
    wavelength_nm: np.ndarray    # air
    a_ki: np.ndarray             # s^-1
    e_lower_ev: np.ndarray
    e_upper_ev: np.ndarray
    g_lower: np.ndarray
    g_upper: np.ndarray
    stark_fwhm_nm: np.ndarray    # at n_e = 1e17 cm^-3
    quality: np.ndarray          # str

    def __len__(self) -> int:
        return len(self.wavelength_nm)

    @property
    def element_index(self) -> np.ndarray:
        """Index into :data:`ELEMENTS` for every line."""
        return np.array([ELEMENTS.index(e) for e in self.element])

    def labels(self) -> list[str]:
        roman = {1: "I", 2: "II"}
        return [f"{e} {roman[int(s)]} {w:.2f}" for e, s, w in
                zip(self.element, self.ion_stage, self.wavelength_nm)]

    def find(self, element: str, ion_stage: int, wavelength_nm: float,
             tolerance_nm: float = 0.02) -> int:
        """Index of a tabulated line; raises KeyError naming the line if absent."""
        hit = np.flatnonzero((self.element == element) & (self.ion_stage == ion_stage)
                             & (np.abs(self.wavelength_nm - wavelength_nm) <= tolerance_nm))
        if hit.size == 0:
            raise KeyError(f"no line {element} {ion_stage} near {wavelength_nm} nm in the line table")
        return int(hit[np.argmin(np.abs(self.wavelength_nm[hit] - wavelength_nm))])


@lru_cache(maxsize=1)
def load_lines() -> LineTable:
    """The project's line table (comment lines start with '#')."""
    text = LINE_TABLE_PATH.read_text(encoding="utf-8")
    rows = list(csv.DictReader(line for line in text.splitlines() if not line.startswith("#")))
    unknown = sorted({r["element"] for r in rows} - set(ELEMENTS))
    if unknown:
        raise ValueError(f"sim/data/lines.csv has elements without atomic data: {unknown}")

    def column(name, dtype):
        return np.array([r[name] for r in rows]).astype(dtype)

    return LineTable(
        element=column("element", str), ion_stage=column("ion_stage", int),
        wavelength_nm=column("wavelength_air_nm", float), a_ki=column("Aki_s-1", float),
        e_lower_ev=column("Ei_eV", float), e_upper_ev=column("Ek_eV", float),
        g_lower=column("gi", float), g_upper=column("gk", float),
        stark_fwhm_nm=column("stark_fwhm_nm", float), quality=column("quality", str))


def _power_law(pair):
    u8, u10 = pair
    return u8, np.log(u10 / u8) / np.log(10000.0 / 8000.0)


#: (U at 8000 K, exponent) for the neutral and ionised stage of each element.
_U_FIT = np.array([[_power_law(PARTITION_8K_10K[e][0]), _power_law(PARTITION_8K_10K[e][1])]
                   for e in ELEMENTS])            # [n_el, 2 stages, (u8, p)]
_T8_EV = 8000.0 * K_B_EV_PER_K


def partition_functions(t_ev: np.ndarray) -> np.ndarray:
    """U for every element and stage: shape t_ev.shape + (n_elements, 2)."""
    t = np.clip(np.asarray(t_ev, dtype=np.float32), 0.3, 3.0)[..., None, None] / _T8_EV
    return (_U_FIT[..., 0] * t ** _U_FIT[..., 1]).astype(np.float32)


def ionisation_energies() -> np.ndarray:
    """[n_elements, 2] first and second ionisation energy, eV."""
    return np.array([IONISATION_EV[e] for e in ELEMENTS])


def atom_fractions(weight_percent: np.ndarray) -> np.ndarray:
    """Convert wt% over :data:`ALL_ELEMENTS` (last axis) to atom-number fractions."""
    masses = np.array([ATOMIC_MASS[e] for e in ALL_ELEMENTS])
    moles = np.asarray(weight_percent) / masses
    return moles / moles.sum(axis=-1, keepdims=True)
