"""Big Sky laser driver against the Big Sky emulator over a pseudo-terminal."""

from __future__ import annotations

import pytest

from drivers.bigsky import BigSkyLaser, PumpState
from drivers.errors import (InstrumentConnectionError, InstrumentError, InstrumentTimeout,
                            LaserInterlockError, LaserSafetyError, ProtocolError)
from tests.fixtures.manual_commands import BIGSKY as LEGAL, illegal


def sent(emulator):
    return [record.command for record in emulator.command_log]


def arm(laser):
    laser.set_external_trigger(flashlamp=True, qswitch=True)
    laser.shutter_open = True
    laser.start()


def test_identity_counters_and_settings(laser, laser_emulator):
    assert laser.serial_number == "4321"
    laser.flashlamp_rate_hz = 10.0
    laser.qswitch_delay_s = 150e-6
    assert laser.flashlamp_rate_hz == pytest.approx(10.0)
    assert laser.qswitch_delay_s == pytest.approx(150e-6)
    assert laser.shot_count == 0 and laser.flashlamp_count == 0
    assert illegal(sent(laser_emulator), LEGAL) == []


def test_external_triggering_start_and_shots_are_counted(laser, laser_emulator):
    arm(laser)
    status = laser.status
    assert status.emitting and status.flashlamp_external and status.qswitch_external
    assert laser_emulator.can_fire()
    for k in range(3):
        assert laser_emulator.fire(float(k))
    assert laser.shot_count == 3 and laser.flashlamp_count == 3
    laser.stop()
    assert laser.status.flashlamp == PumpState.STOP
    assert not laser_emulator.fire(4.0)
    assert illegal(sent(laser_emulator), LEGAL) == []


def test_qswitch_does_not_start_with_the_shutter_closed(laser, laser_emulator):
    laser.set_external_trigger()
    with pytest.raises(LaserInterlockError) as err:
        laser.start()
    assert "shutter_closed" in err.value.flags
    assert laser.status.flashlamp == PumpState.STOP  # a failed start leaves it stopped


def test_open_interlock_is_raised_by_name(laser, laser_emulator):
    laser_emulator.set_interlock("cover_open")
    laser_emulator.set_interlock(5, register="IF2")
    with pytest.raises(LaserInterlockError) as err:
        laser.check_interlocks()
    assert err.value.flags == {"cover_open", "water_temperature"}
    with pytest.raises(LaserInterlockError, match="cover_open"):
        laser.start()
    with pytest.raises(LaserInterlockError, match="did not open"):
        laser.shutter_open = True


def test_interlock_mid_run_stops_emission(laser, laser_emulator):
    arm(laser)
    laser_emulator.set_interlock("water_flow")
    assert not laser_emulator.fire(1.0)
    status = laser.status
    assert not status.interlock_ok and not status.emitting
    assert "water_flow" in laser.interlocks()


def test_make_safe_is_idempotent_and_counted(laser, laser_emulator):
    arm(laser)
    laser.make_safe()
    assert not laser.shutter_open and not laser.status.emitting
    laser.make_safe()
    assert laser_emulator.safe_events == 2
    assert sent(laser_emulator)[-3:] == [">SQ", ">S", ">R0"]
    assert illegal(sent(laser_emulator), LEGAL) == []


def test_make_safe_tries_every_step_after_a_fault(laser, laser_emulator, laser_server):
    arm(laser)
    laser_server.faults.garble = 1.0
    with pytest.raises(LaserSafetyError) as err:
        laser.make_safe()
    assert [step for step, _ in err.value.failures] == ["Q-switch stop", "flashlamp stop",
                                                         "shutter close"]
    assert all(isinstance(exc, ProtocolError) for _, exc in err.value.failures)
    # The commands still reached the laser: it is safe although the replies were noise.
    assert not laser_emulator.state.shutter_open and not laser_emulator.can_fire()
    laser_server.faults.garble = 0.0
    laser.make_safe()
    assert laser_emulator.safe_events >= 1


def test_make_safe_on_a_dead_link_raises_one_summary(laser, laser_server):
    laser_server.faults.dead = True
    with pytest.raises(LaserSafetyError) as err:
        laser.make_safe()
    assert len(err.value.failures) == 3
    assert all(isinstance(exc, InstrumentTimeout) for _, exc in err.value.failures)


def test_close_makes_safe_then_closes(laser, laser_emulator):
    arm(laser)
    laser.close()
    assert not laser_emulator.can_fire() and not laser_emulator.state.shutter_open
    with pytest.raises(InstrumentConnectionError, match="closed"):
        laser.status
    laser.close()  # closing twice is harmless


def test_no_reply_is_a_timeout_and_garbage_a_protocol_error(laser, laser_server):
    laser_server.faults.no_reply = 1.0
    with pytest.raises(InstrumentTimeout):
        laser.status
    laser_server.faults.no_reply = 0.0
    laser_server.faults.garble = 1.0
    with pytest.raises(ProtocolError):
        laser.status
    laser_server.faults.garble = 0.0
    assert laser.status.interlock_ok


@pytest.mark.sends_illegal
def test_refused_value_and_unknown_command(laser, laser_emulator):
    with pytest.raises(ValueError, match="flashlamp_rate_hz"):
        laser.flashlamp_rate_hz = 150
    with pytest.raises(InstrumentError, match="refused"):
        laser.configure("F99999")
    with pytest.raises(InstrumentError, match="not recognised"):
        laser.ask("XYZ")


def test_replies_are_fixed_width(laser_emulator):
    replies = [laser_emulator.handle(command)[0] for command in
               (">WOR", ">SN", ">R", ">IF1", ">C", ">F", ">NOPE", ">QSM2", ">A")]
    assert all(len(reply) == 15 for reply in replies)


def test_addressed_commands_reach_only_their_laser(laser_server, laser_emulator, visa_rm):
    other = BigSkyLaser(laser_server.resource, timeout_s=0.2, resource_manager=visa_rm, address=99)
    try:
        with pytest.raises(InstrumentTimeout):
            other.status
    finally:
        other.close_transport()
    mine = BigSkyLaser(laser_server.resource, timeout_s=0.3, resource_manager=visa_rm, address=4321)
    try:
        assert mine.status.interlock_ok
    finally:
        mine.close_transport()
