"""Text on the wire (edgeflow.transport.strings): KServe v2's length-prefixed BYTES layout, strictly parsed; a BYTES
tensor travels in an InferRequest without a codec."""

from __future__ import annotations

import struct

import pytest

from edgeflow.errors import InvalidRequest
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import InferCall, WireLimits, WireTensor, decode_request, encode_request
from edgeflow.transport.strings import BYTES, MAX_STRING_BYTES, decode_strings, encode_strings

LABEL = "model input 'text'"


@pytest.mark.parametrize("strings", [["a"], ["", "two words", "é ü 中 🙂"], ["x" * MAX_STRING_BYTES]])
def test_round_trip(strings: list[str]) -> None:
    payload = encode_strings(strings)
    assert payload[:4] == struct.pack("<I", len(strings[0].encode()))  # KServe v2: 4-byte little-endian length
    assert decode_strings(payload, len(strings), LABEL) == strings
    assert decode_strings(memoryview(payload), len(strings), LABEL) == strings


@pytest.mark.parametrize(
    ("payload", "count", "words"),
    [
        (encode_strings(["a", "b"]), 3, "declares 3 strings, the payload holds 2"),
        (encode_strings(["a", "b"]), 1, "declares 1 strings, the payload holds more"),
        (b"", 1, "declares 1 strings, the payload holds 0"),
        (b"\x01\x00", 1, "row 0: truncated length prefix at byte 0"),
        (b"\x05\x00\x00\x00ab", 1, "row 0 declares 5 bytes, 2 are left"),
        (encode_strings(["ok"]) + b"\x02\x00\x00\x00\xc3\x28", 2, "row 1 is not UTF-8"),
        (encode_strings(["y" * (MAX_STRING_BYTES + 1)]), 1, f"row 0 is {MAX_STRING_BYTES + 1} bytes long, limit"),
        (b"\xff\xff\xff\xff", 1, "row 0 is 4294967295 bytes long"),
    ],
)
def test_malformed_payloads_are_refused_naming_the_input_and_row(payload: bytes, count: int, words: str) -> None:
    with pytest.raises(InvalidRequest, match=f"{LABEL}: {words}"):
        decode_strings(payload, count, LABEL)


def test_a_bytes_tensor_travels_without_a_codec() -> None:
    text = WireTensor("text", BYTES, (2,), "", encode_strings(["one", "two"]))
    data = encode_request(InferCall("r1", "fp", 0, [text]))
    msg = pb.InferRequest.FromString(data)  # a standard client reads it: no codec parameter on a BYTES tensor
    assert msg.inputs[0].datatype == "BYTES" and "codec" not in msg.inputs[0].parameters
    call = decode_request(data, WireLimits())
    (t,) = call.tensors
    assert (t.name, t.datatype, t.shape, t.codec) == ("text", BYTES, (2,), "")
    assert decode_strings(t.payload, 2, LABEL) == ["one", "two"]
    bad = encode_request(InferCall("r1", "fp", 0, [WireTensor("text", BYTES, (2, 1), "", b"")]))
    with pytest.raises(InvalidRequest, match=r"is BYTES \(text\) with shape \[2, 1\]; text has shape \[batch\]"):
        decode_request(bad, WireLimits())
