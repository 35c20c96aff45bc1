"""SRS DG645 digital delay generator (the bench's master clock).

Speaks the DG645 remote command set over LAN (raw socket, port 5025), RS-232 or
GPIB through pyvisa. Every setting is followed by a drain of the ``LERR?``
error queue, so a refused value raises :class:`DG645Error` naming the code
and its meaning right where it was sent.

Example::

    with DG645("TCPIP::192.168.1.20::5025::SOCKET") as dg:
        dg.reset()
        dg.trigger_source = TriggerSource.INTERNAL
        dg.trigger_rate_hz = 50
        dg.set_delay("B", "A", 10e-6)          # B = A + 10 us
        dg.set_output("AB", amplitude_v=5.0, polarity="positive")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import DG645Error, ProtocolError
from drivers.visa_instrument import Setting, VisaInstrument, in_range

CHANNELS = ("T0", "T1", "A", "B", "C", "D", "E", "F", "G", "H")
OUTPUTS = ("T0", "AB", "CD", "EF", "GH")
MAX_DELAY_S = 2000.0

ERROR_MEANINGS = {
    0: "No error", 10: "Illegal value", 11: "Illegal mode", 12: "Illegal delay",
    13: "Illegal link", 14: "Recall failed", 15: "Not allowed", 16: "Failed self test",
    17: "Failed auto calibration", 30: "Lost data", 32: "No listener",
    110: "Illegal command", 111: "Undefined command", 112: "Illegal query",
    113: "Illegal set", 114: "Null parameter", 115: "Extra parameters",
    116: "Missing parameters", 117: "Parameter overflow", 118: "Invalid floating point number",
    120: "Invalid integer", 121: "Integer overflow", 122: "Invalid hexadecimal",
    126: "Syntax error", 170: "Communication error", 171: "Over run", 254: "Too many errors",
}
for _code in range(40, 72):
    ERROR_MEANINGS.setdefault(_code, "Self-test failure")
for _code in range(80, 92):
    ERROR_MEANINGS.setdefault(_code, "Calibration failure")

INSTRUMENT_STATUS_BITS = ("TRIG", "RATE", "END_OF_DELAY", "END_OF_BURST", "INHIBIT",
                          "ABORT_DELAY", "PLL_UNLOCK", "RB_UNLOCK")
EVENT_STATUS_BITS = {0: "OPC", 2: "QYE", 3: "DDE", 4: "EXE", 5: "CME", 7: "PON"}
STATUS_BYTE_BITS = {0: "INSB", 1: "BUSY", 2: "BURST", 4: "MAV", 5: "ESB", 6: "MSS"}


class TriggerSource(IntEnum):
    INTERNAL = 0
    EXTERNAL_RISING = 1
    EXTERNAL_FALLING = 2
    SINGLE_SHOT_EXTERNAL_RISING = 3
    SINGLE_SHOT_EXTERNAL_FALLING = 4
    SINGLE_SHOT = 5
    LINE = 6


class Polarity(IntEnum):
    NEGATIVE = 0
    POSITIVE = 1


@dataclass(frozen=True)
class OutputLevels:
    amplitude_v: float
    offset_v: float
    polarity: Polarity


def channel_index(channel: str | int) -> int:
    """Delay channel number (T0=0, T1=1, A=2 ... H=9) from a name or number."""
    if isinstance(channel, str) and channel.upper() in CHANNELS:
        return CHANNELS.index(channel.upper())
    if isinstance(channel, int) and 0 <= channel < len(CHANNELS):
        return channel
    raise ValueError(f"unknown DG645 channel {channel!r}; use one of {', '.join(CHANNELS)}")


def output_index(output: str | int) -> int:
    """Output BNC number (T0=0, AB=1, CD=2, EF=3, GH=4) from a name or number."""
    if isinstance(output, str) and output.upper() in OUTPUTS:
        return OUTPUTS.index(output.upper())
    if isinstance(output, int) and 0 <= output < len(OUTPUTS):
        return output
    raise ValueError(f"unknown DG645 output {output!r}; use one of {', '.join(OUTPUTS)}")


def _polarity(value: str | int) -> Polarity:
    if isinstance(value, str):
        try:
            return Polarity[value.upper()]
        except KeyError:
            raise ValueError(f"polarity must be 'positive' or 'negative', got {value!r}") from None
    return Polarity(int(value))


def _trigger_source(name: str, value) -> TriggerSource:
    try:
        return TriggerSource[value.upper()] if isinstance(value, str) else TriggerSource(value)
    except (KeyError, ValueError):
        raise ValueError(f"{name} must be a TriggerSource (0..6), got {value!r}") from None


def _bits(value: int, names) -> frozenset[str]:
    pairs = names.items() if isinstance(names, dict) else enumerate(names)
    return frozenset(name for bit, name in pairs if value >> bit & 1)


_DELAY_REPLY = re.compile(r"^\s*(\d)\s*,\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*$")


class DG645(VisaInstrument):
    name = "DG645"

    def __init__(self, resource: str, *, timeout_s: float = 2.0, resource_manager=None,
                 **open_kwargs) -> None:
        super().__init__(resource, timeout_s=timeout_s, resource_manager=resource_manager,
                         read_termination="\r\n", write_termination="\r\n", **open_kwargs)
        self.write("*CLS")

    # Protocol hooks used by Setting.
    def ask(self, query: str) -> str:
        return self.query(query)

    def configure(self, command: str) -> None:
        self.write(command)
        self.check_errors(command)

    # ----------------------------------------------------------- identity
    @property
    def idn(self) -> str:
        reply = self.query("*IDN?")
        if "DG645" not in reply:
            raise ProtocolError(f"DG645: *IDN? answered {reply!r}, not a DG645")
        return reply

    def reset(self) -> None:
        """Restore the factory defaults (``*RST``) and clear the status registers."""
        self.configure("*RST")
        self.clear_status()

    def clear_status(self) -> None:
        """``*CLS``: clear the error queue and the event and instrument status registers."""
        self.write("*CLS")

    # ------------------------------------------------------------ trigger
    trigger_source = Setting("TSRC?", "TSRC {}", parse=lambda r: TriggerSource(int(r)),
                             encode=int, validate=_trigger_source,
                             doc="Trigger source (TriggerSource).")
    trigger_rate_hz = Setting("TRAT?", "TRAT {:.6f}", parse=float, encode=float,
                              validate=in_range(1e-3, 1e6, "Hz"),
                              doc="Internal trigger rate, Hz.")
    trigger_level_v = Setting("TLVL?", "TLVL {:.2f}", parse=float, encode=float,
                              validate=in_range(-3.5, 3.5, "V"),
                              doc="External trigger threshold, V.")

    def trigger(self) -> None:
        """``*TRG``: fire a single shot (``SINGLE_SHOT``) or arm an external single shot."""
        self.configure("*TRG")

    # -------------------------------------------------------------- burst
    burst_mode = Setting("BURM?", "BURM {}", parse=lambda r: bool(int(r)), encode=int,
                         doc="Burst mode on (True) or off.")
    burst_count = Setting("BURC?", "BURC {}", parse=int, encode=int,
                          validate=in_range(1, 2**31 - 1, "pulses"),
                          doc="Delay cycles per burst.")
    burst_period_s = Setting("BURP?", "BURP {:.11e}", parse=float, encode=float,
                             validate=in_range(100e-9, MAX_DELAY_S, "s"),
                             doc="Time between delay cycles of a burst, s.")
    burst_delay_s = Setting("BURD?", "BURD {:.11e}", parse=float, encode=float,
                            validate=in_range(0.0, MAX_DELAY_S, "s"),
                            doc="Delay from the trigger to the first cycle of a burst, s.")
    burst_t0_first_only = Setting("BURT?", "BURT {}", parse=lambda r: bool(int(r)), encode=int,
                                  doc="T0 fires on the first cycle of a burst only.")

    # ------------------------------------------------------------- delays
    def set_delay(self, channel: str | int, reference: str | int, delay_s: float) -> None:
        """Set ``channel`` to fire ``delay_s`` seconds after ``reference`` (``DLAY``)."""
        c, d = channel_index(channel), channel_index(reference)
        if c < 2:
            raise ValueError(f"channel {CHANNELS[c]} cannot be set; set one of A..H")
        if not -MAX_DELAY_S <= float(delay_s) <= MAX_DELAY_S:
            raise ValueError(f"delay_s must lie within +-{MAX_DELAY_S:g} s, got {delay_s!r}")
        self.configure(f"DLAY {c},{d},{float(delay_s):.12f}")

    def get_delay(self, channel: str | int) -> tuple[str, float]:
        """``(reference channel name, delay in s)`` of a channel (``DLAY?``)."""
        c = channel_index(channel)
        reply = self.query(f"DLAY?{c}")
        match = _DELAY_REPLY.match(reply)
        if match is None:
            raise ProtocolError(f"DG645: cannot parse delay reply {reply!r} for channel "
                                f"{CHANNELS[c]}")
        return CHANNELS[int(match.group(1))], float(match.group(2))

    def absolute_delay(self, channel: str | int) -> float:
        """Time of a channel after T0, s, following its chain of references."""
        c, total, seen = channel_index(channel), 0.0, set()
        while c not in (0,) and c not in seen:
            seen.add(c)
            reference, delay = self.get_delay(c)
            total += delay
            c = CHANNELS.index(reference)
        return total

    # ------------------------------------------------------------ outputs
    def set_output(self, output: str | int, *, amplitude_v: float | None = None,
                   offset_v: float | None = None, polarity: str | int | None = None) -> None:
        """Set an output's level amplitude (0.5..5 V), offset (+-3 V) and polarity."""
        b = output_index(output)
        if amplitude_v is not None:
            in_range(0.5, 5.0, "V")("amplitude_v", amplitude_v)
            self.configure(f"LAMP {b},{float(amplitude_v):.2f}")
        if offset_v is not None:
            in_range(-3.0, 3.0, "V")("offset_v", offset_v)
            self.configure(f"LOFF {b},{float(offset_v):.2f}")
        if polarity is not None:
            self.configure(f"LPOL {b},{int(_polarity(polarity))}")

    def get_output(self, output: str | int) -> OutputLevels:
        b = output_index(output)
        try:
            return OutputLevels(float(self.query(f"LAMP?{b}")), float(self.query(f"LOFF?{b}")),
                                Polarity(int(self.query(f"LPOL?{b}"))))
        except ValueError as exc:
            raise ProtocolError(f"DG645: cannot parse output levels of {OUTPUTS[b]}: {exc}") from None

    # ------------------------------------------------------------- status
    def check_errors(self, command: str | None = None) -> None:
        """Drain the ``LERR?`` queue; raise :class:`DG645Error` for the first error in it."""
        first = None
        for _ in range(25):  # the queue holds at most 20 entries
            reply = self.query("LERR?")
            try:
                code = int(reply)
            except ValueError:
                raise ProtocolError(f"DG645: cannot parse error code {reply!r}") from None
            if code == 0:
                break
            if first is None:
                first = code
        if first is not None:
            raise DG645Error(first, ERROR_MEANINGS.get(first, "Unknown error"), command)

    def _register(self, query: str) -> int:
        reply = self.query(query)
        try:
            return int(reply)
        except ValueError:
            raise ProtocolError(f"DG645: cannot parse {query} reply {reply!r}") from None

    def instrument_status(self) -> frozenset[str]:
        """Instrument status condition bits set since the last read (``INSR?``, clears)."""
        return _bits(self._register("INSR?"), INSTRUMENT_STATUS_BITS)

    def event_status(self) -> frozenset[str]:
        """Standard event status bits (``*ESR?``, clears): OPC, QYE, DDE, EXE, CME, PON."""
        return _bits(self._register("*ESR?"), EVENT_STATUS_BITS)

    def status_byte(self) -> frozenset[str]:
        """Serial poll status byte bits (``*STB?``): INSB, BUSY, BURST, MAV, ESB, MSS."""
        return _bits(self._register("*STB?"), STATUS_BYTE_BITS)

    # -------------------------------------------------------------- close
    def close(self) -> None:
        """Stop internal triggering (single-shot source: nothing fires without ``*TRG``), then close."""
        try:
            if not self._closed:
                self.write(f"TSRC {int(TriggerSource.SINGLE_SHOT)}")
        finally:
            self.close_transport()
