"""Message codec of the live-transfer stream, version 1 (spec/stream-protocol.md).

Every message is exactly three frames ``[topic, header, payload]``: ASCII topic, one UTF-8
JSON object with ``"v": 1``, and the raw little-endian C-order bytes of the array the header
describes (empty for ``error`` and ``status``). Decoding validates every rule of the spec
and raises :class:`ProtocolError` with a distinct ``code`` and a reason a person can act on.
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
# a message larger than this is refused before it is decoded, not after it filled memory
MAX_SPECTRA_PER_MESSAGE = 65536


class ProtocolError(ValueError):
    """A message that breaks the contract; ``code`` is stable, ``reason`` is for people."""

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
    spectra: np.ndarray          # [k, n], the received dtype, a view of the payload frame
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


def dumps(header: dict) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode()


def parse_header(frame, *, topic: str) -> dict:
    """Decode a header frame into a dict with ``"v": 1`` or raise ProtocolError."""
    try:
        header = json.loads(_bytes(frame).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad-json", f"{topic} header is not UTF-8: {exc}") from None
    except ValueError as exc:
        raise ProtocolError("bad-json", f"{topic} header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("bad-json", f"{topic} header must be a JSON object, got {type(header).__name__}")
    seq = header.get("seq")
    in_seq = seq if _is_int(seq) and seq >= 0 else None
    source = header.get("source") if isinstance(header.get("source"), str) else None
    if "v" not in header:
        raise ProtocolError("bad-version", f"{topic} header has no 'v' (protocol version, must be {VERSION})",
                            in_seq=in_seq, source=source)
    if header["v"] != VERSION or not _is_int(header["v"]):
        raise ProtocolError("bad-version", f"{topic} header has v={header['v']!r}; this worker speaks "
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


def decode_spectra(frames: Sequence, *, n_expected: int | None = None, check_finite: bool = True) -> SpectraMessage:
    """Validate and decode a ``secondary`` message; the spectra stay a view of the payload."""
    if len(frames) != 3:
        raise ProtocolError("bad-frames", f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic = _bytes(frames[0])
    if topic != TOPIC_SECONDARY:
        raise ProtocolError("bad-topic", f"input topic must be 'secondary', got {topic[:40]!r}")
    header = parse_header(frames[1], topic="secondary")
    source = header.get("source")
    if source is not None and not isinstance(source, str):
        raise ProtocolError("bad-source", f"'source' must be a string, got {source!r}")

    seq = header.get("seq")
    if not _is_int(seq) or seq < 0:
        raise ProtocolError("bad-seq", f"'seq' must be an integer >= 0, got {seq!r}", source=source)

    def fail(code: str, reason: str) -> ProtocolError:
        return ProtocolError(code, f"message seq {seq}: {reason}", in_seq=seq, source=source)

    dtype_name = header.get("dtype")
    if dtype_name not in INPUT_DTYPES:
        raise fail("bad-dtype", f"unknown dtype {dtype_name!r}; accepted: {', '.join(INPUT_DTYPES)}")
    dtype = INPUT_DTYPES[dtype_name]

    shape = header.get("shape")
    if (not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(_is_int(d) and d > 0 for d in shape)):
        raise fail("bad-shape", f"'shape' must be [n] or [k, n] of positive integers, got {shape!r}")
    single = len(shape) == 1
    k, n = (1, shape[0]) if single else shape
    if k > MAX_SPECTRA_PER_MESSAGE:
        raise fail("bad-shape", f"{k} spectra in one message; at most {MAX_SPECTRA_PER_MESSAGE}")
    if n_expected is not None and n != n_expected:
        raise fail("bad-n", f"spectra have {n} pixels but the loaded model takes {n_expected}")

    payload = _buffer(frames[2])
    expected = k * n * dtype.itemsize
    if payload.nbytes != expected:
        raise fail("bad-size", f"payload is {payload.nbytes} bytes but shape {shape} of {dtype_name} "
                   f"needs {expected}")
    spectra = np.frombuffer(payload, dtype=dtype).reshape(k, n)
    if check_finite and dtype.kind == "f" and not np.isfinite(spectra).all():
        bad = np.argwhere(~np.isfinite(spectra))[0]
        raise fail("non-finite", f"non-finite value {spectra[bad[0], bad[1]]} at spectrum {bad[0]}, pixel {bad[1]}")

    echo: dict[str, Any] = {}
    for key in INDEX_KEYS:
        if key not in header:
            continue
        value = header[key]
        if single:
            if not _is_int(value):
                raise fail("bad-index", f"'{key}' must be an integer for shape [n], got {value!r}")
        elif not (isinstance(value, list) and len(value) == k and all(_is_int(v) for v in value)):
            got = f"a list of {len(value)}" if isinstance(value, list) else repr(value)
            raise fail("bad-index", f"'{key}' must be a list of {k} integers for shape {shape}, got {got}")
        if key != "shot" and (min(value) if isinstance(value, list) else value) < 0:
            raise fail("bad-index", f"'{key}' map indices must be >= 0, got {value!r}")
        echo[key] = value
    if "t" in header:
        if not _is_number(header["t"]):
            raise fail("bad-t", f"'t' must be a finite number (Unix time), got {header['t']!r}")
        echo["t"] = header["t"]
    if "system" in header:
        if not isinstance(header["system"], str):
            raise fail("bad-system", f"'system' must be a string, got {header['system']!r}")
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
                    worker: str | None = None, expected_rel_error: np.ndarray | None = None) -> list:
    """Frames of one ``transfer`` message; ``primary`` float32 [k, n_primary]."""
    primary = np.ascontiguousarray(primary, dtype="<f4")
    header: dict[str, Any] = {"v": VERSION, "seq": seq, "in_seq": in_seq}
    if echo:
        header.update(echo)
    if single:
        header["shape"] = [primary.shape[-1]]
        header["label"] = int(label[0])
        header["novelty"] = _json_float(novelty[0])
        if expected_rel_error is not None:
            header["expected_rel_error"] = _json_float(expected_rel_error[0])
    else:
        header["shape"] = list(primary.shape)
        header["label"] = [int(v) for v in label]
        header["novelty"] = [_json_float(v) for v in novelty]
        if expected_rel_error is not None:
            header["expected_rel_error"] = [_json_float(v) for v in expected_rel_error]
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


def decode_output(frames: Sequence) -> StreamMessage:
    """Decode a message received from the worker's PUB socket."""
    if len(frames) != 3:
        raise ProtocolError("bad-frames", f"expected 3 frames [topic, header, payload], got {len(frames)}")
    topic = _bytes(frames[0]).decode("ascii", errors="replace")
    header = parse_header(frames[1], topic=topic)
    if topic != TOPIC_TRANSFER.decode():
        return StreamMessage(topic, header)
    shape = header.get("shape")
    if header.get("dtype", OUTPUT_DTYPE) != OUTPUT_DTYPE or not isinstance(shape, list) or len(shape) not in (1, 2):
        raise ProtocolError("bad-shape", f"transfer message with dtype {header.get('dtype')!r}, shape {shape!r}")
    payload = _buffer(frames[2])
    if payload.nbytes != 4 * math.prod(shape):
        raise ProtocolError("bad-size", f"transfer payload is {payload.nbytes} bytes, shape {shape} needs "
                            f"{4 * math.prod(shape)}")
    return StreamMessage(topic, header, np.frombuffer(payload, dtype="<f4").reshape(shape))
