"""Named transfer scenarios: which sample, which secondary spectrometer, how much
the test day differs, and the train / validation / test maps to simulate.

Each scenario writes three paired maps through :func:`sim.generate.generate_map`:
train and validation on day 0 over two regions of the sample, test on day 1 over
a third region (the paper's protocol). ``SCENARIOS`` is what the transfer
robustness suite iterates over::

    from sim.scenarios import SCENARIOS
    paths = SCENARIOS["basalt"].write_maps("maps/", scale=0.25)   # {"train": Path, "val": Path, "test": Path}
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from acquisition.store import PairedMapError, PairedMapReader
from sim.generate import generate_map, simulated_again
from sim.samples import SAMPLE_NAMES
from sim.scene import CALIBRATIONS, DAY_CHANGES
from sim.spectrograph import SECONDARY_VARIANTS

log = logging.getLogger(__name__)

ROLES = ("train", "val", "test")
#: Smallest side of a scaled map, rows and columns.
MIN_SIDE = 4


@dataclass(frozen=True)
class MapSpec:
    """One raster map: rows x columns, step, measurement day and stage position of spot (0, 0)."""

    shape: tuple[int, int]
    step_um: float
    day: int
    origin_um: tuple[float, float]

    @property
    def spots(self) -> int:
        return self.shape[0] * self.shape[1]

    def scaled(self, scale: float) -> "MapSpec":
        """The map with about ``scale`` times the spots (each side times sqrt(scale))."""
        side = math.sqrt(scale)
        ny, nx = (max(MIN_SIDE, int(round(n * side))) for n in self.shape)
        return replace(self, shape=(ny, nx))


@dataclass(frozen=True)
class Scenario:
    """A frozen description of one transfer scenario; :meth:`write_maps` simulates it."""

    name: str
    description: str
    sample: str = "pegmatite"            # sim.samples.SAMPLE_NAMES
    secondary: str = "standard"          # sim.spectrograph.SECONDARY_VARIANTS
    day_change: str = "mild"             # sim.scene.DAY_CHANGES (how the test day differs)
    calibration: str = "nominal"         # sim.scene.CALIBRATIONS (stored wavelength axes)
    train: MapSpec = MapSpec((100, 100), 40.0, 0, (0.0, 0.0))
    val: MapSpec = MapSpec((40, 60), 40.0, 0, (0.0, 24000.0))
    test: MapSpec = MapSpec((70, 70), 40.0, 1, (24000.0, 4000.0))
    seed: int = 1

    def __post_init__(self):
        for value, known, what in ((self.sample, SAMPLE_NAMES, "sample"),
                                   (self.secondary, tuple(SECONDARY_VARIANTS), "secondary variant"),
                                   (self.day_change, tuple(DAY_CHANGES), "day change"),
                                   (self.calibration, CALIBRATIONS, "calibration")):
            if value not in known:
                raise ValueError(f"scenario {self.name!r}: unknown {what} {value!r}; known: {', '.join(known)}")

    def maps(self, scale: float = 1.0, train_scale: float | None = None) -> dict[str, MapSpec]:
        """The train / val / test maps at this scale (scale multiplies the number of spots;
        ``train_scale``, if given, replaces it for the training map, e.g. 1.0 to keep a
        small paired map at its size in a quick run)."""
        scales = {role: scale for role in ROLES}
        if train_scale is not None:
            scales["train"] = train_scale
        for value in scales.values():
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"scale must be a positive number, got {value!r}")
        return {role: getattr(self, role).scaled(scales[role]) for role in ROLES}

    def settings(self, role: str, scale: float = 1.0, train_scale: float | None = None) -> dict:
        """Keyword arguments of :func:`sim.generate.generate_map` for one map."""
        spec = self.maps(scale, train_scale)[role]
        return {"shape": spec.shape, "step_um": spec.step_um, "day": spec.day, "origin_um": spec.origin_um,
                "seed": self.seed, "sample": self.sample, "secondary": self.secondary,
                "day_change": self.day_change, "calibration": self.calibration}

    def write_maps(self, out_dir, scale: float = 1.0, *, train_scale: float | None = None,
                   progress: bool = False, overwrite: bool = False) -> dict[str, Path]:
        """Simulate the train, val and test maps into ``out_dir``/<name>-<role>.h5.

        A complete file simulated with the same settings by this simulator is kept (the maps
        are deterministic: :func:`same_complete_map`); another file at that path is refused
        unless ``overwrite``.
        Returns {"train": path, "val": path, "test": path}.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for role in ROLES:
            path = out_dir / f"{self.name}-{role}.h5"
            settings = self.settings(role, scale, train_scale)
            if path.exists() and not overwrite:
                if not same_complete_map(path, settings):
                    raise FileExistsError(f"{path} exists and is not this scenario's complete {role} map "
                                          f"as this simulator writes it; remove it or pass overwrite=True")
                log.info("%s: kept (same settings, complete)", path)
            else:
                log.info("scenario %s: simulating %s map %s", self.name, role, settings["shape"])
                generate_map(path, progress=progress, overwrite=overwrite, **settings)
            paths[role] = path
        return paths


def same_complete_map(path: Path, settings: dict) -> bool:
    """Whether ``path`` holds the complete map :func:`sim.generate.generate_map` writes with
    ``settings`` (its keyword arguments) today: the settings stored in the file, and its first
    chunk simulated again bit for bit (a map of an earlier simulator version is not kept)."""
    try:
        with PairedMapReader(path) as reader:
            truth = reader.sample_truth or {}
            attrs = truth.get("attrs", {})
            layout = reader.layout
            complete = reader.n_acquired == layout.ny * layout.nx
    except (PairedMapError, OSError):
        return False
    expected = {"seed": settings["seed"], "day": settings["day"], "sample": settings["sample"],
                "secondary_variant": settings["secondary"], "day_change": settings["day_change"]}
    # files from before calibrations existed stored the factory axis
    attrs = {"calibration": "nominal", **attrs}
    expected["calibration"] = settings.get("calibration", "nominal")
    same = all(key in attrs and np.all(np.asarray(attrs[key]) == np.asarray(value))
               for key, value in expected.items())
    return (complete and same and tuple(layout.shape) == tuple(settings["shape"])
            and np.allclose(layout.step_um, settings["step_um"])
            and np.allclose(layout.origin_um, settings["origin_um"])
            and simulated_again(path))


def _standard(name, description, step_um=40.0, **kwargs) -> Scenario:
    """Train 100x100 (10 000 paired spectra) and validation 40x60 on day 0, test 70x70 on day 1."""
    maps = {"train": MapSpec((100, 100), step_um, 0, (0.0, 0.0)),
            "val": MapSpec((40, 60), step_um, 0, (0.0, 24000.0)),
            "test": MapSpec((70, 70), step_um, 1, (24000.0, 4000.0))}
    maps.update({k: kwargs.pop(k) for k in ROLES if k in kwargs})
    return Scenario(name=name, description=description, **maps, **kwargs)


#: 500 paired training spectra, as a lab that measures a small paired map.
FEW_TRAIN = MapSpec((20, 25), 40.0, 0, (0.0, 0.0))

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    _standard("pegmatite", "pegmatite, the paper's spectrometer pair, mild day change (today's bench)"),
    _standard("basalt", "basalt (plagioclase, augite, olivine, titanomagnetite, glass), 20 um steps",
              step_um=20.0, sample="basalt"),
    _standard("granite", "biotite granite (quartz, K-feldspar, oligoclase, biotite, magnetite), 60 um steps",
              step_um=60.0, sample="granite"),
    _standard("slag", "steelmaking slag (larnite, wustite, brownmillerite, lime, metal), 15 um steps",
              step_um=15.0, sample="slag"),
    _standard("pegmatite-narrow-hires", "pegmatite with a narrow high-resolution secondary (278-322 nm)",
              secondary="narrow-hires"),
    _standard("pegmatite-broad-lowres", "pegmatite with a broad low-resolution secondary (240-415 nm)",
              secondary="broad-lowres"),
    _standard("pegmatite-severe", "pegmatite, severe day change on the test day", day_change="severe"),
    _standard("pegmatite-few", "pegmatite with 500 paired training spectra (20x25)", train=FEW_TRAIN),
    _standard("basalt-few-severe", "basalt, 500 paired training spectra, severe day change", step_um=20.0,
              sample="basalt", day_change="severe", train=replace(FEW_TRAIN, step_um=20.0)),
    # the two severe scenarios again, in a lab that calibrates both spectrometers' wavelength axes each day
    _standard("pegmatite-severe-calibrated", "pegmatite-severe, both wavelength axes calibrated on the test day",
              day_change="severe", calibration="daily"),
    _standard("basalt-few-severe-calibrated", "basalt-few-severe, both wavelength axes calibrated on the test day",
              step_um=20.0, sample="basalt", day_change="severe", calibration="daily",
              train=replace(FEW_TRAIN, step_um=20.0)),
)}


def scenario(name: str) -> Scenario:
    """The named scenario; raises ValueError naming the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None
