"""DG645 driver against the DG645 emulator over a loopback TCP socket."""

from __future__ import annotations

import pytest

from drivers.dg645 import DG645, Polarity, TriggerSource
from drivers.errors import DG645Error, InstrumentConnectionError, InstrumentTimeout, ProtocolError
from tests.fixtures.manual_commands import DG645 as LEGAL, illegal
from tests.waiting import wait_until


def commands(emulator):
    return [record.command for record in emulator.command_log]


def test_identity_reset_and_every_command_is_legal(dg645, dg645_emulator):
    assert dg645.idn.startswith("Stanford Research Systems,DG645,")
    dg645.trigger_source = TriggerSource.INTERNAL
    dg645.reset()
    assert dg645.trigger_source == TriggerSource.SINGLE_SHOT
    assert dg645.trigger_rate_hz == pytest.approx(1000.0)
    assert illegal(commands(dg645_emulator), LEGAL) == []
    assert all(record.error == 0 for record in dg645_emulator.command_log)


def test_trigger_settings_round_trip(dg645, dg645_emulator):
    dg645.trigger_source = "external_rising"
    assert dg645.trigger_source is TriggerSource.EXTERNAL_RISING
    dg645.trigger_source = TriggerSource.INTERNAL
    dg645.trigger_rate_hz = 50
    dg645.trigger_level_v = -1.25
    assert dg645.trigger_rate_hz == pytest.approx(50.0)
    assert dg645.trigger_level_v == pytest.approx(-1.25)
    state = dg645_emulator.state()
    assert state.trigger_source == TriggerSource.INTERNAL and state.trigger_rate_hz == 50
    assert illegal(commands(dg645_emulator), LEGAL) == []


def test_delays_use_channel_numbering_and_resolve_to_t0(dg645, dg645_emulator):
    dg645.set_delay("A", "T0", 150e-6)
    dg645.set_delay("B", "A", 10e-6)
    dg645.set_delay("E", "A", 1e-6)
    dg645.set_delay(7, "E", 12.5e-6)  # F
    assert dg645.get_delay("B") == ("A", pytest.approx(10e-6, abs=1e-12))
    assert dg645.get_delay("F") == ("E", pytest.approx(12.5e-6, abs=1e-12))
    assert dg645.absolute_delay("F") == pytest.approx(163.5e-6, abs=1e-12)
    assert dg645_emulator.output_window("EF") == pytest.approx((151e-6, 163.5e-6), abs=1e-12)
    assert "DLAY 3,2,0.000010000000" in commands(dg645_emulator)
    assert illegal(commands(dg645_emulator), LEGAL) == []


def test_delay_reply_format_is_parsed(dg645, dg645_emulator):
    dg645.write("DLAY 2,0,1e-3")
    assert dg645.get_delay("A") == ("T0", pytest.approx(1e-3))
    assert dg645.query("DLAY?2") == "0,+0.001000000000"


def test_outputs_round_trip(dg645, dg645_emulator):
    dg645.set_output("AB", amplitude_v=5.0, offset_v=-0.5, polarity="negative")
    levels = dg645.get_output("AB")
    assert (levels.amplitude_v, levels.offset_v, levels.polarity) == (5.0, -0.5, Polarity.NEGATIVE)
    assert dg645_emulator.state().outputs["AB"].polarity == 0
    assert dg645.get_output("CD").amplitude_v == pytest.approx(2.5)
    assert illegal(commands(dg645_emulator), LEGAL) == []


def test_burst_settings_round_trip(dg645, dg645_emulator):
    dg645.burst_mode = True
    dg645.burst_count = 20
    dg645.burst_period_s = 20e-3
    dg645.burst_delay_s = 1e-3
    dg645.burst_t0_first_only = True
    assert dg645.burst_mode is True and dg645.burst_count == 20
    assert dg645.burst_period_s == pytest.approx(20e-3)
    assert dg645.burst_delay_s == pytest.approx(1e-3)
    assert dg645.burst_t0_first_only is True
    assert dg645_emulator.pulse_times(10.0)[:2] == pytest.approx([10.001, 10.021])
    assert illegal(commands(dg645_emulator), LEGAL) == []


def test_single_shot_trigger_reaches_the_bench_hook(dg645, dg645_emulator):
    fired = []
    dg645_emulator.on_trigger = fired.append
    dg645.trigger_source = TriggerSource.SINGLE_SHOT
    dg645.trigger()
    assert len(fired) == 1
    assert "TRIG" in dg645.instrument_status()
    assert dg645.instrument_status() == frozenset()  # INSR? clears on read


def test_trigger_in_wrong_mode_raises_illegal_mode(dg645):
    dg645.trigger_source = TriggerSource.INTERNAL
    with pytest.raises(DG645Error) as err:
        dg645.trigger()
    assert err.value.code == 11 and err.value.meaning == "Illegal mode"


@pytest.mark.sends_illegal
@pytest.mark.parametrize("command, code", [
    ("TSRC 7", 10), ("FOOO 1", 111), ("DLAY 2,2,1e-6", 13), ("DLAY 0,2,1e-6", 13),
    ("DLAY 2,0,-1", 12), ("TLVL 5", 10), ("TRAT abc", 118), ("BURC", 116),
    ("*IDN", 113), ("LERR 1", 113), ("*RST?", 112), ("12AB", 110),
    ("INHB 6", 10), ("BURC 0", 10), ("BURT 2", 10), ("LAMP 1, 10.0", 10), ("TRAT -1", 10),
])
def test_device_errors_are_raised_by_code_and_name(dg645, command, code):
    dg645.write(command)
    with pytest.raises(DG645Error) as err:
        dg645.check_errors(command)
    assert err.value.code == code
    assert command in str(err.value)
    dg645.check_errors()  # the queue was drained


@pytest.mark.sends_illegal
def test_settings_refused_by_the_instrument_raise_at_once(dg645, dg645_emulator):
    with pytest.raises(DG645Error) as err:
        dg645.set_delay("B", "B", 1e-6)
    assert err.value.code == 13
    with pytest.raises(ValueError, match="trigger_rate_hz"):
        dg645.trigger_rate_hz = 0
    with pytest.raises(ValueError, match="unknown DG645 channel"):
        dg645.set_delay("Z", "A", 1e-6)


@pytest.mark.sends_illegal
def test_event_status_reports_command_errors(dg645):
    dg645.write("FOOO")
    assert "CME" in dg645.event_status()
    assert dg645.event_status() == frozenset()
    assert dg645.status_byte() == frozenset()


def test_no_reply_raises_timeout_and_the_link_recovers(dg645, dg645_server):
    dg645_server.faults.no_reply = 1.0
    with pytest.raises(InstrumentTimeout):
        _ = dg645.idn
    dg645_server.faults.no_reply = 0.0
    assert "DG645" in dg645.idn


def test_garbled_reply_raises_protocol_error(dg645, dg645_server):
    dg645_server.faults.garble = 1.0
    with pytest.raises(ProtocolError, match="garbled"):
        _ = dg645.trigger_rate_hz
    dg645_server.faults.garble = 0.0
    assert dg645.trigger_rate_hz == pytest.approx(1000.0)


def test_close_stops_internal_triggering(dg645, dg645_emulator):
    dg645.trigger_source = TriggerSource.INTERNAL
    dg645.close()
    # close() writes TSRC without a reply to wait for; the emulator applies it on its own thread
    wait_until(lambda: dg645_emulator.state().trigger_source == TriggerSource.SINGLE_SHOT, timeout_s=10,
               what="the emulator's trigger source becoming SINGLE_SHOT")
    with pytest.raises(InstrumentConnectionError, match="closed"):
        _ = dg645.idn


def test_unreachable_resource_is_a_connection_error(visa_rm):
    # pyvisa-py connects lazily, so the refusal shows on the first command.
    with pytest.raises(InstrumentConnectionError, match=r"127\.0\.0\.1::1::SOCKET"):
        DG645("TCPIP::127.0.0.1::1::SOCKET", timeout_s=0.2, resource_manager=visa_rm)
