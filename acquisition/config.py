"""Bench configuration (TOML) and acquisition settings, parsed and checked up front.

Everything here is checked before any instrument is opened, so that a bad config
fails before the laser could fire, with a message naming the section and key.
The vocabulary (driver names, DG645 output names) is configuration, not protocol:
the drivers own what goes on the wire.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from acquisition.shared import cli as shared_cli
from acquisition.shared.errors import ConfigError
from acquisition.shared.systems import SYSTEM_NAMES
from acquisition.store.layout import ORDERS

DELAY_GENERATOR_DRIVERS = ("dg645",)
LASER_DRIVERS = ("bigsky",)
STAGE_DRIVERS = ("zaber",)
SPECTROMETER_DRIVERS = ("sim", "seabreeze")
DELAY_OUTPUTS = ("AB", "CD", "EF", "GH")
MODES = ("step", "fly")


@dataclass(frozen=True)
class InstrumentConfig:
    driver: str
    resource: str
    timeout_s: float | None = None


@dataclass(frozen=True)
class StageConfig(InstrumentConfig):
    # ((x_min, x_max), (y_min, y_max)) in µm, the usable travel of the stage.
    travel_um: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 100_000.0), (0.0, 100_000.0))
    settle_s: float = 0.0
    # Run-up before the first spot of a fly row, so the stage is at speed when shooting starts.
    run_up_um: float | None = None


@dataclass(frozen=True)
class TimingConfig:
    rate_hz: float
    flashlamp_output: str = "AB"
    qswitch_output: str = "CD"
    qswitch_delay_s: float = 150e-6
    trigger_width_s: float = 10e-6


@dataclass(frozen=True)
class SystemConfig:
    name: str
    driver: str
    gate_output: str
    gate_delay_s: float
    gate_width_s: float
    resource: str | None = None


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class BenchConfig:
    delay_generator: InstrumentConfig
    laser: InstrumentConfig
    stage: StageConfig
    timing: TimingConfig
    systems: tuple[SystemConfig, ...]
    source: str = ""

    def system(self, name: str) -> SystemConfig:
        for system in self.systems:
            if system.name == name:
                return system
        raise ConfigError(f"{self.source}: system {name!r} is not configured "
                          f"(configured: {', '.join(s.name for s in self.systems)})")

    def to_dict(self) -> dict[str, Any]:
        """The config as a TOML-shaped document (parse_config reads it back)."""
        out = asdict(self)
        out.pop("source")
        systems = out.pop("systems")
        doc = {section: _without_none(values) for section, values in out.items()}
        doc["systems"] = {s.pop("name"): _without_none(s) for s in systems}
        return doc

    def timing_dict(self) -> dict[str, Any]:
        """What a resumed map must share with the one it continues: shot timing and gates."""
        doc = self.to_dict()
        return {"timing": doc["timing"],
                "systems": {name: {k: v for k, v in s.items() if k not in ("driver", "resource")}
                            for name, s in doc["systems"].items()}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class AcquisitionSettings:
    """What a map is acquired with; stored in the file so that resume needs nothing else."""

    shape: tuple[int, int]               # (ny, nx)
    step_um: tuple[float, float]         # (dx, dy), like every position
    origin_um: tuple[float, float] = (0.0, 0.0)   # (x0, y0) of spot (0, 0)
    order: str = "snake"
    mode: str = "fly"
    rate_hz: float | None = None         # None: the config's timing.rate_hz
    shots: int = 1                       # step mode: shots averaged per spot
    systems: tuple[str, ...] = SYSTEM_NAMES
    max_reshots: int = 5                 # extra shots of a spot shot at rest when a system missed one
    retries: int = 3                     # instrument timeouts/garbled replies tolerated per command
    sim: bool = False
    realtime: bool = False
    seed: int = 0
    day: int = 0
    sim_faults: str = ""
    title: str = ""
    sample_name: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AcquisitionSettings":
        raw = json.loads(text)
        for key in ("shape", "step_um", "origin_um", "systems"):
            if key in raw:
                raw[key] = tuple(raw[key])
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"stored acquisition settings have unknown keys: {sorted(unknown)}")
        return validate_settings(cls(**raw))

    @property
    def n_spots(self) -> int:
        return self.shape[0] * self.shape[1]


def _require(table: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    return table[key]


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} "
                          f"(allowed: {', '.join(sorted(allowed))})")


def _number(value: Any, where: str, *, positive: bool = False, non_negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    if non_negative and value < 0:
        raise ConfigError(f"{where}: must be >= 0, got {value!r}")
    return float(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {value!r}")
    return value.strip()


def _driver(table: Mapping[str, Any], where: str, known: tuple[str, ...]) -> str:
    driver = _string(_require(table, "driver", where), f"{where}.driver")
    if driver not in known:
        raise ConfigError(f"{where}.driver: unknown instrument driver {driver!r} "
                          f"(known: {', '.join(known)})")
    return driver


def _output(value: Any, where: str) -> str:
    name = _string(value, where).upper()
    if name not in DELAY_OUTPUTS:
        raise ConfigError(f"{where}: unknown delay-generator output {value!r} "
                          f"(outputs: {', '.join(DELAY_OUTPUTS)})")
    return name


def _instrument(raw: Mapping[str, Any], name: str, known: tuple[str, ...],
                extra: set[str] = frozenset()) -> tuple[Mapping[str, Any], dict[str, Any]]:
    where = f"[{name}]"
    table = _require(raw, name, "config")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    _check_keys(table, {"driver", "resource", "timeout_s"} | set(extra), where)
    fields = {"driver": _driver(table, where, known),
              "resource": _string(_require(table, "resource", where), f"{where}.resource")}
    if "timeout_s" in table:
        fields["timeout_s"] = _number(table["timeout_s"], f"{where}.timeout_s", positive=True)
    return table, fields


def _travel(value: Any, where: str) -> tuple[tuple[float, float], tuple[float, float]]:
    try:
        (x0, x1), (y0, y1) = value
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected [[x_min, x_max], [y_min, y_max]] in µm, got {value!r}") from None
    limits = tuple((_number(a, where), _number(b, where)) for a, b in ((x0, x1), (y0, y1)))
    for axis, (lo, hi) in zip("xy", limits):
        if hi <= lo:
            raise ConfigError(f"{where}: {axis} travel max {hi} is not above min {lo}")
    return limits  # type: ignore[return-value]


def parse_config(raw: Mapping[str, Any], source: str = "config") -> BenchConfig:
    """Build a checked BenchConfig from a parsed TOML document."""
    _check_keys(raw, {"delay_generator", "laser", "stage", "timing", "systems"}, source)
    _, dg = _instrument(raw, "delay_generator", DELAY_GENERATOR_DRIVERS)
    _, laser = _instrument(raw, "laser", LASER_DRIVERS)
    stage_table, stage = _instrument(raw, "stage", STAGE_DRIVERS, {"travel_um", "settle_s", "run_up_um"})
    if "travel_um" in stage_table:
        stage["travel_um"] = _travel(stage_table["travel_um"], "[stage].travel_um")
    if "settle_s" in stage_table:
        stage["settle_s"] = _number(stage_table["settle_s"], "[stage].settle_s", non_negative=True)
    if "run_up_um" in stage_table:
        stage["run_up_um"] = _number(stage_table["run_up_um"], "[stage].run_up_um", non_negative=True)

    timing_table = _require(raw, "timing", "config")
    _check_keys(timing_table, {"rate_hz", "flashlamp_output", "qswitch_output", "qswitch_delay_s",
                               "trigger_width_s"}, "[timing]")
    timing = TimingConfig(
        rate_hz=_number(_require(timing_table, "rate_hz", "[timing]"), "[timing].rate_hz", positive=True),
        flashlamp_output=_output(timing_table.get("flashlamp_output", "AB"), "[timing].flashlamp_output"),
        qswitch_output=_output(timing_table.get("qswitch_output", "CD"), "[timing].qswitch_output"),
        qswitch_delay_s=_number(timing_table.get("qswitch_delay_s", 150e-6), "[timing].qswitch_delay_s",
                                non_negative=True),
        trigger_width_s=_number(timing_table.get("trigger_width_s", 10e-6), "[timing].trigger_width_s",
                                positive=True),
    )

    systems_table = _require(raw, "systems", "config")
    if not isinstance(systems_table, Mapping) or not systems_table:
        raise ConfigError("[systems]: expected at least one [systems.<name>] table")
    systems = []
    for name, table in systems_table.items():
        where = f"[systems.{name}]"
        if name not in SYSTEM_NAMES:
            raise ConfigError(f"{where}: unknown system {name!r} (systems: {', '.join(SYSTEM_NAMES)})")
        _check_keys(table, {"driver", "resource", "gate_output", "gate_delay_s", "gate_width_s"}, where)
        delay = _number(_require(table, "gate_delay_s", where), f"{where}.gate_delay_s")
        if delay < 0:
            raise ConfigError(f"{where}.gate_delay_s = {delay:g} s: the gate opens before the laser fires "
                              "(the delay is counted from the laser pulse and must be >= 0)")
        systems.append(SystemConfig(
            name=name,
            driver=_driver(table, where, SPECTROMETER_DRIVERS),
            gate_output=_output(_require(table, "gate_output", where), f"{where}.gate_output"),
            gate_delay_s=delay,
            gate_width_s=_number(_require(table, "gate_width_s", where), f"{where}.gate_width_s", positive=True),
            resource=_string(table["resource"], f"{where}.resource") if "resource" in table else None,
        ))

    outputs = [("[timing].flashlamp_output", timing.flashlamp_output),
               ("[timing].qswitch_output", timing.qswitch_output)]
    outputs += [(f"[systems.{s.name}].gate_output", s.gate_output) for s in systems]
    seen: dict[str, str] = {}
    for where, output in outputs:
        if output in seen:
            raise ConfigError(f"{where}: output {output} is already wired to {seen[output]}")
        seen[output] = where

    _check_cycle_fits(timing, systems, timing.rate_hz, "[timing].rate_hz")
    return BenchConfig(InstrumentConfig(**dg), InstrumentConfig(**laser), StageConfig(**stage),
                       timing, tuple(systems), source=source)


def _check_cycle_fits(timing: TimingConfig, systems, rate_hz: float, where: str) -> None:
    """Every gate must close before the next shot's flashlamp trigger."""
    period = 1.0 / rate_hz
    for s in systems:
        end = timing.qswitch_delay_s + s.gate_delay_s + s.gate_width_s
        if end >= period:
            raise ConfigError(f"{where} = {rate_hz:g} Hz: the gate of {s.name} ends {end:g} s after the "
                              f"flashlamp trigger, beyond the shot period {period:g} s")


def load_config(path: str | Path) -> BenchConfig:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_shape(text: str) -> tuple[int, int]:
    """'30x40' -> (ny, nx) = (30, 40): rows by columns (the shared --shape parser, as a ConfigError)."""
    try:
        return shared_cli.parse_shape(text)
    except ValueError as exc:
        raise ConfigError(f"--{exc}") from None


def parse_pair(text: str, what: str) -> tuple[float, float]:
    """'40' -> (40, 40); '20,40' -> (20, 40): (x, y), as every position."""
    try:
        return shared_cli.parse_pair(text, what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def validate_settings(settings: AcquisitionSettings, config: BenchConfig | None = None) -> AcquisitionSettings:
    """Check settings alone and, given the bench config, against it (systems, rate)."""
    ny, nx = settings.shape
    if ny < 1 or nx < 1:
        raise ConfigError(f"map shape {settings.shape}: both sizes must be >= 1")
    if any(not math.isfinite(s) or s <= 0 for s in settings.step_um):
        raise ConfigError(f"step {settings.step_um} µm: steps must be > 0")
    if settings.order not in ORDERS:
        raise ConfigError(f"order {settings.order!r}: expected one of {', '.join(ORDERS)}")
    if settings.mode not in MODES:
        raise ConfigError(f"mode {settings.mode!r}: expected one of {', '.join(MODES)}")
    if settings.rate_hz is not None and not (math.isfinite(settings.rate_hz) and settings.rate_hz > 0):
        raise ConfigError(f"rate {settings.rate_hz!r} Hz: must be > 0")
    if settings.shots < 1:
        raise ConfigError(f"shots {settings.shots}: must be >= 1")
    if settings.shots > 1 and settings.mode == "fly":
        raise ConfigError("--shots > 1 needs --mode step (fly mode takes one shot per spot)")
    if not settings.systems:
        raise ConfigError("no systems selected")
    if len(set(settings.systems)) != len(settings.systems):
        raise ConfigError(f"systems {','.join(settings.systems)}: a system is named twice")
    for name in settings.systems:
        if name not in SYSTEM_NAMES:
            raise ConfigError(f"unknown system {name!r} (systems: {', '.join(SYSTEM_NAMES)})")
        if config is not None:
            config.system(name)
    if config is not None:
        _check_cycle_fits(config.timing, [config.system(name) for name in settings.systems],
                          settings_rate(settings, config), "rate")
    return settings


def settings_rate(settings: AcquisitionSettings, config: BenchConfig) -> float:
    return settings.rate_hz or config.timing.rate_hz


__all__ = [
    "AcquisitionSettings", "BenchConfig", "ConfigError", "InstrumentConfig", "StageConfig",
    "SystemConfig", "TimingConfig", "load_config", "parse_config",
    "parse_pair", "parse_shape", "settings_rate", "validate_settings",
]
