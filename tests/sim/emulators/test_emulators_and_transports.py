"""Emulator hooks the simulated bench relies on, and the link fault injection."""

from __future__ import annotations

import random

import numpy as np
import pytest

from sim.emulators.bigsky import BigSkyEmulator
from sim.emulators.dg645 import DG645Emulator, TriggerSource
from sim.emulators.transports import LinkFaults, PtyLineServer, TcpLineServer
from sim.emulators.zaber import ZaberEmulator, checksum
from tests.fixtures.emulated import ManualClock


def test_dg645_state_resolves_links_to_t0():
    dg = DG645Emulator(clock=ManualClock(5.0))
    dg.handle("DLAY 2,0,150e-6;DLAY 3,2,10e-6;DLAY 6,2,1e-6;DLAY 7,6,5e-6;TSRC 0;TRAT 20")
    state = dg.state()
    assert state.trigger_source is TriggerSource.INTERNAL and state.trigger_rate_hz == 20
    assert state.links["F"] == ("E", pytest.approx(5e-6))
    assert state.times_s["F"] == pytest.approx(156e-6)
    assert dg.output_window("AB") == pytest.approx((150e-6, 160e-6))
    assert [r.error for r in dg.command_log] == [0] * 6


def test_dg645_burst_pulse_times_and_trigger_hook():
    clock = ManualClock(2.0)
    fired = []
    dg = DG645Emulator(clock=clock, on_trigger=fired.append)
    dg.handle("BURM 1;BURC 3;BURP 0.01;BURD 0.001")
    dg.handle("*TRG")
    assert fired == [2.0]
    assert dg.pulse_times(2.0) == pytest.approx([2.001, 2.011, 2.021])
    assert dg.handle("*STB?") == ["6"]      # BUSY and BURST while the burst runs
    clock.advance(1.0)
    assert dg.handle("*STB?") == ["0"]


def test_dg645_rejects_link_loops_and_caps_the_error_queue():
    dg = DG645Emulator()
    dg.handle("DLAY 3,2,1e-6")
    dg.handle("DLAY 2,3,1e-6")              # A -> B -> A would loop
    assert dg.handle("LERR?") == ["13"]
    for _ in range(30):
        dg.handle("BOGUS")
    codes = [dg.handle("LERR?")[0] for _ in range(21)]
    assert codes[-2:] == ["254", "0"] and codes[0] == "111"


def test_dg645_reset_restores_documented_defaults():
    dg = DG645Emulator()
    dg.handle("TSRC 1;TRAT 10;LAMP 1,4;BURC 9")
    dg.handle("*RST")
    state = dg.state()
    assert state.trigger_source is TriggerSource.SINGLE_SHOT
    assert (state.trigger_rate_hz, state.burst_count, state.burst_period_s) == (1000.0, 5, 100e-6)
    assert state.links["B"] == ("A", pytest.approx(10e-9)) and state.outputs["AB"].amplitude_v == 2.5


def test_laser_fire_needs_every_condition():
    laser = BigSkyEmulator()
    assert not laser.can_fire()
    for command in (">LPM1", ">QSM2", ">R1", ">A", ">PQ"):
        laser.handle(command)
    assert laser.can_fire() and laser.fire(0.1)
    laser.handle(">QSM0")
    assert not laser.fire(0.2)               # Q-switch no longer externally triggered
    assert laser.state.flashlamp_count == 2 and laser.state.qswitch_count == 1
    assert laser.shots == [(0.1, True), (0.2, False)]
    with pytest.raises(ValueError, match="unknown interlock"):
        laser.set_interlock("door")


def test_zaber_reply_format_and_checksum_rule():
    stage = ZaberEmulator(clock=ManualClock())
    assert stage.handle("/1 1 get pos") == ["@01 1 OK IDLE WR 0"]
    assert stage.handle("/1 1 7 get pos") == ["@01 1 07 OK IDLE WR 0"]
    assert stage.handle("/3 1 get pos") == []                   # no such device: silence
    assert stage.handle("/1 2 get pos") == ["@01 2 RJ IDLE WR BADAXIS"]
    assert len(stage.handle("/get maxspeed")) == 2              # device 0 = every device
    assert checksum("get maxspeed") == 0x49                     # the manual's example
    assert stage.handle(f"/1 1 get pos:{checksum('1 1 get pos'):02X}") == ["@01 1 OK IDLE WR 0"]
    stage.handle("/1 set comm.checksum 1")                     # replies carry checksums now
    assert stage.handle("/1 1 get pos") == [f"@01 1 OK IDLE WR 0:{checksum('01 1 OK IDLE WR 0'):02X}"]
    stage.handle("/1 1 set pos 10")                            # a reference: WR clears
    assert stage.handle("/1 1 warnings")[0].startswith("@01 1 OK IDLE -- 00:")


def test_zaber_moves_on_the_clock():
    clock = ManualClock()
    stage = ZaberEmulator(clock=clock)
    stage.handle("/1 1 set maxspeed 16384")  # 10000 microsteps/s
    stage.handle("/1 1 move abs 5000")
    assert stage.busy((1, 1)) and stage.handle("/1 1")[0].split()[3] == "BUSY"
    assert stage.position_at(0.25) == pytest.approx(2500.0)
    clock.advance(1.0)
    assert not stage.busy((1, 1)) and stage.position_at(clock.now()) == 5000.0


def test_zaber_stall_at_a_position_stops_there_and_warnings_say_so_from_then_on():
    clock = ManualClock()
    stage = ZaberEmulator(clock=clock, microstep_um=0.5)
    stage.handle("/1 1 set maxspeed 16384")  # 10000 microsteps/s
    stage.handle("/1 1 set pos 0")                             # a reference: no WR
    stage.inject_stall_at((1, 1), position_um=2000.0)         # microstep 4000
    stage.handle("/1 1 move abs 3000")                         # does not pass it: left alone
    clock.advance(1.0)
    assert stage.position_at(clock.now()) == 3000.0
    stage.handle("/1 1 move abs 6000")                         # passes it: stalls there, at t + 0.1 s
    clock.advance(0.05)
    assert stage.handle("/1 1 warnings")[0].split()[-1] == "00"
    clock.advance(0.1)
    # the first question after the stall already hears of it, in the reply's flag and its data
    assert stage.handle("/1 1 warnings")[0].split()[-2:] == ["01", "FS"]
    assert stage.position_um_at(clock.now()) == pytest.approx(2000.0)
    clock.advance(1.0)
    assert stage.position_um_at(clock.now()) == pytest.approx(2000.0)


@pytest.mark.parametrize("server_type", [TcpLineServer, PtyLineServer])
def test_transport_faults_follow_the_seeded_rng(server_type):
    def run(seed):
        faults = LinkFaults(no_reply=0.3, garble=0.3, rng=np.random.default_rng(seed))
        replies = []
        for _ in range(200):
            wire = faults.corrupt(b"2,+0.000001000000", b"\r\n")
            replies.append(wire)
        return faults, replies

    faults_a, replies_a = run(7)
    faults_b, replies_b = run(7)
    assert replies_a == replies_b
    assert 30 < faults_a.lost < 90 and 20 < faults_a.garbled < 80
    garbled = [r for r in replies_a if r is not None and r != b"2,+0.000001000000\r\n"]
    assert garbled and all(r.endswith(b"\r\n") and max(r[:-2]) >= 0x80 for r in garbled)
    server = server_type(DG645Emulator(), LinkFaults(rng=random.Random(0)))
    with pytest.raises(RuntimeError, match="not started"):
        server.resource


def test_fault_probabilities_are_checked():
    with pytest.raises(ValueError, match="no_reply"):
        LinkFaults(no_reply=1.5)


def test_resource_strings(dg645_server, laser_server):
    assert dg645_server.resource.startswith("TCPIP::127.0.0.1::")
    assert dg645_server.resource.endswith("::SOCKET")
    assert laser_server.resource.startswith("ASRL/dev/") and laser_server.resource.endswith("::INSTR")
