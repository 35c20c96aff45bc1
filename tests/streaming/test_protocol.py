"""The codec on its own: round trips and one distinct reason per broken rule."""

import json

import numpy as np
import pytest

from streaming import protocol
from streaming.protocol import MessageError, decode_output, decode_spectra, encode_spectra, encode_transfer

N = 16


def frames(header: dict, payload: bytes) -> list[bytes]:
    return [b"secondary", json.dumps(header).encode(), payload]


def good_header(**changes) -> dict:
    header = {"v": 1, "seq": 7, "dtype": "<f4", "shape": [2, N]}
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


PAYLOAD = np.arange(2 * N, dtype="<f4").tobytes()


def test_round_trip_keeps_values_and_echo_keys():
    x = np.random.default_rng(1).uniform(0, 100, (3, N)).astype(np.float32)
    sent = encode_spectra(x, 5, shot=[10, 11, 12], iy=[0, 0, 1], ix=[2, 3, 0], t=123.5, system="sec",
                          source="p1")
    msg = decode_spectra([bytes(f) for f in sent], limits=protocol.Limits(n_pixels=N))
    assert msg.seq == 5 and not msg.single and msg.k == 3
    np.testing.assert_array_equal(msg.spectra, x)
    assert msg.echo == {"shot": [10, 11, 12], "iy": [0, 0, 1], "ix": [2, 3, 0], "t": 123.5, "system": "sec",
                        "source": "p1"}


def test_single_spectrum_and_other_dtypes():
    for dtype in ("<u2", "<f8"):
        x = np.arange(N).astype(dtype)
        msg = decode_spectra([bytes(f) for f in encode_spectra(x, 0, iy=3, ix=4)], limits=protocol.Limits(n_pixels=N))
        assert msg.single and msg.spectra.dtype == np.float32 and msg.spectra.shape == (1, N)
        np.testing.assert_array_equal(msg.spectra[0], x.astype(np.float32))
        assert msg.echo == {"iy": 3, "ix": 4}
    big_endian = np.arange(N, dtype=">f4")
    msg = decode_spectra([bytes(f) for f in encode_spectra(big_endian, 0)])
    np.testing.assert_array_equal(msg.spectra[0], big_endian.astype("<f4"))


def test_transfer_round_trip():
    primary = np.random.default_rng(2).standard_normal((2, 5)).astype(np.float32)
    sent = encode_transfer(primary, seq=3, in_seq=9, single=False, label=np.array([1, 4]),
                           novelty=np.array([0.5, np.nan], np.float32), model="abc", latency_s=0.001,
                           echo={"iy": [1, 2]}, worker="w")
    msg = decode_output([bytes(f) for f in sent])
    assert msg.topic == "transfer" and msg.seq == 3 and msg.in_seq == 9
    assert msg.header["label"] == [1, 4] and msg.header["novelty"] == [0.5, None]
    assert msg.header["iy"] == [1, 2] and msg.header["model"] == "abc"
    np.testing.assert_array_equal(msg.array, primary)


BROKEN = [
    ("bad-frames", [b"secondary", b"{}"]),
    ("bad-frames", [b"secondary", json.dumps(good_header()).encode(), PAYLOAD, b"extra"]),
    ("bad-topic", [b"primary", json.dumps(good_header()).encode(), PAYLOAD]),
    ("bad-json", [b"secondary", b"{not json", PAYLOAD]),
    ("bad-json", [b"secondary", b"\xff\xfe", PAYLOAD]),
    ("bad-json", [b"secondary", b"[1, 2]", PAYLOAD]),
    ("bad-version", frames(good_header(v=None), PAYLOAD)),
    ("bad-version", frames(good_header(v=2), PAYLOAD)),
    ("bad-seq", frames(good_header(seq=None), PAYLOAD)),
    ("bad-seq", frames(good_header(seq=-1), PAYLOAD)),
    ("bad-seq", frames(good_header(seq=1.5), PAYLOAD)),
    ("bad-dtype", frames(good_header(dtype="<i4"), PAYLOAD)),
    ("bad-dtype", frames(good_header(dtype=None), PAYLOAD)),
    ("bad-shape", frames(good_header(shape=[2, N, 1]), PAYLOAD)),
    ("bad-shape", frames(good_header(shape=[0, N]), b"")),
    ("bad-shape", frames(good_header(shape="32"), PAYLOAD)),
    ("bad-n", frames(good_header(shape=[4, N // 2]), PAYLOAD)),
    ("bad-size", frames(good_header(), PAYLOAD[:-4])),
    ("bad-size", frames(good_header(shape=[3, N]), PAYLOAD)),
    ("non-finite", frames(good_header(), np.r_[np.arange(2 * N - 1), np.nan].astype("<f4").tobytes())),
    ("non-finite", frames(good_header(), np.r_[np.inf, np.arange(2 * N - 1)].astype("<f4").tobytes())),
    ("bad-index", frames(good_header(iy=[0]), PAYLOAD)),
    ("bad-index", frames(good_header(ix=3), PAYLOAD)),
    ("bad-index", frames(good_header(shot=[1, "2"]), PAYLOAD)),
    ("bad-index", frames(good_header(iy=[0, -1]), PAYLOAD)),
    ("bad-index", frames(good_header(iy=[0, 10**7 * 10**7 * 10**7]), PAYLOAD)),
    ("bad-index", frames(good_header(shot=[0, -10**30]), PAYLOAD)),
    ("non-finite", frames(good_header(dtype="<f8"), np.r_[1e300, np.arange(2 * N - 1)].astype("<f8").tobytes())),
    ("too-many-spectra", frames(good_header(shape=[protocol.MAX_SPECTRA_PER_MESSAGE + 1, N]), b"")),
    ("bad-json", [b"secondary", b"[" * 1100 + b"]" * 1100, PAYLOAD]),
    ("bad-json", [b"secondary", json.dumps(good_header(note=json.loads("[" * 20 + "]" * 20))).encode(), PAYLOAD]),
    ("bad-json", [b"secondary", b" " * (protocol.MAX_HEADER_BYTES + 1), PAYLOAD]),
    ("bad-t", frames(good_header(t="now"), PAYLOAD)),
    ("bad-system", frames(good_header(system=3), PAYLOAD)),
]


@pytest.mark.parametrize("code,message", BROKEN, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BROKEN)])
def test_each_broken_rule_has_its_own_code_and_reason(code, message):
    with pytest.raises(MessageError) as info:
        decode_spectra(message, limits=protocol.Limits(n_pixels=N))
    assert info.value.code == code
    assert info.value.reason and len(info.value.reason) > 15


def test_in_seq_is_reported_when_readable():
    with pytest.raises(MessageError) as info:
        decode_spectra(frames(good_header(dtype="<i8"), PAYLOAD), limits=protocol.Limits(n_pixels=N))
    assert info.value.in_seq == 7 and "'<i8'" in info.value.reason
    with pytest.raises(MessageError) as info:
        decode_spectra([b"secondary", b"{oops", PAYLOAD], limits=protocol.Limits(n_pixels=N))
    assert info.value.in_seq is None


def test_reasons_are_distinct_across_rules():
    reasons = set()
    for code, message in BROKEN:
        with pytest.raises(MessageError) as info:
            decode_spectra(message, limits=protocol.Limits(n_pixels=N))
        reasons.add(info.value.reason)
    assert len(reasons) == len(BROKEN)


def test_status_and_error_are_three_frames_with_empty_payload():
    for sent in (protocol.encode_status({"received": 1}), protocol.encode_error("x", code="c", seq=0)):
        assert len(sent) == 3 and sent[2] == b""
        assert json.loads(sent[1])["v"] == 1


def test_depth_scan_agrees_with_the_parser_and_ignores_brackets_in_strings():
    assert protocol.json_depth(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[", "b": [1, {"c": [2]}]}') == 4
    assert protocol.json_depth(b'{"a": "\\"[[", "b": 1}') == 1
    assert protocol.json_depth(b"[" * 5000) == 5000


def test_deep_nesting_never_reaches_the_json_parser():
    # 100,000 levels would raise RecursionError in json.loads; the decoder refuses it first
    for data in (b"[" * 100_000 + b"]" * 100_000, b'{"v": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        limits = protocol.Limits(header_bytes=1 << 20, n_pixels=N)
        with pytest.raises(MessageError) as info:
            decode_spectra([b"secondary", data, PAYLOAD], limits=limits)
        assert info.value.code == "bad-json" and "levels deep" in info.value.reason


def test_reasons_quote_at_most_a_bounded_part_of_what_was_sent():
    huge = "x" * 100_000
    with pytest.raises(MessageError) as info:
        decode_spectra(frames(good_header(dtype=huge), PAYLOAD), limits=protocol.Limits(header_bytes=1 << 20))
    assert info.value.code == "bad-dtype" and len(info.value.reason) < 300
