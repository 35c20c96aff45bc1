"""The spectrometer interface every spectrometer (real adapter or simulated) implements.

Spectrometers are driven through vendor SDKs rather than a message-based wire
protocol, so this is an abstract class: adapters (``drivers.seabreeze_adapter``)
and the simulated bench's spectrometers implement it.

A typical gated acquisition::

    spec.trigger_mode = "external-edge"
    spec.gate_delay_s, spec.gate_width_s = 1e-6, 10e-6
    spec.arm(-1)                         # continuous: one frame per trigger
    frames = spec.read_batch(64, timeout_s=1.0)
    spec.abort()
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from drivers.errors import InstrumentTimeout

TRIGGER_MODES = ("software", "external-edge", "external-level")


@dataclass(frozen=True)
class Frame:
    """One spectrum as read from the device."""

    counts: np.ndarray   # float32 [pixels]
    frame: int           # the device's frame counter
    timestamp: float     # device clock at the trigger, s
    saturated: bool      # any pixel at or above the saturation level

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts, dtype=np.float32)
        if counts.ndim != 1:
            raise ValueError(f"Frame.counts must be one-dimensional, got shape {counts.shape}")
        counts.setflags(write=False)
        object.__setattr__(self, "counts", counts)


class Spectrometer(ABC):
    """Abstract spectrometer. Times in seconds, counts as float32."""

    name: str        # the system's name on the bench, e.g. "primary"
    model: str
    serial: str

    @property
    @abstractmethod
    def pixels(self) -> int: ...

    @abstractmethod
    def wavelengths(self) -> np.ndarray:
        """Per-pixel wavelengths (nm, float64, increasing) from the device calibration."""

    @property
    @abstractmethod
    def saturation_level(self) -> float:
        """Counts at which a pixel saturates."""

    # Gate (or, for non-gated detectors, integration) timing relative to the trigger.
    @property
    @abstractmethod
    def gate_delay_s(self) -> float: ...

    @gate_delay_s.setter
    @abstractmethod
    def gate_delay_s(self, value: float) -> None: ...

    @property
    @abstractmethod
    def gate_width_s(self) -> float: ...

    @gate_width_s.setter
    @abstractmethod
    def gate_width_s(self, value: float) -> None: ...

    @property
    @abstractmethod
    def trigger_mode(self) -> str:
        """One of TRIGGER_MODES."""

    @trigger_mode.setter
    @abstractmethod
    def trigger_mode(self, mode: str) -> None: ...

    @abstractmethod
    def arm(self, n: int) -> None:
        """Acquire ``n`` frames (one per trigger); ``n = -1`` acquires until abort()."""

    @abstractmethod
    def read(self, timeout_s: float) -> Frame:
        """The next frame; raises InstrumentTimeout if none arrives within ``timeout_s``."""

    def read_batch(self, max_frames: int, timeout_s: float) -> list[Frame]:
        """Between 1 and ``max_frames`` frames: waits up to ``timeout_s`` for the first,
        then takes the ones already available. Raises InstrumentTimeout if none came.

        This default loops over read(); devices with a frame buffer override it.
        """
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        frames = [self.read(timeout_s)]
        deadline = time.monotonic() + timeout_s
        while len(frames) < max_frames and time.monotonic() < deadline:
            try:
                frames.append(self.read(0.0))
            except InstrumentTimeout:
                break
        return frames

    @abstractmethod
    def abort(self) -> None:
        """Stop an acquisition started by arm(); frames not read are discarded."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_trigger_mode(mode: str) -> str:
    if mode not in TRIGGER_MODES:
        raise ValueError(f"trigger_mode must be one of {TRIGGER_MODES}, got {mode!r}")
    return mode
