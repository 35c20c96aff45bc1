"""Zaber XY stage driver against the Zaber emulator over a pseudo-terminal."""

from __future__ import annotations

import pytest

from drivers.errors import InstrumentConnectionError, InstrumentTimeout, ProtocolError, StageFault, StageRejected
from drivers.zaber import DEFAULT_MICROSTEP_UM, ZaberXYStage
from sim.emulators.transports import PtyLineServer
from sim.emulators.zaber import DEFAULT_MICROSTEP_UM as EMULATED_MICROSTEP_UM, ZaberEmulator
from tests.fixtures.manual_commands import ZABER as LEGAL, illegal


def sent(emulator):
    return [record.command for record in emulator.command_log]


def test_defaults_agree_between_driver_and_emulator():
    assert DEFAULT_MICROSTEP_UM == EMULATED_MICROSTEP_UM


def test_move_poll_and_read_back(stage, stage_emulator, stage_clock):
    stage.move_to(1000.0, 2500.0, wait=False)
    assert stage.busy
    stage_clock.advance(60.0)
    stage.wait_idle(timeout_s=1.0)
    x, y = stage.position_um
    assert x == pytest.approx(1000.0, abs=DEFAULT_MICROSTEP_UM)
    assert y == pytest.approx(2500.0, abs=DEFAULT_MICROSTEP_UM)
    assert stage_emulator.position_um_at(stage_clock.now(), (2, 1)) == pytest.approx(y)
    assert f"/1 1 move abs {round(1000.0 / DEFAULT_MICROSTEP_UM)}" in sent(stage_emulator)
    assert illegal(sent(stage_emulator), LEGAL) == []


def test_position_advances_at_the_set_speed(stage, stage_emulator, stage_clock):
    stage.set_speed(1000.0)  # um/s
    stage.move_to(0.0, 0.0, wait=False)
    stage.move_to(500.0, 0.0, wait=False)
    stage_clock.advance(0.25)
    x, _ = stage.position_um
    assert x == pytest.approx(250.0, rel=0.01)
    assert stage.busy
    stage_clock.advance(0.5)
    assert not stage.busy


def test_home_clears_the_no_reference_warning(stage, stage_clock):
    assert "WR" in stage.warnings
    stage.home(wait=False)
    stage_clock.advance(1.0)
    stage.wait_idle(timeout_s=1.0)
    assert "WR" not in stage.warnings
    assert stage.position_um == (0.0, 0.0)


def test_travel_limits_come_from_the_device(stage, stage_emulator):
    (x_lo, x_hi), (y_lo, y_hi) = stage.travel_um
    assert x_lo == 0.0 and y_lo == 0.0
    assert x_hi == pytest.approx(101_600.0, abs=1.0)
    with pytest.raises(ValueError, match="outside the travel"):
        stage.move_to(x_hi + 10.0, 0.0)


def test_stall_raises_stage_fault_with_its_flag(stage, stage_emulator, stage_clock):
    stage_emulator.inject_stall((1, 1), fraction=0.5)
    stage.move_to(2000.0, 0.0, wait=False)
    stage_clock.advance(60.0)
    with pytest.raises(StageFault) as err:
        stage.wait_idle(timeout_s=1.0)
    assert err.value.flags == {"FS"} and err.value.axis == "x"
    assert stage.position_um[0] == pytest.approx(1000.0, abs=1.0)
    assert "FS" in stage.warnings
    stage.move_to(0.0, 0.0, wait=False)      # the fault persists until acknowledged
    stage_clock.advance(60.0)
    with pytest.raises(StageFault):
        stage.wait_idle(timeout_s=1.0)
    stage.clear_warnings()
    assert "FS" not in stage.warnings
    stage.wait_idle(timeout_s=1.0)


def test_stall_with_recovery_is_only_a_warning(stage, stage_emulator, stage_clock):
    stage_emulator.inject_stall((2, 1), fraction=0.3, recover=True)
    stage.move_to(0.0, 800.0, wait=False)
    stage_clock.advance(60.0)
    stage.wait_idle(timeout_s=1.0)
    assert "WS" in stage.warnings
    assert stage.position_um[1] == pytest.approx(800.0, abs=1.0)


def test_stop_interrupts_a_move(stage, stage_clock):
    stage.move_to(3000.0, 3000.0, wait=False)
    stage_clock.advance(0.1)
    stage.stop()
    assert not stage.busy
    assert "NI" in stage.warnings
    assert 0.0 < stage.position_um[0] < 3000.0


@pytest.mark.sends_illegal
def test_rejections_carry_the_reason(stage):
    with pytest.raises(StageRejected) as err:
        stage.command("x", "fly away")
    assert err.value.reason == "BADCOMMAND"
    with pytest.raises(StageRejected) as err:
        stage.command("x", "move abs -50")
    assert err.value.reason == "BADDATA"
    with pytest.raises(ValueError, match="speed"):
        stage.set_speed(0)


def test_wait_timeout_stops_the_stage(stage, stage_emulator, stage_clock):
    stage.move_to(5000.0, 0.0, wait=False)
    with pytest.raises(InstrumentTimeout, match="stopped"):
        stage.wait_idle(timeout_s=0.05)
    assert not stage_emulator.busy((1, 1))
    assert sent(stage_emulator)[-2:] == ["/1 1 stop", "/2 1 stop"]


def test_checksums_are_sent_and_verified(stage_server, stage_emulator, stage_clock, visa_rm):
    stage = ZaberXYStage(stage_server.resource, timeout_s=0.3, resource_manager=visa_rm,
                         checksums=True)
    try:
        stage.move_to(100.0, 100.0, wait=False)
        stage_clock.advance(1.0)
        stage.wait_idle(timeout_s=1.0)
        assert stage.position_um[0] == pytest.approx(100.0, abs=0.05)
    finally:
        stage.close_transport()
    assert all(c[-3] == ":" for c in sent(stage_emulator))
    assert all(r[-3] == ":" for record in stage_emulator.command_log[2:] for r in record.replies)
    assert stage_emulator.handle("/1 1 get pos:00") == []  # a bad checksum is ignored
    assert illegal(sent(stage_emulator), LEGAL) == []


def test_link_faults_raise_named_errors(stage, stage_server):
    stage_server.faults.no_reply = 1.0
    with pytest.raises(InstrumentTimeout):
        stage.position_um
    stage_server.faults.no_reply = 0.0
    stage_server.faults.garble = 1.0
    with pytest.raises(ProtocolError):
        stage.position_um
    stage_server.faults.garble = 0.0
    assert stage.position_um == (0.0, 0.0)


def test_real_time_move_with_wall_clock(visa_rm):
    emulator = ZaberEmulator()
    with PtyLineServer(emulator) as server:
        stage = ZaberXYStage(server.resource, timeout_s=0.3, resource_manager=visa_rm,
                             move_timeout_s=2.0)
        try:
            stage.set_speed(20_000.0)
            stage.move_to(2000.0, 1000.0)  # about 0.1 s at 20 mm/s
            assert stage.position_um[0] == pytest.approx(2000.0, abs=0.05)
            assert not stage.busy
        finally:
            stage.close()
    with pytest.raises(InstrumentConnectionError, match="closed"):
        stage.position_um


def test_close_stops_both_axes(stage, stage_emulator):
    stage.move_to(4000.0, 4000.0, wait=False)
    stage.close()
    assert not stage_emulator.busy((1, 1)) and not stage_emulator.busy((2, 1))


def test_position_trigger_fires_once_when_the_axis_passes_its_point():
    from sim.emulators.zaber import ZaberEmulator

    class Clock:
        virtual, t = True, 100.0

        def now(self):
            return self.t

    clock = Clock()
    stage = ZaberEmulator(clock=clock)
    for line in ("/1 0 trigger 1 when 1 pos >= 5000", "/1 0 trigger 1 action a io set do 1 1",
                 "/1 0 trigger 1 enable 1"):
        assert " OK " in stage.handle(line)[0]
    assert stage.output_edge(clock.t) is None, "a stage at rest below the point fires nothing"
    stage.handle("/1 1 move abs 20000")
    axis = stage.axes[(1, 1)]
    device, when = stage.output_edge(clock.t)
    assert device == 1
    assert axis.position_at(when) == pytest.approx(5000, abs=1e-6)
    stage.trigger_fired(1)
    assert stage.output_edge(clock.t) is None, "enable 1 fires once"
    assert " RJ " in stage.handle("/1 0 trigger 1 when 9 pos >= 1")[0]
