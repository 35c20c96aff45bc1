"""The simulated paired bench: one plasma per shot, seen by two spectrometers.

Both systems share the sample, the laser shot, and so the plasma (ablated
mass, temperature, electron density). Each system's fibre sees a slightly
different part of the plume, which shows as a small per-shot, per-system tilt
of the Saha-Boltzmann distribution (line ratios) and of the intensity; the
detector noise is independent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace

import numpy as np

from acquisition.shared.systems import SYSTEM_NAMES
from sim.lines import ionisation_energies
from sim.plasma import PlasmaConditions, PlasmaModel
from sim.sample import PegmatiteSample
from sim.spectrograph import DESIGNS, InstrumentDrift, Spectrograph, secondary_design

#: system -> (gate delay after the laser pulse, gate width), seconds
DEFAULT_GATES: dict[str, tuple[float, float]] = {"primary": (1.0e-6, 10e-6), "secondary": (1.0e-6, 10e-6)}

#: Per-shot differences between the two fibres' views of the plume.
VIEW_TEMPERATURE_SPREAD = 0.006     # relative, per system and shot
VIEW_INTENSITY_SPREAD = 0.03        # log, per system and shot
VIEW_CONTINUUM_SPREAD = 0.05        # log, per system and shot
#: Saha-Boltzmann reference energy of the view tilt, eV
_VIEW_REFERENCE_EV = 5.0


@dataclass(frozen=True)
class DayChange:
    """Ranges of what a measurement day changes (each drawn from the day number)."""

    intensity: tuple = (1.05, 1.2)          # factor or its inverse: laser energy, focus
    temperature: tuple = (0.96, 1.04)       # T_1us factor
    density: tuple = (0.85, 1.15)           # n_e factor
    continuum: tuple = (1.3, 1.8)           # factor or its inverse
    shift_px: tuple = (0.05, 0.2)           # wavelength drift at the detector centre, either sign
    stretch_px: float = 0.1                 # extra drift at the ends, uniform in +-
    fwhm: tuple = (1.0, 1.06)               # resolution factor
    dark_counts: tuple = (80.0, 200.0)      # dark-offset change, either sign
    stray: tuple = (1.5, 2.5)               # scattered-light factor or its inverse
    stray_tilt: float = 0.6


#: "mild" is the bench as the paper saw it between sessions; "severe" is a bench that was
#: moved or serviced: realigned fibres, refocused spectrometers, another laser energy.
DAY_CHANGES = {
    "mild": DayChange(),
    "severe": DayChange(intensity=(1.3, 1.6), temperature=(0.90, 1.10), density=(0.65, 1.5),
                        continuum=(2.0, 3.0), shift_px=(0.6, 1.5), stretch_px=0.5, fwhm=(1.15, 1.35),
                        dark_counts=(200.0, 400.0), stray=(2.5, 4.0), stray_tilt=1.0),
}


def day_change(severity: str) -> DayChange:
    try:
        return DAY_CHANGES[severity]
    except KeyError:
        raise ValueError(f"unknown day-change severity {severity!r}; known: {', '.join(DAY_CHANGES)}") from None


@dataclass(frozen=True)
class DayConditions:
    """Everything a measurement day changes. Day 0 is the nominal bench."""

    day: int
    intensity: float = 1.0                       # laser energy, focus: both systems
    plasma: PlasmaConditions = PlasmaConditions()
    drift: dict[str, InstrumentDrift] = field(default_factory=lambda: {s: InstrumentDrift() for s in SYSTEM_NAMES})

    @classmethod
    def for_day(cls, day: int, severity: str = "mild") -> "DayConditions":
        """Deterministic drifts of day ``day`` (independent of the sample seed); ``severity``
        names the ranges (:data:`DAY_CHANGES`). The draws depend on the day only, so a
        severe day changes the same way as the mild one, by more."""
        if not isinstance(day, (int, np.integer)) or day < 0:
            raise ValueError(f"day must be a non-negative integer, got {day!r}")
        change = day_change(severity)
        if day == 0:
            return cls(day=0)
        rng = np.random.default_rng([0x6461, int(day)])

        def away_from_one(lo, hi):
            """A factor in [lo, hi] or its inverse: every other day differs noticeably."""
            f = rng.uniform(lo, hi)
            return f if rng.random() < 0.5 else 1.0 / f

        plasma = PlasmaConditions().with_day(t_factor=rng.uniform(*change.temperature),
                                             ne_factor=rng.uniform(*change.density),
                                             continuum_factor=away_from_one(*change.continuum))
        drift = {}
        for system in SYSTEM_NAMES:
            drift[system] = InstrumentDrift(
                shift_px=rng.choice([-1, 1]) * rng.uniform(*change.shift_px),
                stretch_px=rng.uniform(-change.stretch_px, change.stretch_px),
                fwhm_scale=rng.uniform(*change.fwhm),
                dark_shift_counts=rng.choice([-1, 1]) * rng.uniform(*change.dark_counts),
                stray_scale=away_from_one(*change.stray),
                stray_tilt=rng.uniform(-change.stray_tilt, change.stray_tilt))
        return cls(day=int(day), intensity=away_from_one(*change.intensity), plasma=plasma, drift=drift)


#: How the stored wavelength axes are calibrated: "nominal" keeps the factory axis every day
#: (a lab that never recalibrates: the light drifts under a fixed axis); "daily" stores the
#: axis a wavelength calibration on the day gives (e.g. a Hg-Ar lamp before the map).
CALIBRATIONS = ("nominal", "daily")


class PairedScene:
    """Simulated paired acquisition on one day over one sample."""

    def __init__(self, *, seed: int = 0, day: int = 0, sample: PegmatiteSample | None = None,
                 secondary: str = "standard", day_change: str = "mild", calibration: str = "nominal"):
        """``sample``: any sample object (default: the pegmatite of this seed); ``secondary``:
        a name in :data:`sim.spectrograph.SECONDARY_VARIANTS`; ``day_change``: a severity
        in :data:`DAY_CHANGES`; ``calibration``: one of :data:`CALIBRATIONS`."""
        if calibration not in CALIBRATIONS:
            raise ValueError(f"unknown calibration {calibration!r}; known: {', '.join(CALIBRATIONS)}")
        self.calibration = calibration
        self.seed = int(seed)
        self.day = int(day)
        self.sample = sample if sample is not None else PegmatiteSample(self.seed)
        self.secondary_variant = secondary
        self.day_change = day_change
        self.conditions = DayConditions.for_day(self.day, day_change)
        self.plasma = PlasmaModel(self.conditions.plasma)
        designs = {"primary": DESIGNS["primary"], "secondary": secondary_design(secondary)}
        self._spectrographs = {s: Spectrograph(designs[s], self.conditions.drift[s], self.plasma.lines)
                               for s in SYSTEM_NAMES}
        self._rng = np.random.default_rng([self.seed, self.day, 0x5C0E])
        lt = self.plasma.lines
        chi = ionisation_energies()[lt.element_index, 0]
        # Saha-Boltzmann energy scale: an ion line behaves as if its level sat chi higher
        self._view_energy = (lt.e_upper_ev + np.where(lt.ion_stage > 1, chi, 0.0)
                             - _VIEW_REFERENCE_EV).astype(np.float32)

    def spectrograph(self, system: str) -> Spectrograph:
        try:
            return self._spectrographs[system]
        except KeyError:
            raise ValueError(f"unknown system {system!r}; expected one of {SYSTEM_NAMES}") from None

    def with_drift(self, system: str, drift: InstrumentDrift) -> "PairedScene":
        """This day's scene with ``system`` drifted as ``drift`` (e.g. as it was on another
        day). Sample, plasma, laser and the other spectrometer stay, and so do the random
        draws of a shot: with the same generator both scenes see the same plasmas with the
        same noise, which separates what one spectrometer's drift alone does to a map."""
        changed = copy.copy(self)
        old = self.spectrograph(system)
        changed._spectrographs = {**self._spectrographs, system: Spectrograph(old.design, drift, old.lines)}
        changed.conditions = replace(self.conditions, drift={**self.conditions.drift, system: drift})
        return changed

    def wavelengths(self, system: str) -> np.ndarray:
        """The axis stored with this day's spectra (see :data:`CALIBRATIONS`)."""
        spectrograph = self.spectrograph(system)
        axis = spectrograph.calibrated_wavelengths if self.calibration == "daily" else spectrograph.wavelengths
        return axis.copy()

    def _gates(self, gates) -> dict[str, tuple[float, float]]:
        merged = dict(DEFAULT_GATES)
        for system, gate in (gates or {}).items():
            self.spectrograph(system)
            delay, width = (float(v) for v in gate)
            if not (np.isfinite(delay) and np.isfinite(width) and width > 0):
                raise ValueError(f"gate of {system!r} must be (delay_s, width_s) with width > 0, got {gate!r}")
            merged[system] = (delay, width)
        return merged

    def shots(self, x_um, y_um, *, gates=None, fired=True, rng=None) -> dict[str, np.ndarray]:
        """One plasma per (x, y); float32 counts [k, n] for each system."""
        rng = self._rng if rng is None else rng
        x = np.atleast_1d(np.asarray(x_um, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y_um, dtype=np.float64))
        if x.shape != y.shape or x.ndim != 1:
            raise ValueError(f"x_um and y_um must be 1-D and of equal length, got {x.shape} and {y.shape}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError("x_um and y_um must be finite")
        k = x.size
        fired = np.asarray(fired, dtype=bool)
        if fired.ndim > 1 or fired.size not in (1, k):
            raise ValueError(f"fired must be a bool or one bool per shot ({k}), got shape {fired.shape}")
        fired = np.broadcast_to(fired.reshape(-1) if fired.ndim else fired, (k,))
        gates = self._gates(gates)
        if k == 0:
            return {s: np.zeros((0, self._spectrographs[s].design.pixels), np.float32) for s in SYSTEM_NAMES}

        composition = self.sample.spot_composition(x, y)
        fluctuations = self.plasma.draw_fluctuations(k, rng)
        emissions = {}
        out = {}
        for system in SYSTEM_NAMES:
            gate = gates[system]
            if gate not in emissions:
                emissions[gate] = self.plasma.emit(composition, fluctuations, gate)
            emission = emissions[gate]
            view_t = (VIEW_TEMPERATURE_SPREAD * rng.standard_normal(k)).astype(np.float32)
            view_i = np.exp(VIEW_INTENSITY_SPREAD * rng.standard_normal(k)).astype(np.float32)
            view_c = np.exp(VIEW_CONTINUUM_SPREAD * rng.standard_normal(k)).astype(np.float32)
            scale = np.float32(self.conditions.intensity) * view_i * fired
            with np.errstate(invalid="ignore"):
                tilt = np.nan_to_num(view_t / emission.t_eff_ev.astype(np.float32))
            lines = emission.lines * np.exp(tilt[:, None] * self._view_energy[None, :])
            lines *= scale[:, None]
            continuum = emission.continuum * (scale * view_c)[:, None]
            stark_x = np.nan_to_num(emission.ne_eff_cm3 / 1e17, nan=1.0)
            spectrograph = self._spectrographs[system]
            signal = spectrograph.render(lines, stark_x, continuum)
            out[system] = spectrograph.detect(signal, rng)
        return out

    def dark(self, system: str, k: int, rng=None) -> np.ndarray:
        """Frames with no plasma: dark offset, fixed pattern and read noise."""
        if k < 0:
            raise ValueError(f"number of dark frames must be >= 0, got {k}")
        return self.spectrograph(system).dark(int(k), self._rng if rng is None else rng)
