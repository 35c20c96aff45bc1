"""LIBS plasma emission: Saha-Boltzmann populations in a cooling, expanding
plume, integrated over a detector gate, with a Kramers continuum and an
escape-factor approximation of self-absorption.

Everything is vectorised over a chunk of shots ``k`` and over the lines ``L``.
Intensities are photons per shot up to one overall constant that the
spectrograph model turns into counts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from sim.lines import (ATOMIC_MASS, PARTITION_III, SAHA_CONSTANT_CM3, LineTable, ionisation_energies,
                       load_lines, partition_functions)
from sim.sample import SpotComposition

#: hc in eV nm
HC_EV_NM = 1239.84193
#: Nodes of the coarse grid the continuum is evaluated on (nm); the
#: spectrographs interpolate it onto their pixels.
CONTINUUM_NM = np.linspace(236.0, 416.0, 13)
#: Continuum photons per nm at n_e = 1e17 cm^-3, T = 1 eV, per unit of ablated atoms. In the
#: default 1-11 us gate this leaves the continuum at ~1 % of the strongest lines' peaks (at 404 nm,
#: where it is highest): libs-physics.md s.6 gives a few % at 0.5-2 us and, quoting Noll, far less
#: at 0.7 eV. Three times more than this buried the K I 404 nm doublet in continuum shot noise.
CONTINUUM_PHOTONS = 1.0e5
#: Gauss-Legendre nodes per gate in log(time).
GATE_NODES = 8
#: Earliest plasma time considered (the laser pulse is at t = 0, 5 ns long).
T_MIN_S = 0.2e-9


@dataclass(frozen=True)
class PlasmaConditions:
    """Plume evolution and shot-to-shot spread; a ``day`` changes some of them.

    T(t) = t_1us * ((t + t_offset)/1 us)^-t_exponent,
    n_e(t) = ne_1us * ((t + t_offset)/1 us)^-ne_exponent,
    emitting atoms ~ (1 - exp(-t/rise)) exp(-t/lifetime).
    """

    t_1us_ev: float = 0.95            # libs-physics.md s.4: 0.7-1.1 eV at 0.5-2 us
    t_exponent: float = 0.22          # 2.0 eV at 0 ns, 0.6 eV at 10 us
    ne_1us_cm3: float = 1.0e17        # s.4: 2e16-2e17 cm^-3
    ne_exponent: float = 1.0          # 3e18 at 0 ns, 1e16 at 10 us
    t_offset_s: float = 30e-9
    rise_s: float = 3e-9
    lifetime_s: float = 12e-6
    t_spread: float = 0.035           # shot-to-shot relative spread of T
    ne_spread: float = 0.10           # ... of n_e (log)
    mass_spread: float = 0.15         # ... of ablated mass (log); s.7: single-shot RSD 5-20 %
    continuum_scale: float = 1.0      # relative continuum strength (day-dependent focus)
    tau_scale: float = 0.4            # optical depth constant of the self-absorption model

    def with_day(self, t_factor: float, ne_factor: float, continuum_factor: float) -> "PlasmaConditions":
        return replace(self, t_1us_ev=self.t_1us_ev * t_factor, ne_1us_cm3=self.ne_1us_cm3 * ne_factor,
                       continuum_scale=self.continuum_scale * continuum_factor)


@dataclass(frozen=True)
class ShotFluctuations:
    """Per-shot factors common to both spectrometers (same plasma)."""

    t_factor: np.ndarray
    ne_factor: np.ndarray
    mass: np.ndarray


@dataclass(frozen=True)
class Emission:
    """Gate-integrated emission of a chunk of shots."""

    lines: np.ndarray        # float32 [k, L] photons per line (self-absorption applied)
    ne_eff_cm3: np.ndarray   # [k] emission-weighted electron density in the gate
    t_eff_ev: np.ndarray     # [k] emission-weighted temperature in the gate
    continuum: np.ndarray    # float32 [k, len(CONTINUUM_NM)] photons per nm
    optical_depth: np.ndarray  # float32 [k, L] line-centre optical depth at (t_eff, ne_eff)


def _standard_gumbel(rng: np.random.Generator, k: int) -> np.ndarray:
    """Zero-mean, unit-variance Gumbel (GEV with shape 0): skewed to the right."""
    return (rng.gumbel(size=k) - 0.5772157) / 1.2825498


def gate_nodes(delay_s: float, width_s: float, n: int = GATE_NODES):
    """Times and weights for integrating over [delay, delay + width] after the pulse.

    Gauss-Legendre in log(t), since everything evolves as powers of t. A gate
    that closes before the pulse gets no nodes.
    """
    if not (np.isfinite(delay_s) and np.isfinite(width_s)) or width_s <= 0:
        raise ValueError(f"gate needs a finite delay and a positive width, got ({delay_s}, {width_s}) s")
    start, stop = max(delay_s, T_MIN_S), delay_s + width_s
    if stop <= start:
        return np.zeros(0), np.zeros(0)
    x, w = np.polynomial.legendre.leggauss(n)
    a, b = np.log(start), np.log(stop)
    t = np.exp(0.5 * (b - a) * x + 0.5 * (b + a))
    return t, 0.5 * (b - a) * w * t


class PlasmaModel:
    def __init__(self, conditions: PlasmaConditions = PlasmaConditions(), lines: LineTable | None = None):
        self.conditions = conditions
        self.lines = lines if lines is not None else load_lines()
        lt = self.lines
        self._species = (lt.element_index * 2 + (lt.ion_stage - 1)).astype(np.intp)
        self._element = lt.element_index
        self._e_upper = lt.e_upper_ev.astype(np.float32)
        self._e_lower = lt.e_lower_ev.astype(np.float32)
        self._emission_coef = (lt.g_upper * lt.a_ki).astype(np.float32)
        lam = lt.wavelength_nm / 300.0
        self._absorption_coef = (lt.g_upper * lt.a_ki * 1e-8 * lam ** 4).astype(np.float32)
        self._chi = ionisation_energies().astype(np.float32)        # [E, 2]
        self._stark = lt.stark_fwhm_nm.astype(np.float32)
        # Doppler FWHM at 1 eV, nm (heavy-particle temperature = T)
        mass = np.array([ATOMIC_MASS[e] for e in lt.element])
        self._doppler_1ev = (lt.wavelength_nm * 7.16e-7 * np.sqrt(11604.5 / mass)).astype(np.float32)

    # -- fluctuations ---------------------------------------------------------------
    def draw_fluctuations(self, k: int, rng: np.random.Generator) -> ShotFluctuations:
        c = self.conditions
        # Gumbel (GEV, shape 0) factors with the long tail towards weak, cold shots; the
        # pulse energy / coupling term makes mass, T and n_e fluctuate together.
        energy, z_t, z_ne = (-_standard_gumbel(rng, k) for _ in range(3))
        z_m = rng.standard_normal(k)                 # crater-to-crater ablation: symmetric in log
        return ShotFluctuations(
            t_factor=np.clip(1.0 + c.t_spread * (0.5 * energy + 0.87 * z_t), 0.7, 1.4),
            ne_factor=np.exp(c.ne_spread * (0.6 * energy + 0.8 * z_ne)),
            mass=np.exp(c.mass_spread * (0.7 * energy + 0.71 * z_m)))

    # -- plume state -------------------------------------------------------------
    def temperature_ev(self, t_s):
        c = self.conditions
        return c.t_1us_ev * ((np.asarray(t_s) + c.t_offset_s) / 1e-6) ** -c.t_exponent

    def electron_density_cm3(self, t_s):
        c = self.conditions
        return c.ne_1us_cm3 * ((np.asarray(t_s) + c.t_offset_s) / 1e-6) ** -c.ne_exponent

    def envelope(self, t_s):
        c = self.conditions
        t = np.asarray(t_s)
        return -np.expm1(-t / c.rise_s) * np.exp(-t / c.lifetime_s)

    def _stage_populations(self, t_ev: np.ndarray, ne: np.ndarray) -> np.ndarray:
        """Saha balance over I, II, III: (stage fraction / U) for I and II, shape [..., E, 2]."""
        u = partition_functions(t_ev)                              # [..., E, 2]
        t = t_ev[..., None].astype(np.float32)
        base = (SAHA_CONSTANT_CM3 * t ** 1.5 / ne[..., None]).astype(np.float32)
        s1 = base * (u[..., 1] / u[..., 0]) * np.exp(-self._chi[:, 0] / t)
        s2 = base * (PARTITION_III / u[..., 1]) * np.exp(-self._chi[:, 1] / t)
        f1 = 1.0 / (1.0 + s1 + s1 * s2)
        return np.stack([f1 / u[..., 0], s1 * f1 / u[..., 1]], axis=-1)

    # -- emission ---------------------------------------------------------------------
    def emit(self, composition: SpotComposition, fluctuations: ShotFluctuations,
             gate: tuple[float, float]) -> Emission:
        k = len(composition.ablation)
        n_lines = len(self.lines)
        t_nodes, w_nodes = gate_nodes(*gate)
        if t_nodes.size == 0:
            zeros = np.zeros((k, n_lines), np.float32)
            return Emission(zeros, np.full(k, np.nan), np.full(k, np.nan),
                            np.zeros((k, CONTINUUM_NM.size), np.float32), zeros)
        weight = (w_nodes * self.envelope(t_nodes)).astype(np.float32)          # [J]
        t_shot = (fluctuations.t_factor * composition.temperature_factor).astype(np.float32)
        temp = self.temperature_ev(t_nodes).astype(np.float32)[None, :] * t_shot[:, None]     # [k, J]
        ne = self.electron_density_cm3(t_nodes)[None, :] * fluctuations.ne_factor[:, None]  # [k, J]
        atoms = (fluctuations.mass * composition.ablation).astype(np.float32)             # [k]

        pop = self._stage_populations(temp, ne).reshape(k, len(t_nodes), -1)    # [k, J, 2E]
        pop *= weight[None, :, None]
        per_line = np.exp(self._e_upper[None, None, :] * (-1.0 / temp)[:, :, None])  # [k, J, L]
        per_line *= pop[:, :, self._species]
        amount = composition.atom_fraction[:, self._element] * atoms[:, None]    # [k, L]
        per_line *= (amount * self._emission_coef)[:, None, :]
        thin = per_line.sum(axis=1)                                              # [k, L]

        # emission-weighted plume state; a gate after the plume has died keeps the node mean
        by_time = per_line.sum(axis=2, dtype=np.float64) + 1e-300                # [k, J]
        norm = by_time.sum(axis=1)
        ne_eff = (by_time * ne).sum(axis=1) / norm
        t_eff = (by_time * temp).sum(axis=1) / norm
        tau = self._optical_depth(amount, t_eff.astype(np.float32), ne_eff)
        escape = np.where(tau > 1e-4, -np.expm1(-tau) / np.maximum(tau, 1e-4), 1.0 - 0.5 * tau)
        continuum = self._continuum(temp, ne, weight, atoms)
        return Emission(lines=(thin * escape).astype(np.float32), ne_eff_cm3=ne_eff, t_eff_ev=t_eff,
                        continuum=continuum, optical_depth=tau.astype(np.float32))

    def _optical_depth(self, amount, t_eff, ne_eff):
        """tau ~ g_k A lambda^4 n_stage exp(-E_i/T) / (U * line width)."""
        pop = self._stage_populations(t_eff, ne_eff).reshape(len(t_eff), -1)[:, self._species]
        lower = pop * np.exp(-self._e_lower[None, :] / t_eff[:, None])
        width = (self._stark[None, :] * (ne_eff[:, None] / 1e17)
                 + self._doppler_1ev[None, :] * np.sqrt(t_eff[:, None]))
        return self.conditions.tau_scale * amount * lower * self._absorption_coef / width

    def _continuum(self, temp, ne, weight, atoms):
        """Kramers free-free + free-bound: volume emissivity ~ n_e^2 T^-1/2 lambda^-2 e^(-hc/lambda kT)
        [1 + (1 - e^(-hc/lambda kT))]; over a quasi-neutral plume of N atoms that is ~ N n_e (...)."""
        x = (HC_EV_NM / CONTINUUM_NM)[None, None, :] / temp[:, :, None]      # [k, J, m]
        boltz = np.exp(-x)
        shape = boltz * (2.0 - boltz) / (CONTINUUM_NM / 300.0)[None, None, :] ** 2
        scale = (ne / 1e17) / np.sqrt(temp) * weight[None, :]
        cont = (shape * scale[:, :, None]).sum(axis=1) * atoms[:, None]
        return (self.conditions.continuum_scale * CONTINUUM_PHOTONS * cont).astype(np.float32)
