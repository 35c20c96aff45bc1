"""DG645 driver against pyvisa-sim, a simulation backend this project did not write."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvisa

from drivers.dg645 import DG645, Polarity, TriggerSource
from drivers.errors import DG645Error

YAML = Path(__file__).resolve().parents[2] / "fixtures" / "dg645_pyvisa_sim.yaml"


@pytest.fixture
def dg645_sim():
    rm = pyvisa.ResourceManager(f"{YAML}@sim")
    driver = DG645("TCPIP::127.0.0.1::5025::SOCKET", resource_manager=rm, timeout_s=0.5)
    yield driver
    driver.close()
    rm.close()


def test_identity_and_trigger_settings(dg645_sim):
    assert dg645_sim.idn.startswith("Stanford Research Systems,DG645")
    assert dg645_sim.trigger_source is TriggerSource.SINGLE_SHOT
    dg645_sim.trigger_source = TriggerSource.INTERNAL
    dg645_sim.trigger_rate_hz = 50.0
    assert dg645_sim.trigger_source is TriggerSource.INTERNAL
    assert dg645_sim.trigger_rate_hz == pytest.approx(50.0)


def test_delays_outputs_and_burst(dg645_sim):
    assert dg645_sim.get_delay("B") == ("A", pytest.approx(10e-9))
    dg645_sim.set_delay("D", "C", 12e-6)
    assert dg645_sim.get_delay("D") == ("C", pytest.approx(12e-6))
    dg645_sim.set_output("GH", amplitude_v=4.0, offset_v=1.0, polarity=Polarity.NEGATIVE)
    levels = dg645_sim.get_output("GH")
    assert (levels.amplitude_v, levels.offset_v, levels.polarity) == (4.0, 1.0, Polarity.NEGATIVE)
    dg645_sim.burst_count = 7
    dg645_sim.burst_period_s = 2e-3
    assert dg645_sim.burst_count == 7 and dg645_sim.burst_period_s == pytest.approx(2e-3)


def test_refused_command_surfaces_through_the_error_queue(dg645_sim):
    dg645_sim.write("NOPE 3")
    with pytest.raises(DG645Error) as err:
        dg645_sim.check_errors("NOPE 3")
    assert err.value.code == 111
    dg645_sim.check_errors()
