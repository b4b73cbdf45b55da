"""Raw-payload framing: wire compatible with protobuf, zero-copy on receive, bounded on hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.errors import InvalidRequest, RequestRejected, RequestTooLarge
from edgeflow.transport.wire import encode_varint, frame, split_fields

LIMITS = dict(max_payloads=8, max_payload_nbytes=1 << 20)


def _meta() -> bytes:
    m = pb.InferRequest(id="r1", model_fingerprint="fp", start=3)
    t = m.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    t.parameters["codec"].string_param = "lossless"
    return m.SerializeToString()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    # int64 field 2 of InferParameter is a varint: tag 0x10, then the value
    assert pb.InferParameter(int64_param=value).SerializeToString() == b"\x10" + encode_varint(value)


def test_framed_message_is_a_valid_protobuf_message() -> None:
    payloads = [b"abc", b"", bytes(range(256)) * 10]
    data = frame(_meta(), 15, payloads)
    msg = pb.InferRequest.FromString(data)
    assert list(msg.raw_input_contents) == payloads
    assert msg.id == "r1" and msg.start == 3 and msg.inputs[0].parameters["codec"].string_param == "lossless"


def test_split_takes_zero_copy_views_and_parses_the_rest() -> None:
    big = bytes(range(256)) * 4096
    data = frame(_meta(), 15, [big, b"tail"])
    rest, payloads = split_fields(data, 15, **LIMITS)
    assert [bytes(p) for p in payloads] == [big, b"tail"]
    assert payloads[0].obj is data  # a view of the received buffer, not a copy
    msg = pb.InferRequest()
    msg.ParseFromString(rest)
    assert msg.id == "r1" and not msg.raw_input_contents


def test_split_accepts_standard_protobuf_encoding_with_fields_in_any_order() -> None:
    m = pb.InferRequest(id="r2", start=5, raw_input_contents=[b"one", b"two"])
    data = m.SerializeToString() + pb.InferRequest(stop=9).SerializeToString()  # raw fields in the middle
    rest, payloads = split_fields(data, 15, **LIMITS)
    assert [bytes(p) for p in payloads] == [b"one", b"two"]
    got = pb.InferRequest.FromString(bytes(rest))
    assert (got.id, got.start, got.stop) == ("r2", 5, 9)


@pytest.mark.parametrize(
    "data, error, words",
    [
        (b"\x7a", InvalidRequest, "truncated varint"),
        (b"\x7a\x05ab", InvalidRequest, "declares 5 bytes, only 2 left"),
        (b"\x0a\x05ab", InvalidRequest, "runs past the end"),
        (b"\x0b", InvalidRequest, "unsupported wire type 3"),
        (b"\x0e", InvalidRequest, "unsupported wire type 6"),
        (b"\x02\x00", InvalidRequest, "invalid field number 0"),
        (b"\x18" + b"\xff" * 11, InvalidRequest, "longer than 10 bytes"),
        (b"\x7a" + encode_varint(2 << 20) + b"x", InvalidRequest, "declares 2097152 bytes, only 1 left"),
        (b"\x7a" + encode_varint((1 << 20) + 1) + bytes((1 << 20) + 1), RequestTooLarge, "1048577 bytes > limit"),
        (b"\x7a\x00" * 9, RequestTooLarge, "more than 8 raw payloads"),
    ],
)
def test_malformed_input_names_the_problem(data: bytes, error: type, words: str) -> None:
    with pytest.raises(error) as err:
        split_fields(data, 15, **LIMITS)
    assert words in str(err.value)


def test_too_many_fields_is_bounded() -> None:
    with pytest.raises(InvalidRequest, match="more than 100 top-level fields"):
        split_fields(b"\x18\x01" * 101, 15, max_fields=100, **LIMITS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_a_request_error(data: bytes) -> None:
    try:
        rest, payloads = split_fields(data, 15, **LIMITS)
    except RequestRejected:
        return
    assert sum(len(p) for p in payloads) <= len(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_corrupted_frames_never_escape_as_other_errors(data: st.DataObject) -> None:
    framed = bytearray(frame(_meta(), 15, [b"x" * 40, b"y" * 7]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(framed) - 1))
        framed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(framed)))
    try:
        split_fields(bytes(framed[:cut]), 15, **LIMITS)
    except RequestRejected:
        pass
