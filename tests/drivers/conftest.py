"""Emulators served on real transports (loopback TCP, pseudo-terminals) and the
real drivers connected to them through pyvisa-py."""

from __future__ import annotations

import random

import pytest
import pyvisa

from drivers.bigsky import BigSkyLaser
from drivers.dg645 import DG645
from drivers.zaber import ZaberXYStage
from sim.emulators.bigsky import BigSkyEmulator
from sim.emulators.dg645 import DG645Emulator
from sim.emulators.transports import LinkFaults, PtyLineServer, TcpLineServer
from sim.emulators.zaber import ZaberEmulator
from tests.drivers import manual_commands


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "sends_illegal: the test sends commands the manual does not allow on purpose")


def assert_manual_commands_only(request, emulator, table):
    """After a test, every command on the wire must be one the manual defines."""
    if request.node.get_closest_marker("sends_illegal"):
        return
    bad = manual_commands.illegal([r.command for r in emulator.command_log], table)
    assert bad == [], f"commands not defined by the manual (or illegal arguments): {bad}"


class ManualClock:
    """A bench clock the test moves by hand."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture(scope="session")
def visa_rm():
    rm = pyvisa.ResourceManager("@py")
    yield rm
    rm.close()


@pytest.fixture
def faults():
    return LinkFaults(rng=random.Random(1234))


@pytest.fixture
def dg645_emulator():
    return DG645Emulator()


@pytest.fixture
def dg645_server(dg645_emulator, faults):
    with TcpLineServer(dg645_emulator, faults) as server:
        yield server


@pytest.fixture
def dg645(dg645_server, dg645_emulator, visa_rm, request):
    driver = DG645(dg645_server.resource, timeout_s=0.3, resource_manager=visa_rm)
    yield driver
    driver.close_transport()
    assert_manual_commands_only(request, dg645_emulator, manual_commands.DG645)


@pytest.fixture
def laser_emulator():
    return BigSkyEmulator(serial_number=4321)


@pytest.fixture
def laser_server(laser_emulator, faults):
    with PtyLineServer(laser_emulator, faults) as server:
        yield server


@pytest.fixture
def laser(laser_server, laser_emulator, visa_rm, request):
    driver = BigSkyLaser(laser_server.resource, timeout_s=0.3, resource_manager=visa_rm)
    yield driver
    driver.close_transport()
    assert_manual_commands_only(request, laser_emulator, manual_commands.BIGSKY)


@pytest.fixture
def stage_clock():
    return ManualClock()


@pytest.fixture
def stage_emulator(stage_clock):
    return ZaberEmulator(clock=stage_clock)


@pytest.fixture
def stage_server(stage_emulator, faults):
    with PtyLineServer(stage_emulator, faults) as server:
        yield server


@pytest.fixture
def stage(stage_server, stage_emulator, visa_rm, request):
    driver = ZaberXYStage(stage_server.resource, timeout_s=0.3, resource_manager=visa_rm,
                          microstep_um=stage_emulator.microstep_um, move_timeout_s=2.0,
                          poll_interval_s=0.005)
    yield driver
    driver.close_transport()
    assert_manual_commands_only(request, stage_emulator, manual_commands.ZABER)
