"""The spectrometer interface and the python-seabreeze adapter (through a mock SDK device)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from drivers.errors import InstrumentError, InstrumentTimeout
from drivers.seabreeze_adapter import SeabreezeSpectrometer
from drivers.spectrometer import Frame, Spectrometer


class QueueSpectrometer(Spectrometer):
    """A minimal concrete spectrometer that serves frames put into it (a test double)."""

    name, model, serial = "test", "queue", "0"

    def __init__(self):
        self.frames, self.armed, self.reads = [], 0, []

    pixels = 4
    saturation_level = 100.0
    gate_delay_s = 0.0
    gate_width_s = 1e-5
    trigger_mode = "software"

    def wavelengths(self):
        return np.linspace(200.0, 300.0, 4)

    def arm(self, n):
        self.armed = n

    def read(self, timeout_s):
        self.reads.append(timeout_s)
        if not self.frames:
            raise InstrumentTimeout("no frame")
        return self.frames.pop(0)

    def abort(self):
        self.armed = 0

    def close(self):
        pass


def frame(k):
    return Frame(np.full(4, k, dtype=np.float64), k, 0.01 * k, False)


def test_frame_is_frozen_float32_and_one_dimensional():
    f = frame(3)
    assert f.counts.dtype == np.float32
    with pytest.raises(ValueError):
        f.counts[0] = 1.0
    with pytest.raises(ValueError, match="one-dimensional"):
        Frame(np.zeros((2, 2)), 0, 0.0, False)


def test_read_batch_returns_what_is_available_up_to_max():
    spec = QueueSpectrometer()
    spec.frames = [frame(k) for k in range(5)]
    assert [f.frame for f in spec.read_batch(3, timeout_s=0.5)] == [0, 1, 2]
    assert [f.frame for f in spec.read_batch(10, timeout_s=0.5)] == [3, 4]
    with pytest.raises(InstrumentTimeout):
        spec.read_batch(10, timeout_s=0.5)
    with pytest.raises(ValueError):
        spec.read_batch(0, timeout_s=0.5)


class MockSeabreezeDevice:
    """Mock of a python-seabreeze Spectrometer (no hardware here): intensities() blocks
    until the test releases a trigger, as an edge-triggered device does."""

    model = "USB2000PLUS"
    serial_number = "MOCK123"
    pixels = 8
    max_intensity = 65535.0
    integration_time_micros_limits = (1000, 655_350_000)

    def __init__(self):
        self.trigger = threading.Semaphore(0)
        self.modes, self.integration_us, self.closed = [], None, False
        self.level = 10.0

    def wavelengths(self):
        return np.linspace(200.0, 900.0, self.pixels)

    def integration_time_micros(self, us):
        self.integration_us = us

    def trigger_mode(self, mode):
        self.modes.append(mode)

    def intensities(self):
        self.trigger.acquire()
        return np.full(self.pixels, self.level)

    def close(self):
        self.closed = True


def test_seabreeze_read_imposes_a_timeout_and_keeps_the_pending_spectrum():
    device = MockSeabreezeDevice()
    spec = SeabreezeSpectrometer("primary", device=device)
    spec.trigger_mode = "external-edge"
    spec.gate_width_s = 2e-3
    assert device.modes == [3] and device.integration_us == 2000
    with pytest.raises(InstrumentError, match="not armed"):
        spec.read(0.1)
    spec.arm(2)
    with pytest.raises(InstrumentTimeout):
        spec.read(0.05)
    device.trigger.release()
    first = spec.read(1.0)
    assert first.frame == 1 and first.counts.tolist() == [10.0] * 8 and not first.saturated
    device.level = 70000.0
    device.trigger.release()
    assert spec.read(1.0).saturated
    with pytest.raises(InstrumentError, match="not armed"):
        spec.read(0.1)           # arm(2) is used up
    spec.close()
    assert device.closed


def test_seabreeze_abort_discards_the_spectrum_of_the_old_acquisition():
    device = MockSeabreezeDevice()
    spec = SeabreezeSpectrometer("secondary", device=device)
    spec.arm(-1)
    with pytest.raises(InstrumentTimeout):
        spec.read(0.05)
    spec.abort()
    device.level = 1.0
    device.trigger.release()      # completes the read from before abort()
    device.trigger.release()
    spec.arm(-1)
    assert spec.read(1.0).frame == 1
    spec.close()


def test_seabreeze_settings_are_checked():
    spec = SeabreezeSpectrometer("primary", device=MockSeabreezeDevice())
    with pytest.raises(ValueError, match="no gate delay"):
        spec.gate_delay_s = 1e-6
    with pytest.raises(ValueError, match="integration time"):
        spec.gate_width_s = 1e-6
    with pytest.raises(ValueError, match="trigger_mode"):
        spec.trigger_mode = "sometimes"
    assert spec.wavelengths().dtype == np.float64 and spec.pixels == 8
    spec.close()


def test_missing_seabreeze_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "seabreeze", None)
    monkeypatch.setitem(sys.modules, "seabreeze.spectrometers", None)
    with pytest.raises(ImportError, match=r"twinplume\[seabreeze\]"):
        SeabreezeSpectrometer("primary", serial="X")
