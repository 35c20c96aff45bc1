"""The simulated bench: emulated instruments on real transports, joined by one clock.

``SimulatedBench`` starts a DG645 emulator on a loopback TCP socket and the
Big Sky laser and Zaber stage emulators on pseudo-terminals, so the real
drivers talk to them through pyvisa exactly as to the instruments. The two
spectrometers are simulated in process (``bench.spectrometer("primary")``),
as a real one sits behind a vendor SDK rather than a wire.

Physics of one delay-generator cycle (T0 at time t)
    The laser is wired to the flashlamp and Q-switch outputs and sees their
    rising edges; it emits if it can fire (flashlamp and Q-switch running in
    external mode, shutter open, no interlock) and the Q-switch edge comes
    50 µs-1 ms after the flashlamp edge. The plasma is the scene's shot at
    the stage position at the pulse. Each armed spectrometer is gated by its
    own output (e.g. EF opens at E, closes at F), so its gate counted from the
    pulse is E - C for Q-switch output CD. A gate that closes before the pulse
    sees a dark frame, one that opens at the pulse mostly continuum, one with
    no pulse (F <= E) does not trigger its spectrometer at all. An output
    whose high level (offset + amplitude) stays below 1 V is not seen; an
    inverted output (LPOL 0) rises at the end of its pulse. Frames carry t as
    timestamp; ``fired`` records (shot id = cycle count since the bench
    started, t, x, y) of every pulse that reached the sample.

Clock modes
    ``realtime=True``: wall time. Internal-rate triggers and bursts run as the
    clock passes them; a background thread processes them every couple of ms,
    and every command first catches up, so nothing happens out of order.
    ``realtime=False`` (as fast as possible): a virtual clock that stands still
    until someone waits, then jumps to the next event:

    * a spectrometer read that needs frames runs the clock through the
      scheduled cycles (internal rate, burst) that bring them -- up to the
      ``max_frames`` asked for -- rendering all those shots in one batch; with
      nothing scheduled it gives other threads a few ms of wall time to send
      a trigger, then lets its timeout pass (virtually) and raises;
    * ``*TRG`` while the generator is still busy waits (virtually) for it to
      be free, where the instrument would have ignored it (real time does);
    * a stage move completes when the client polls the moving stage (each
      axis, then again, with nothing else in between): the clock jumps to
      the move's end, processing the cycles on the way;
    * nothing else moves time, so commands take no virtual time.

Talk to the emulators through their transports (the drivers): every command
then takes the bench lock first. Tests may call emulator hooks that do not
call back into the bench (``laser_emulator.set_interlock``) directly.

Faults (:class:`BenchFaults`): lost and garbled replies on the three links,
missed spectrometer triggers, stage stalls (per axis move), and the laser
interlock opening at a given shot; all drawn from the bench seed. For faults at
a known place, tests call ``miss_triggers(shot_ids)`` (every spectrometer
misses those shots) and ``stage_emulator.inject_stall_at(axis, x_um)``.
"""

from __future__ import annotations

import logging
import threading

from sim.bench.clock import RealTimeClock, VirtualClock
from sim.bench.engine import BenchEngine, FiredShot
from sim.bench.faults import BenchFaults
from sim.bench.links import BenchLink, StageLink, link_rng
from sim.bench.spectrometer_server import SpectrometerServer
from sim.bench.spectrometers import SimulatedSpectrometer
from sim.bench.timing import BenchWiring
from sim.emulators.bigsky import BigSkyEmulator
from sim.emulators.dg645 import DG645Emulator
from sim.emulators.transports import LinkFaults, PtyLineServer, TcpLineServer
from sim.emulators.zaber import ZaberEmulator

log = logging.getLogger(__name__)

X_AXIS, Y_AXIS = (1, 1), (2, 1)
DEFAULT_RATE_HZ = 1000.0
QSWITCH_DELAY_S = 150e-6


class SimulatedBench:
    """Context manager: ``with SimulatedBench(seed=1) as bench: ...`` starts and stops it all."""

    def __init__(self, *, seed: int = 0, day: int = 0, realtime: bool = False,
                 faults: BenchFaults | str = BenchFaults(), wiring: BenchWiring = BenchWiring(),
                 scene=None, calibration: str = "nominal") -> None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"SimulatedBench seed must be an integer >= 0, got {seed!r}")
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise ValueError(f"SimulatedBench day must be an integer >= 0, got {day!r}")
        self.seed, self.day, self.realtime = seed, day, bool(realtime)
        self.faults = BenchFaults.from_string(faults) if isinstance(faults, str) else faults
        self.wiring = wiring
        self._scene = scene
        self.calibration = calibration       # sim.scene.CALIBRATIONS: the axes the spectrometers report
        self._servers: dict[str, object] = {}
        self._spectrometer_server: SpectrometerServer | None = None
        self._spectrometers: dict[str, SimulatedSpectrometer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.engine: BenchEngine | None = None

    # ---------------------------------------------------------- lifecycle
    def start(self) -> "SimulatedBench":
        if self.engine is not None:
            raise RuntimeError("the simulated bench is already started")
        if self._scene is None:
            from sim.scene import PairedScene
            self._scene = PairedScene(seed=self.seed, day=self.day, calibration=self.calibration)
        self.clock = RealTimeClock() if self.realtime else VirtualClock()
        self.delay_generator_emulator = DG645Emulator(clock=self.clock)
        self.laser_emulator = BigSkyEmulator(clock=self.clock)
        self.stage_emulator = ZaberEmulator(clock=self.clock, devices=2, axes_per_device=1)
        engine = BenchEngine(clock=self.clock, scene=self._scene,
                             delay_generator=self.delay_generator_emulator,
                             laser=self.laser_emulator, stage=self.stage_emulator,
                             wiring=self.wiring, faults=self.faults, seed=self.seed,
                             x_axis=X_AXIS, y_axis=Y_AXIS)
        self.engine = engine
        links = {
            "delay_generator": BenchLink(self.delay_generator_emulator, engine, role="delay_generator"),
            "laser": BenchLink(self.laser_emulator, engine, role="laser"),
            "stage": StageLink(self.stage_emulator, engine, axes=(X_AXIS, Y_AXIS),
                               stall_probability=self.faults.stall, rng=link_rng(self.seed, 99)),
        }
        self.stage_link = links["stage"]
        try:
            for i, (name, link) in enumerate(links.items()):
                faults = LinkFaults(no_reply=self.faults.timeout, garble=self.faults.garbled,
                                    rng=link_rng(self.seed, i))
                server_type = TcpLineServer if name == "delay_generator" else PtyLineServer
                self._servers[name] = server_type(link, faults).start()
            self._spectrometer_server = SpectrometerServer(self).start()
            if self.realtime:
                self._thread = threading.Thread(target=engine.run_realtime, args=(self._stop,),
                                                name="bench-realtime", daemon=True)
                self._thread.start()
        except BaseException:
            self.stop()
            raise
        log.info("simulated bench started (%s time, seed %d, day %d, faults %s): %s",
                 "real" if self.realtime else "virtual", self.seed, self.day,
                 self.faults.to_string() or "none", self.resources)
        return self

    def stop(self) -> None:
        """Stop serving; idempotent. Spectrometers are closed, recorded ground truth stays."""
        self._stop.set()
        if self.engine is not None:
            with self.engine.lock:
                self.engine.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for server in self._servers.values():
            server.stop()
        if self._spectrometer_server is not None:
            self._spectrometer_server.stop()
            self._spectrometer_server = None
        for spec in list(self._spectrometers.values()):
            spec.close()

    def __enter__(self) -> "SimulatedBench":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -------------------------------------------------------------- access
    def _started(self) -> BenchEngine:
        if self.engine is None:
            raise RuntimeError("the simulated bench is not started (use it as a context manager)")
        return self.engine

    @property
    def scene(self):
        return self._scene

    @property
    def resources(self) -> dict[str, str]:
        """pyvisa resource strings of the delay generator, laser and stage."""
        self._started()
        return {name: server.resource for name, server in self._servers.items()}

    @property
    def spectrometer_resource(self) -> str:
        """Where other processes reach the simulated spectrometers (drivers.sim_spectrometer)."""
        self._started()
        return self._spectrometer_server.resource

    @property
    def systems(self) -> tuple[str, ...]:
        return tuple(self.wiring.gates)

    def spectrometer(self, system: str) -> SimulatedSpectrometer:
        """The simulated spectrometer of ``system``; the same object until it is closed."""
        engine = self._started()
        if system not in self.wiring.gates:
            raise ValueError(f"no spectrometer {system!r} on this bench "
                             f"(wired: {', '.join(self.wiring.gates)})")
        with engine.lock:
            spec = engine.spectrometers.get(system)
            if spec is None:
                spec = SimulatedSpectrometer(engine, system, serial=f"SIM{self.seed:03d}-{system}")
                engine.spectrometers[system] = spec
                self._spectrometers[system] = spec
            return spec

    @property
    def fired(self) -> list[FiredShot]:
        """Every laser pulse that reached the sample: (shot_id, t, x_um, y_um), in time order."""
        engine = self._started()
        with engine.lock:
            return list(engine.fired)

    def fired_since(self, start: int) -> list[FiredShot]:
        """The pulses after the first ``start`` of :attr:`fired` (to follow them without copying all)."""
        engine = self._started()
        with engine.lock:
            return engine.fired[start:]

    @property
    def laser_safe_count(self) -> int:
        """How many times the laser was made safe (shutter closed with emission stopped)."""
        self._started()
        return self.laser_emulator.safe_events

    def miss_triggers(self, shot_ids) -> None:
        """Every spectrometer misses the trigger of these shots (ids as in :attr:`fired`): a fault
        at a known place, for tests."""
        engine = self._started()
        with engine.lock:
            engine.missed_by_all.update(int(i) for i in shot_ids)

    def fault_log(self) -> dict:
        """What the fault injection actually did so far (and ``*TRG`` refused while busy, real time)."""
        engine = self._started()
        with engine.lock:
            links = {name: {"timeouts": s.faults.lost, "garbled": s.faults.garbled}
                     for name, s in self._servers.items()}
            return {"missed_triggers": list(engine.missed_triggers),
                    "ignored_triggers": engine.schedule.ignored_triggers,
                    "stalls": list(self.stage_link.stalls),
                    "interlock_opened_at_shot": engine.interlock_opened_at,
                    "links": links}

    def config_toml(self, *, rate_hz: float = DEFAULT_RATE_HZ) -> str:
        """A bench config (docs/architecture.md format) for this bench's resources and wiring."""
        from sim.scene import DEFAULT_GATES
        resources = self.resources
        travel = [[0.0, self.stage_emulator.axes[a].limit_max * self.stage_emulator.microstep_um]
                  for a in (X_AXIS, Y_AXIS)]
        lines = [
            f"# Simulated bench (seed {self.seed}, day {self.day}, "
            f"{'real' if self.realtime else 'virtual'} time); valid while it runs.",
            "[delay_generator]", 'driver = "dg645"', f'resource = "{resources["delay_generator"]}"', "",
            "[laser]", 'driver = "bigsky"', f'resource = "{resources["laser"]}"', "",
            "[stage]", 'driver = "zaber"', f'resource = "{resources["stage"]}"',
            f"travel_um = [[{travel[0][0]!r}, {travel[0][1]!r}], [{travel[1][0]!r}, {travel[1][1]!r}]]", "",
            "[timing]", f"rate_hz = {float(rate_hz)!r}",
            f'flashlamp_output = "{self.wiring.flashlamp}"', f'qswitch_output = "{self.wiring.qswitch}"',
            f"qswitch_delay_s = {QSWITCH_DELAY_S!r}",
        ]
        for system, output in self.wiring.gates.items():
            delay, width = DEFAULT_GATES.get(system, (1e-6, 10e-6))
            lines += ["", f"[systems.{system}]", 'driver = "sim"',
                      f'resource = "{self.spectrometer_resource}"', f'gate_output = "{output}"',
                      f"gate_delay_s = {float(delay)!r}", f"gate_width_s = {float(width)!r}"]
        return "\n".join(lines) + "\n"


__all__ = ["SimulatedBench", "X_AXIS", "Y_AXIS"]
