"""Ocean Insight spectrometers through python-seabreeze (optional extra ``seabreeze``).

Not tested on hardware here: it is written against python-seabreeze's public
API (``seabreeze.spectrometers.Spectrometer``) and exercised only through that
API. SeaBreeze's ``intensities()`` has no user timeout and can block for good
while an edge-triggered device waits for a trigger, so ``read`` runs it in a
worker thread and gives up after ``timeout_s``; the blocked call's spectrum is
kept and returned by the next ``read``.

Ocean spectrometers have no gate: ``gate_width_s`` is the integration time,
and ``gate_delay_s`` can only be 0 (delay the trigger on the DG645 instead).

Example::

    spec = SeabreezeSpectrometer("primary", serial="USB2+H01234")
    spec.trigger_mode = "external-edge"
    spec.gate_width_s = 2e-3
    spec.arm(-1)
    frame = spec.read(timeout_s=1.0)
"""

from __future__ import annotations

import concurrent.futures
import time

import numpy as np

from drivers.errors import InstrumentConnectionError, InstrumentError, InstrumentTimeout
from drivers.spectrometer import Frame, Spectrometer, check_trigger_mode

# python-seabreeze trigger-mode numbers per device family (see docs/drivers.md).
OOI_TRIGGER_CODES = {"software": 0, "external-level": 1, "external-edge": 3}
OBP_TRIGGER_CODES = {"software": 0, "external-edge": 1, "external-level": 3}
_OBP_MODELS = ("STS", "SPARK", "HDX", "FX", "SR", "ST")


def _seabreeze_spectrometers():
    try:
        import seabreeze.spectrometers as sb
    except ImportError as exc:
        raise ImportError("SeabreezeSpectrometer needs python-seabreeze; install the extra: "
                          "pip install 'twinplume[seabreeze]'") from exc
    return sb


class SeabreezeSpectrometer(Spectrometer):
    def __init__(self, name: str, serial: str | None = None, *,
                 trigger_codes: dict[str, int] | None = None, device=None) -> None:
        self.name = name
        if device is None:
            sb = _seabreeze_spectrometers()
            try:
                device = (sb.Spectrometer.from_serial_number(serial) if serial
                          else sb.Spectrometer.from_first_available())
            except Exception as exc:  # seabreeze raises its own exception types per backend
                raise InstrumentConnectionError(
                    f"spectrometer {name!r}: cannot open seabreeze device "
                    f"{serial or '(first available)'}: {exc}") from exc
        self._device = device
        self.model = str(device.model)
        self.serial = str(device.serial_number)
        family_obp = self.model.upper().startswith(_OBP_MODELS)
        self._trigger_codes = trigger_codes or (OBP_TRIGGER_CODES if family_obp else OOI_TRIGGER_CODES)
        self._trigger_mode = "software"
        self._integration_s = 0.0
        lo_us, hi_us = device.integration_time_micros_limits
        self._limits_s = (lo_us * 1e-6, hi_us * 1e-6)
        self.gate_width_s = self._limits_s[0]
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"seabreeze-{name}")
        self._pending: concurrent.futures.Future | None = None
        self._remaining = 0
        self._frame = 0
        self._discard_pending = False

    @property
    def pixels(self) -> int:
        return int(self._device.pixels)

    def wavelengths(self) -> np.ndarray:
        return np.asarray(self._device.wavelengths(), dtype=np.float64)

    @property
    def saturation_level(self) -> float:
        return float(self._device.max_intensity)

    @property
    def gate_delay_s(self) -> float:
        return 0.0

    @gate_delay_s.setter
    def gate_delay_s(self, value: float) -> None:
        if float(value) != 0.0:
            raise ValueError(f"{self.model} has no gate delay; got gate_delay_s={value!r}. "
                             "Delay its trigger on the delay generator instead.")

    @property
    def gate_width_s(self) -> float:
        return self._integration_s

    @gate_width_s.setter
    def gate_width_s(self, value: float) -> None:
        lo, hi = self._limits_s
        if not lo <= float(value) <= hi:
            raise ValueError(f"integration time (gate_width_s) of {self.model} must lie in "
                             f"[{lo:g}, {hi:g}] s, got {value!r}")
        self._device.integration_time_micros(int(round(float(value) * 1e6)))
        self._integration_s = float(value)

    @property
    def trigger_mode(self) -> str:
        return self._trigger_mode

    @trigger_mode.setter
    def trigger_mode(self, mode: str) -> None:
        check_trigger_mode(mode)
        if mode not in self._trigger_codes:
            raise ValueError(f"{self.model} has no {mode!r} trigger mode here")
        self._device.trigger_mode(self._trigger_codes[mode])
        self._trigger_mode = mode

    def arm(self, n: int) -> None:
        if n == 0 or n < -1:
            raise ValueError(f"arm(n) needs n >= 1 or n = -1 (continuous), got {n}")
        self._remaining = n

    def read(self, timeout_s: float) -> Frame:
        if self._remaining == 0:
            raise InstrumentError(f"spectrometer {self.name!r} is not armed; call arm(n) first")
        if self._pending is not None and self._discard_pending:
            # A spectrum requested before abort() belongs to the old acquisition.
            try:
                self._pending.result(timeout=max(timeout_s, 0.0))
            except concurrent.futures.TimeoutError:
                raise InstrumentTimeout(f"spectrometer {self.name!r}: the SDK is still busy "
                                        f"with a read from before abort()") from None
            except Exception:
                pass
            self._pending = None
        self._discard_pending = False
        if self._pending is None:
            self._pending = self._executor.submit(self._device.intensities)
        try:
            counts = self._pending.result(timeout=max(timeout_s, 0.0))
        except concurrent.futures.TimeoutError:
            raise InstrumentTimeout(f"spectrometer {self.name!r}: no spectrum within "
                                    f"{timeout_s:g} s") from None
        except Exception as exc:
            self._pending = None
            raise InstrumentError(f"spectrometer {self.name!r}: read failed: {exc}") from exc
        self._pending = None
        if self._remaining > 0:
            self._remaining -= 1
        self._frame += 1
        counts = np.asarray(counts, dtype=np.float32)
        # SeaBreeze gives no device timestamp: the host clock when the spectrum arrived,
        # less the integration time, approximates the trigger time.
        return Frame(counts, self._frame, time.monotonic() - self._integration_s,
                     bool(counts.max(initial=0.0) >= self.saturation_level))

    def abort(self) -> None:
        # A call blocked in the SDK cannot be cancelled; its spectrum is dropped when it returns.
        self._remaining = 0
        self._discard_pending = self._pending is not None

    def close(self) -> None:
        self.abort()
        self._executor.shutdown(wait=False, cancel_futures=True)
        try:
            self._device.close()
        except Exception as exc:
            raise InstrumentConnectionError(f"spectrometer {self.name!r}: close failed: {exc}") from exc
