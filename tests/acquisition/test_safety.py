"""Every exit path makes the laser safe first, stops the stage, and leaves a truthful, readable file."""

from __future__ import annotations

import os
import signal

import pytest

from acquisition.mapping import acquire_map
from acquisition.safety import AcquisitionAborted
from acquisition.store import validate
from drivers.bigsky import BigSkyLaser
from drivers.errors import InstrumentError, LaserInterlockError
from tests.acquisition.conftest import (FrameTap, assert_matches_fired, assert_spectra_are_the_shots,
                                        scan, small_map)
from tests.fixtures.emulated import bench_config

class CommandOrder:
    """The order in which the laser and the stage received their commands (emulator hooks)."""

    def __init__(self, bench) -> None:
        self.log: list[tuple[str, str]] = []
        bench.laser_emulator.on_command = lambda record: self.log.append(("laser", record.command.lstrip(">")))
        bench.stage_emulator.on_command = lambda record: self.log.append(("stage", record.command))

    def first_index(self, device: str, predicate, start: int = 0) -> int:
        return next(i for i, (d, command) in enumerate(self.log)
                    if i >= start and d == device and predicate(command))


def assert_laser_safe(bench) -> None:
    assert bench.laser_safe_count >= 1
    with BigSkyLaser(bench.resources["laser"], timeout_s=0.5) as laser:
        status = laser.status
        assert not status.emitting and status.flashlamp.name == "STOP"
        assert laser.shutter_open is False


def assert_truthful_file(path, bench, settings, tap) -> int:
    validate(path)
    acquired = assert_matches_fired(path, bench.fired, settings)
    assert_spectra_are_the_shots(path, tap)
    return acquired


def assert_laser_made_safe_before_stage_stopped(order: CommandOrder, after: int = 0) -> None:
    laser_stop = order.first_index("laser", lambda c: c == "SQ", after)
    shutter = order.first_index("laser", lambda c: c == "R0", after)
    stage_stop = order.first_index("stage", lambda c: c.endswith(" stop"), after)
    assert laser_stop < shutter < stage_stop, order.log[after:]


def test_normal_end(tmp_path, make_bench):
    bench = make_bench(seed=2)
    tap, order = FrameTap(bench), CommandOrder(bench)
    settings = small_map()

    summary = acquire_map(tmp_path / "map.h5", settings, bench_config(bench), bench=bench, show_progress=False)

    assert summary.complete
    assert_laser_made_safe_before_stage_stopped(order, after=order.first_index("laser", lambda c: c == "PQ"))
    assert_laser_safe(bench)
    assert assert_truthful_file(tmp_path / "map.h5", bench, settings, tap) == 30


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_map(tmp_path, make_bench, signum):
    bench = make_bench(seed=3)
    tap, order = FrameTap(bench), CommandOrder(bench)
    settings = small_map(shape=(10, 5))
    sent = []

    def signal_after_ten(iy, ix, shot_id, spectra):
        if len(sent) == 0 and shot_id >= 9:
            sent.append(len(order.log))
            os.kill(os.getpid(), signum)

    with pytest.raises(AcquisitionAborted) as stopped:
        acquire_map(tmp_path / "map.h5", settings, bench_config(bench), bench=bench, on_spot=signal_after_ten,
                    show_progress=False)

    assert stopped.value.signal_name == signum.name
    assert stopped.value.exit_code == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert_laser_made_safe_before_stage_stopped(order, after=sent[0])
    assert_laser_safe(bench)
    acquired = assert_truthful_file(tmp_path / "map.h5", bench, settings, tap)
    assert 10 <= acquired < 50
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_lost_instrument_raises_after_making_the_laser_safe(tmp_path, make_bench):
    bench = make_bench(seed=4)
    tap, order = FrameTap(bench), CommandOrder(bench)
    settings = small_map(shape=(10, 5), mode="step")

    def unplug_spectrometer(iy, ix, shot_id, spectra):
        if shot_id == 12:
            bench.spectrometer("secondary").close()

    with pytest.raises(InstrumentError, match="closed"):
        acquire_map(tmp_path / "map.h5", settings, bench_config(bench), bench=bench, on_spot=unplug_spectrometer,
                    show_progress=False)

    assert_laser_made_safe_before_stage_stopped(order, after=order.first_index("laser", lambda c: c == "PQ"))
    assert_laser_safe(bench)
    acquired = assert_truthful_file(tmp_path / "map.h5", bench, settings, tap)
    assert 13 <= acquired < 50
    assert not scan(tmp_path / "map.h5")["acquired"].all()


# Rows of 400 at 1 kHz are read out in chunks of 100: the laser stops in the third.
@pytest.mark.parametrize("shape, interlock_at", [((6, 5), 17), ((2, 400), 250)])
def test_interlock_stops_the_map_with_every_pulse_recorded(tmp_path, make_bench, shape, interlock_at):
    bench = make_bench(seed=5, faults=f"interlock-at={interlock_at}")
    tap, order = FrameTap(bench), CommandOrder(bench)
    settings = small_map(shape=shape)

    with pytest.raises(LaserInterlockError, match="external_interlock"):
        acquire_map(tmp_path / "map.h5", settings, bench_config(bench), bench=bench, show_progress=False)

    assert len(bench.fired) == interlock_at
    assert_laser_made_safe_before_stage_stopped(order, after=order.first_index("laser", lambda c: c == "PQ"))
    assert_laser_safe(bench)
    assert assert_truthful_file(tmp_path / "map.h5", bench, settings, tap) == interlock_at
