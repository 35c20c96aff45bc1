"""Message codec of the live-transfer stream, version 1 (spec/stream-protocol.md).

Every message is exactly three frames ``[topic, header, payload]``: ASCII topic, one UTF-8
JSON object with ``"v": 1``, and the raw little-endian C-order bytes of the array the header
describes (empty for ``error`` and ``status``). Decoding validates every rule of the spec
and raises :class:`MessageError` with a distinct ``code`` and a reason a person can act on.

Every decoder works under explicit limits (:class:`Limits`): header bytes and JSON nesting
depth are checked before the JSON parser runs, so no message, however built, can make the
decoder recurse, allocate or raise anything but :class:`MessageError`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

VERSION = 1
TOPIC_SECONDARY = b"secondary"
TOPIC_TRANSFER = b"transfer"
TOPIC_ERROR = b"error"
TOPIC_STATUS = b"status"

INPUT_DTYPES = {"<f4": np.dtype("<f4"), "<u2": np.dtype("<u2"), "<f8": np.dtype("<f8")}
OUTPUT_DTYPE = "<f4"
# keys copied from an input header into its result; "source" is this project's extension:
# the producer's id, so that several producers can tell their results apart
ECHO_KEYS = ("shot", "iy", "ix", "t", "system", "source")
INDEX_KEYS = ("shot", "iy", "ix")
#: default limits of one message (spec/stream-protocol.md, "Limits")
MAX_HEADER_BYTES = 65536
MAX_JSON_DEPTH = 16
#: small enough that the worker's byte budget still queues enough single-spectrum messages
#: to batch them (bench/stream.py); raise it with `libs-stream serve --max-message-spectra`
MAX_SPECTRA_PER_MESSAGE = 64
#: map indices are echoed into results that viewers turn into array indices
MAX_MAP_INDEX = 2**31 - 1
MAX_SHOT = 2**63 - 1
MAX_SEQ = 2**63 - 1
#: longest "source" and "system" string: both are echoed into every reply
MAX_NAME_CHARS = 256
#: how much of a client's value an error reason quotes
QUOTE_CHARS = 60


@dataclass(frozen=True)
class Limits:
    """What one input message may be; the worker derives ``n_pixels`` from its model."""

    header_bytes: int = MAX_HEADER_BYTES
    json_depth: int = MAX_JSON_DEPTH
    spectra_per_message: int = MAX_SPECTRA_PER_MESSAGE
    n_pixels: int | None = None

    def payload_bytes(self) -> int:
        """The largest valid payload: the most spectra in the widest dtype."""
        widest = max(d.itemsize for d in INPUT_DTYPES.values())
        return self.spectra_per_message * (self.n_pixels or 0) * widest

    def frame_bytes(self) -> int:
        """The largest valid frame (header or payload): what ZMQ_MAXMSGSIZE is set to."""
        return max(self.header_bytes, self.payload_bytes())

    def message_bytes(self) -> int:
        """The largest valid message: header and payload at their limits."""
        return self.header_bytes + self.payload_bytes()


DEFAULT_LIMITS = Limits()
#: a subscriber trusts its worker more than the worker trusts producers: a transfer header
#: lists labels, novelty and indices of every spectrum, so it grows with the message
OUTPUT_LIMITS = Limits(header_bytes=1 << 26)


class MessageError(ValueError):
    """A stream message that breaks the contract; ``code`` is stable, ``reason`` is for people."""

    def __init__(self, code: str, reason: str, *, in_seq: int | None = None, source: str | None = None):
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.in_seq = in_seq
        self.source = source


@dataclass
class SpectraMessage:
    """A validated ``secondary`` message."""

    seq: int
    spectra: np.ndarray          # float32 [k, n]; a view of the payload frame when it was <f4
    single: bool                 # the header shape was [n] rather than [k, n]
    echo: dict[str, Any] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return self.spectra.shape[0]


@dataclass
class StreamMessage:
    """A decoded output message (``transfer``, ``error`` or ``status``)."""

    topic: str
    header: dict[str, Any]
    array: np.ndarray | None = None   # transfer: float32 [n_primary] or [k, n_primary]

    @property
    def seq(self) -> int | None:
        return self.header.get("seq")

    @property
    def in_seq(self) -> int | None:
        return self.header.get("in_seq")


def _bytes(frame) -> bytes:
    return frame.bytes if hasattr(frame, "bytes") else bytes(frame)


def _buffer(frame) -> memoryview:
    return frame.buffer if hasattr(frame, "buffer") else memoryview(frame)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def quote(value: Any) -> str:
    """``repr(value)`` cut to QUOTE_CHARS, so that no reply echoes unbounded client data."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + f"... ({len(text)} chars)"


def json_depth(data: bytes) -> int:
    """Deepest nesting of arrays/objects in JSON text, by a byte scan (no recursion, no parsing).

    Brackets inside strings do not count; escapes inside strings are skipped. Runs on text
    that may not be valid JSON at all; it only has to be right for text that is.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:       # backslash
                escaped = True
            elif byte == 0x22:       # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):   # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):   # ] }
            depth -= 1
    return deepest


def loads_bounded(data: bytes, *, what: str, max_bytes: int, max_depth: int) -> Any:
    """JSON text to a value under a size and a nesting limit; MessageError("bad-json") otherwise."""
    if len(data) > max_bytes:
        raise MessageError("bad-json", f"{what} is {len(data)} bytes; at most {max_bytes}")
    # depth cannot exceed the number of opening brackets: most headers skip the scan
    depth = 0 if data.count(b"[") + data.count(b"{") <= max_depth else json_depth(data)
    if depth > max_depth:
        raise MessageError("bad-json", f"{what} nests {depth} levels deep; at most {max_depth}")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MessageError("bad-json", f"{what} is not UTF-8: {exc}") from None
    except (ValueError, RecursionError) as exc:   # RecursionError: only if the scan above were wrong
        raise MessageError("bad-json", f"{what} is not valid JSON: {str(exc)[:200]}") from None


def dumps(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def parse_header(frame, *, topic: str, limits: Limits = DEFAULT_LIMITS) -> dict:
    """Decode a header frame into a dict with ``"v": 1`` or raise MessageError."""
    header = loads_bounded(_bytes(frame), what=f"{topic} header", max_bytes=limits.header_bytes,
                           max_depth=limits.json_depth)
    if not isinstance(header, dict):
        raise MessageError("bad-json", f"{topic} header must be a JSON object, got {type(header).__name__}")
    seq = header.get("seq")
    in_seq = seq if _is_int(seq) and 0 <= seq <= MAX_SEQ else None
    source = header.get("source")
    source = source if isinstance(source, str) and len(source) <= MAX_NAME_CHARS else None
    if "v" not in header:
        raise MessageError("bad-version", f"{topic} header has no 'v' (protocol version, must be {VERSION})",
                            in_seq=in_seq, source=source)
    if header["v"] != VERSION or not _is_int(header["v"]):
        raise MessageError("bad-version", f"{topic} header has v={quote(header['v'])}; this worker speaks "
                            f"protocol version {VERSION}", in_seq=in_seq, source=source)
    return header


# --------------------------------------------------------------------------- input


def encode_spectra(spectra: np.ndarray, seq: int, *, shot=None, iy=None, ix=None, t: float | None = None,
                   system: str | None = None, source: str | None = None) -> list:
    """Frames of one ``secondary`` message; ``spectra`` [n] (one spectrum) or [k, n]."""
    spectra = np.asarray(spectra)
    if spectra.dtype.str not in INPUT_DTYPES:
        little = spectra.dtype.newbyteorder("<")
        spectra = spectra.astype(little if little.str in INPUT_DTYPES else "<f4")
    spectra = np.ascontiguousarray(spectra)
    header: dict[str, Any] = {"v": VERSION, "seq": int(seq), "dtype": spectra.dtype.str,
                              "shape": list(spectra.shape)}
    for key, value in (("shot", shot), ("iy", iy), ("ix", ix)):
        if value is not None:
            header[key] = np.asarray(value).tolist()
    if t is not None:
        header["t"] = float(t)
    if system is not None:
        header["system"] = system
    if source is not None:
        header["source"] = source
    return [TOPIC_SECONDARY, dumps(header), spectra.data]


def decode_spectra(frames: Sequence, *, limits: Limits = DEFAULT_LIMITS) -> SpectraMessage:
    """Validate and decode a ``secondary`` message into float32 spectra.

    ``<f4`` spectra stay a view of the payload frame; ``<u2`` and ``<f8`` are converted,
    and a value that is not finite in float32 (NaN, inf, or an ``<f8`` beyond float32's
    range) is refused with ``non-finite``.
    """
    if len(frames) != 3:
        raise MessageError("bad-frames", f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic = _bytes(frames[0])
    if topic != TOPIC_SECONDARY:
        raise MessageError("bad-topic", f"input topic must be 'secondary', got {topic[:40]!r}")
    header = parse_header(frames[1], topic="secondary", limits=limits)
    source = header.get("source")
    if source is not None and not (isinstance(source, str) and len(source) <= MAX_NAME_CHARS):
        raise MessageError("bad-source", f"'source' must be a string of at most {MAX_NAME_CHARS} characters, "
                           f"got {quote(source)}")

    seq = header.get("seq")
    if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
        raise MessageError("bad-seq", f"'seq' must be an integer in 0..{MAX_SEQ}, got {quote(seq)}", source=source)

    def fail(code: str, reason: str) -> MessageError:
        return MessageError(code, f"message seq {seq}: {reason}", in_seq=seq, source=source)

    dtype_name = header.get("dtype")
    if not isinstance(dtype_name, str) or dtype_name not in INPUT_DTYPES:
        raise fail("bad-dtype", f"unknown dtype {quote(dtype_name)}; accepted: {', '.join(INPUT_DTYPES)}")
    dtype = INPUT_DTYPES[dtype_name]

    shape = header.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(_is_int(d) and d > 0 for d in shape)):
        raise fail("bad-shape", f"'shape' must be [n] or [k, n] of positive integers, got {quote(shape)}")
    single = len(shape) == 1
    k, n = (1, shape[0]) if single else shape
    if k > limits.spectra_per_message:
        raise fail("too-many-spectra", f"{k} spectra in one message; this worker takes at most "
                   f"{limits.spectra_per_message} (split the message)")
    if limits.n_pixels is not None and n != limits.n_pixels:
        raise fail("bad-n", f"spectra have {quote(n)} pixels but the loaded model takes {limits.n_pixels}")

    payload = _buffer(frames[2])
    expected = k * n * dtype.itemsize
    if payload.nbytes != expected:
        raise fail("bad-size", f"payload is {payload.nbytes} bytes but shape {shape} of {dtype_name} "
                   f"needs {expected}")
    received = np.frombuffer(payload, dtype=dtype).reshape(k, n)
    if dtype == np.float32:
        spectra = received
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            spectra = received.astype(np.float32)
    if dtype.kind == "f" and not np.isfinite(spectra).all():
        bad = np.argwhere(~np.isfinite(spectra))[0]
        value = received[bad[0], bad[1]]
        why = "" if not np.isfinite(value) else " (beyond float32's range)"
        raise fail("non-finite", f"non-finite value {value}{why} at spectrum {bad[0]}, pixel {bad[1]}")

    echo: dict[str, Any] = {}
    for key in INDEX_KEYS:
        if key not in header:
            continue
        value = header[key]
        if single:
            if not _is_int(value):
                raise fail("bad-index", f"'{key}' must be an integer for shape [n], got {quote(value)}")
        elif not (isinstance(value, list) and len(value) == k and all(_is_int(v) for v in value)):
            got = f"a list of {len(value)}" if isinstance(value, list) else quote(value)
            raise fail("bad-index", f"'{key}' must be a list of {k} integers for shape {shape}, got {got}")
        low, high = (min(value), max(value)) if isinstance(value, list) else (value, value)
        if key == "shot" and not -MAX_SHOT <= low <= high <= MAX_SHOT:
            raise fail("bad-index", f"'shot' must fit in 64 bits, got {quote(value)}")
        if key != "shot" and not 0 <= low <= high <= MAX_MAP_INDEX:
            raise fail("bad-index", f"'{key}' map indices must be in 0..{MAX_MAP_INDEX}, got {quote(value)}")
        echo[key] = value
    if "t" in header:
        if not _is_number(header["t"]):
            raise fail("bad-t", f"'t' must be a finite number (Unix time), got {quote(header['t'])}")
        echo["t"] = header["t"]
    if "system" in header:
        if not (isinstance(header["system"], str) and len(header["system"]) <= MAX_NAME_CHARS):
            raise fail("bad-system", f"'system' must be a string of at most {MAX_NAME_CHARS} characters, "
                       f"got {quote(header['system'])}")
        echo["system"] = header["system"]
    if source is not None:
        echo["source"] = source
    return SpectraMessage(seq=seq, spectra=spectra, single=single, echo=echo)


# --------------------------------------------------------------------------- output


def _json_float(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def encode_transfer(primary: np.ndarray, *, seq: int, in_seq: int, single: bool, label: np.ndarray,
                    novelty: np.ndarray, model: str, latency_s: float, echo: dict | None = None,
                    worker: str | None = None) -> list:
    """Frames of one ``transfer`` message; ``primary`` float32 [k, n_primary]."""
    primary = np.ascontiguousarray(primary, dtype="<f4")
    header: dict[str, Any] = {"v": VERSION, "seq": seq, "in_seq": in_seq}
    if echo:
        header.update(echo)
    if single:
        header["shape"] = [primary.shape[-1]]
        header["label"] = int(label[0])
        header["novelty"] = _json_float(novelty[0])
    else:
        header["shape"] = list(primary.shape)
        header["label"] = [int(v) for v in label]
        header["novelty"] = [_json_float(v) for v in novelty]
    header["dtype"] = OUTPUT_DTYPE
    header["model"] = model
    header["latency_s"] = round(latency_s, 7)
    if worker is not None:
        header["worker"] = worker
    return [TOPIC_TRANSFER, dumps(header), primary.data]


def encode_error(reason: str, *, code: str, seq: int, in_seq: int | None = None, source: str | None = None,
                 worker: str | None = None) -> list:
    header: dict[str, Any] = {"v": VERSION, "seq": seq, "code": code, "reason": reason}
    if in_seq is not None:
        header["in_seq"] = in_seq
    if source is not None:
        header["source"] = source
    if worker is not None:
        header["worker"] = worker
    return [TOPIC_ERROR, dumps(header), b""]


def encode_status(fields: dict) -> list:
    return [TOPIC_STATUS, dumps({"v": VERSION, **fields}), b""]


def decode_output(frames: Sequence, *, limits: Limits = OUTPUT_LIMITS) -> StreamMessage:
    """Decode a message received from the worker's PUB socket."""
    if len(frames) != 3:
        raise MessageError("bad-frames", f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic = _bytes(frames[0])[:40].decode("ascii", errors="replace")
    header = parse_header(frames[1], topic=topic, limits=limits)
    if topic != TOPIC_TRANSFER.decode():
        return StreamMessage(topic, header)
    shape = header.get("shape")
    if (header.get("dtype", OUTPUT_DTYPE) != OUTPUT_DTYPE or not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(_is_int(d) and d > 0 for d in shape)):
        raise MessageError("bad-shape", f"transfer message with dtype {quote(header.get('dtype'))}, "
                           f"shape {quote(shape)}")
    payload = _buffer(frames[2])
    if payload.nbytes != 4 * math.prod(shape):
        raise MessageError("bad-size", f"transfer payload is {payload.nbytes} bytes, shape {shape} needs "
                            f"{4 * math.prod(shape)}")
    return StreamMessage(topic, header, np.frombuffer(payload, dtype="<f4").reshape(shape))
