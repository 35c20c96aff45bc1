"""The rig: the instruments a map needs, opened from the bench config, and the shot timing.

Opening and identifying every instrument happens before anything is armed, so
an unknown driver or an unreachable resource fails before the laser can fire.
The shot timing (laser trigger, Q-switch, each spectrometer's gate) is set on
the delay generator as absolute delays after T0, read back, and the error queue
drained; what was read back is what the map file records.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from acquisition.config import BenchConfig, ConfigError, InstrumentConfig
from acquisition.safety import retry
from drivers.bigsky import BigSkyLaser
from drivers.dg645 import DG645, TriggerSource
from drivers.errors import InstrumentError, InstrumentTimeout, ProtocolError
from drivers.spectrometer import Spectrometer
from drivers.zaber import ZaberXYStage

log = logging.getLogger(__name__)

# Stage polling while waiting for a move: short, because every poll costs a row's dead time.
STAGE_POLL_S = 0.001
OUTPUT_AMPLITUDE_V = 5.0


class RigError(ConfigError):
    """An instrument named in the config cannot be opened or identified."""


@dataclass
class Rig:
    delay_generator: DG645
    laser: BigSkyLaser
    stage: ZaberXYStage
    spectrometers: dict[str, Spectrometer]
    identity: dict[str, dict[str, Any]] = field(default_factory=dict)

    def close(self) -> list[tuple[str, BaseException]]:
        """Close every instrument, laser first; return what failed (each is still tried)."""
        errors = []
        for name, instrument in (("laser", self.laser), ("delay generator", self.delay_generator),
                                 ("stage", self.stage), *self.spectrometers.items()):
            try:
                instrument.close()
            except Exception as exc:  # every instrument must get its close()
                errors.append((name, exc))
                log.error("closing %s failed: %s", name, exc)
        return errors


def _open(what: str, where: str, section: InstrumentConfig, factory, **kwargs):
    timeout = {} if section.timeout_s is None else {"timeout_s": section.timeout_s}
    try:
        return factory(section.resource, **timeout, **kwargs)
    except InstrumentError as exc:
        raise RigError(f"{where}.resource {section.resource!r}: the {what} is unreachable: {exc}") from exc


def _spectrometer(config: BenchConfig, system: str, bench) -> Spectrometer:
    section = config.system(system)
    where = f"[systems.{system}]"
    if section.driver == "sim":
        if bench is not None:
            return bench.spectrometer(system)      # the bench runs in this process (--sim)
        if not section.resource:
            raise RigError(f"{where}.driver = 'sim' needs the simulated bench: --sim, or resource = "
                           "\"tcp://HOST:PORT\" of a running `libs-sim bench --write-config FILE`")
        from drivers.sim_spectrometer import BenchSpectrometer

        try:
            return BenchSpectrometer(system, section.resource)
        except InstrumentError as exc:
            raise RigError(f"{where}.resource {section.resource!r}: {exc}") from exc
    if section.driver == "seabreeze":
        from drivers.seabreeze_adapter import SeabreezeSpectrometer

        try:
            return SeabreezeSpectrometer(system, section.resource)
        except (InstrumentError, ImportError, OSError) as exc:
            raise RigError(f"{where}: seabreeze spectrometer {section.resource or '(first found)'} "
                           f"is unreachable: {exc}") from exc
    raise RigError(f"{where}.driver: unknown instrument driver {section.driver!r}")


def _ask(where: str, what: str, query, attempts: int):
    try:
        return retry(query, f"identifying the {what}", attempts=attempts,
                     exceptions=(InstrumentTimeout, ProtocolError))
    except InstrumentError as exc:
        raise RigError(f"{where}: the {what} does not answer: {exc}") from exc


def open_rig(config: BenchConfig, systems: tuple[str, ...], bench=None,
             before_laser: Callable[[dict], None] | None = None, attempts: int = 4) -> Rig:
    """Open and identify every instrument, the laser last; on any failure close what was opened.

    ``before_laser(identity)`` runs once the delay generator, stage and
    spectrometers answered, so checks against them fail before the laser has
    received a single command.
    """
    opened: list = []
    try:
        dg = _open("delay generator", "[delay_generator]", config.delay_generator, DG645)
        opened.append(dg)
        identity = {"delay_generator": {"idn": _ask("[delay_generator]", "delay generator", lambda: dg.idn,
                                                      attempts)}}
        stage = _open("stage", "[stage]", config.stage, ZaberXYStage, poll_interval_s=STAGE_POLL_S)
        opened.append(stage)
        travel = _ask("[stage]", "stage", lambda: stage.travel_um, attempts)
        identity["stage"] = {"travel_um": [list(axis) for axis in travel]}
        spectrometers = {}
        for system in systems:
            spec = spectrometers[system] = _spectrometer(config, system, bench)
            opened.append(spec)
            identity[system] = {"model": str(spec.model), "serial": str(spec.serial), "pixels": int(spec.pixels)}
        if before_laser is not None:
            before_laser(identity)
        laser = _open("laser", "[laser]", config.laser, BigSkyLaser)
        opened.append(laser)
        identity["laser"] = {"serial_number": str(_ask("[laser]", "laser", lambda: laser.serial_number, attempts))}
        return Rig(dg, laser, stage, spectrometers, identity)
    except BaseException:
        for instrument in reversed(opened):
            try:
                instrument.close()
            except Exception as exc:  # the original failure is what the user must see
                log.warning("closing %s after a failed start: %s", type(instrument).__name__, exc)
        raise


def channel_times(config: BenchConfig, systems: tuple[str, ...]) -> dict[str, float]:
    """Delay-generator channel -> time after T0 (s) for every output the map uses.

    An output "XY" is a pulse from channel X to channel Y. The flashlamp fires at
    T0, the Q-switch (the laser pulse) qswitch_delay_s later, and each gate opens
    gate_delay_s after the laser pulse for gate_width_s.
    """
    timing = config.timing
    pulse = timing.qswitch_delay_s
    times = {}
    pulses = [(timing.flashlamp_output, 0.0, timing.trigger_width_s),
              (timing.qswitch_output, pulse, timing.trigger_width_s)]
    pulses += [(config.system(s).gate_output, pulse + config.system(s).gate_delay_s,
                config.system(s).gate_width_s) for s in systems]
    for output, start, width in pulses:
        times[output[0]] = start
        times[output[1]] = start + width
    return times


def configure_timing(rig: Rig, config: BenchConfig, systems: tuple[str, ...], rate_hz: float,
                     transient: Callable) -> dict[str, Any]:
    """Program the shot timing, check the error queue, and return the read-back for the file.

    ``transient(action, what)`` runs one instrument call with retries, so a
    lost or garbled reply costs one command again, not the whole sequence.
    The generator is left in single-shot burst mode: nothing fires until the
    map triggers a burst (one per fly row, or the shots of one step-mode spot).
    """
    dg = rig.delay_generator

    def put(name: str, value) -> None:
        transient(lambda: setattr(dg, name, value), f"setting the delay generator's {name}")

    put("trigger_source", TriggerSource.SINGLE_SHOT)
    put("burst_mode", True)
    put("burst_t0_first_only", False)
    put("burst_period_s", 1.0 / rate_hz)
    put("burst_delay_s", 0.0)
    put("burst_count", 1)
    wanted = channel_times(config, systems)
    for channel, t in sorted(wanted.items()):
        transient(lambda: dg.set_delay(channel, "T0", t), f"setting delay channel {channel}")
    outputs = [config.timing.flashlamp_output, config.timing.qswitch_output,
               *(config.system(s).gate_output for s in systems)]
    for output in outputs:
        transient(lambda: dg.set_output(output, amplitude_v=OUTPUT_AMPLITUDE_V, offset_v=0.0, polarity="positive"),
                  f"setting output {output}")
    transient(lambda: dg.check_errors("shot timing"), "checking the delay generator's error queue")
    readback = {channel: transient(lambda: dg.get_delay(channel), f"reading delay channel {channel}")
                for channel in wanted}
    for channel, t in wanted.items():
        reference, delay = readback[channel]
        if reference != "T0" or abs(delay - t) > 1e-9:
            raise InstrumentError(f"delay generator channel {channel} reads back {reference}{delay:+.12f} s, "
                                  f"set T0{t:+.12f} s")
    record = {
        "idn": rig.identity.get("delay_generator", {}).get("idn", ""),
        "trigger_source": "single shot (burst per trigger)",
        "burst_period_s": float(transient(lambda: dg.burst_period_s, "reading the burst period")),
        "rate_hz": float(rate_hz),
        "flashlamp_output": config.timing.flashlamp_output,
        "qswitch_output": config.timing.qswitch_output,
        "qswitch_delay_s": config.timing.qswitch_delay_s,
        "trigger_width_s": config.timing.trigger_width_s,
        "output_amplitude_v": OUTPUT_AMPLITUDE_V,
    }
    for channel, (reference, delay) in sorted(readback.items()):
        record[f"channel_{channel}"] = f"{reference}{delay:+.12f}"
    for system in systems:
        record[f"gate_output_{system}"] = config.system(system).gate_output
    return record


def prepare_spectrometer(spec: Spectrometer, config: BenchConfig, system: str) -> dict[str, Any]:
    section = config.system(system)
    spec.trigger_mode = "external-edge"
    spec.gate_delay_s = section.gate_delay_s
    spec.gate_width_s = section.gate_width_s
    return {
        "model": str(spec.model), "serial": str(spec.serial), "pixels": int(spec.pixels),
        "gate_delay_s": float(section.gate_delay_s), "gate_width_s": float(section.gate_width_s),
        "gate_output": section.gate_output, "trigger_mode": "external-edge",
        "saturation_level": float(spec.saturation_level), "driver": section.driver,
    }
