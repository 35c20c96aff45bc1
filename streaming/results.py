"""One ``transfer`` message as typed arrays: the one place a result header is interpreted.

A ``transfer`` header writes single-spectrum values as scalars and batch values as lists
(spec/stream-protocol.md); everything that consumes results (the recorder, the terminal view,
acquisition's live view) reads them through :class:`TransferResult`, always as arrays of k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .protocol import MessageError, StreamMessage, decode_output

_INT64 = np.iinfo(np.int64)


@dataclass(frozen=True)
class TransferResult:
    """k transferred spectra with what the worker echoed about them.

    ``shot``, ``iy``, ``ix`` are int64 [k] or None when the producer did not send them;
    ``novelty`` is NaN where the worker wrote null; ``expected_rel_error`` (the trust score,
    docs/novelty.md) is float32 [k] when the model has one, else None.
    """

    spectra: np.ndarray              # float32 [k, n_primary]
    label: np.ndarray                # int64 [k]
    novelty: np.ndarray              # float32 [k]
    shot: np.ndarray | None
    iy: np.ndarray | None
    ix: np.ndarray | None
    seq: int
    in_seq: int
    model: str
    latency_s: float | None
    t: float | None = None           # producer's send time (Unix s), if it sent one
    system: str | None = None
    source: str | None = None
    worker: str | None = None
    expected_rel_error: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.spectra.shape[0])

    @property
    def has_position(self) -> bool:
        return self.iy is not None and self.ix is not None

    @classmethod
    def from_frames(cls, frames: Sequence) -> "TransferResult":
        """Decode the three frames of a ``transfer`` message; MessageError if it is anything else."""
        return cls.from_message(decode_output(frames))

    @classmethod
    def from_message(cls, message: StreamMessage) -> "TransferResult":
        if message.topic != "transfer" or message.array is None:
            raise MessageError("bad-topic", f"not a transfer message: {message.topic!r}")
        header = message.header
        spectra = message.array.reshape(-1, message.array.shape[-1])
        k = spectra.shape[0]

        def column(key: str, *, required: bool = False) -> np.ndarray | None:
            if key not in header:
                if required:
                    raise MessageError("bad-result", f"transfer message without '{key}'")
                return None
            return _ints(key, header[key], k)

        return cls(
            spectra=spectra, label=column("label", required=True), novelty=_floats(header, "novelty", k),
            expected_rel_error=_floats(header, "expected_rel_error", k) if "expected_rel_error" in header else None,
            shot=column("shot"), iy=column("iy"), ix=column("ix"),
            seq=_int(header, "seq"), in_seq=_int(header, "in_seq"), model=str(header.get("model", "")),
            latency_s=_number(header, "latency_s"), t=_number(header, "t"),
            system=_text(header, "system"), source=_text(header, "source"), worker=_text(header, "worker"))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _floats(header: dict, key: str, k: int) -> np.ndarray:
    value = header.get(key)
    values = value if isinstance(value, list) else [value] * k
    if len(values) != k or not all(v is None or _is_number(v) for v in values):
        raise MessageError("bad-result", f"'{key}' must be {k} numbers or nulls")
    return np.array([np.nan if v is None else v for v in values], np.float32)


def _ints(key: str, value: Any, k: int) -> np.ndarray:
    values = value if isinstance(value, list) else [value] * k
    if len(values) != k or not all(isinstance(v, int) and not isinstance(v, bool)
                                   and _INT64.min <= v <= _INT64.max for v in values):
        raise MessageError("bad-result", f"'{key}' must be {k} integers in the 64-bit range")
    return np.array(values, np.int64)


def _int(header: dict, key: str) -> int:
    value = header.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError("bad-result", f"transfer message without an integer '{key}'")
    return value


def _number(header: dict, key: str) -> float | None:
    value = header.get(key)
    return float(value) if _is_number(value) else None


def _text(header: dict, key: str) -> str | None:
    value = header.get(key)
    return value if isinstance(value, str) else None
