"""Dataclass <-> wire encoding of agent messages, and the checks made while parsing."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from edgeflow.core.codecs import codec_from_spec, decode
from edgeflow.core.codecs.format import PayloadParts
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.errors import InvalidRequest, RequestTooLarge
from edgeflow.transport.messages import (
    Breakdown,
    Counters,
    Description,
    InferCall,
    InferReply,
    RangeProfile,
    TierTiming,
    WireLimits,
    WireTensor,
    datatype_of,
    decode_description,
    decode_reply,
    decode_request,
    dtype_name_of,
    encode_description,
    encode_reply,
    encode_request,
)

LIMITS = WireLimits(max_message_bytes=1 << 20, max_tensors=4, max_dims=4)


def _call() -> InferCall:
    return InferCall(
        "req-1",
        "fp",
        7,
        [WireTensor("a", "FP32", (2, 3), "int8:z3", b"payload-a"), WireTensor("b", "INT64", (2,), "lossless", b"pb")],
        output_codec="fp16",
    )


def test_request_round_trip() -> None:
    data = encode_request(_call())
    got = decode_request(data, LIMITS)
    assert got.wire_nbytes == len(data)
    got.wire_nbytes = 0
    got.tensors = [WireTensor(t.name, t.datatype, t.shape, t.codec, bytes(t.payload)) for t in got.tensors]
    assert got == _call()


def test_reply_round_trip_with_breakdown() -> None:
    tiers = [TierTiming("device", 0, 7, compute_s=0.5, bytes_out=10), TierTiming("cloud", 7, 9, total_s=0.25)]
    reply = InferReply("req-1", "fp", 9, [WireTensor("output", "FP32", (1, 10), "lossless", b"xyz")],
                       Breakdown(tiers, "cloud", -1, 0.0))
    got = decode_reply(encode_reply(reply), LIMITS)
    assert got.breakdown == reply.breakdown
    assert bytes(got.tensors[0].payload) == b"xyz" and got.position == 9


def test_standard_protobuf_clients_read_our_messages() -> None:
    msg = pb.InferRequest.FromString(encode_request(_call()))
    assert [t.name for t in msg.inputs] == ["a", "b"]
    assert list(msg.raw_input_contents) == [b"payload-a", b"pb"]
    assert msg.parameters["output_codec"].string_param == "fp16"


@pytest.mark.parametrize("spec", ["lossless", "int8:z3", "fp16", "jpeg"])
def test_a_payload_sent_as_its_parts_frames_the_same_message(spec: str) -> None:
    """A tensor about to be sent carries its codec's parts (header, body), written into the message without joining
    them first: the bytes are exactly those of the joined payload, and protobuf itself reads them as the message
    built the normal way."""
    x = torch.rand(2, 3, 8, 8)
    codec = codec_from_spec(spec)
    parts = codec.encode_parts(x)
    assert isinstance(parts, PayloadParts) and parts.nbytes == len(codec.encode(x))
    joined = replace(_call(), tensors=[WireTensor("a", "FP32", (2, 3, 8, 8), spec, parts.join())])
    ours = encode_request(replace(joined, tensors=[replace(joined.tensors[0], payload=parts)]))
    assert ours == encode_request(joined)
    normal = pb.InferRequest(id="req-1", model_fingerprint="fp", start=7, raw_input_contents=[parts.join()])
    normal.inputs.add(name="a", datatype="FP32", shape=[2, 3, 8, 8]).parameters["codec"].string_param = spec
    normal.parameters["output_codec"].string_param = "fp16"
    assert pb.InferRequest.FromString(ours) == normal
    got = decode_request(ours, LIMITS)
    assert bytes(got.tensors[0].payload) == parts.join() and got.tensors[0].nbytes == parts.nbytes
    assert torch.equal(decode(got.tensors[0].payload), decode(parts.join()))


def test_description_round_trip() -> None:
    d = Description("edge", "fp", 70, [1, 2, 3], ["lossless"], "edge[0:]", [RangeProfile(0, 1, 0.5)],
                    2.0, (1.0, 2.0, 3.0), "cpu", 1, 1 << 20, 8, "127.0.0.1:1", "0.1.0", [("x", "FP32", (1, 3, 8, 8))])
    assert decode_description(encode_description(d)) == d


def test_description_carries_its_upstreams_one_level_deep() -> None:
    cloud = Description("cloud", "fp", 70, [1], ["lossless"], "cloud[0:]", [RangeProfile(0, 1, 0.25)], 1.0)
    edge = Description("edge", "fp", 70, [1], ["lossless"], "edge[0:]", upstream="127.0.0.1:2",
                       upstream_description=replace(cloud, upstream_description=cloud))  # fmt: skip
    assert decode_description(encode_description(edge)).upstream_description == cloud  # not cloud's own upstream
    failed = replace(edge, upstream_description=None, upstream_error="upstream 127.0.0.1:2 did not answer")
    assert decode_description(encode_description(failed)) == failed
    assert edge.to_json()["upstream_description"]["profile"] == [{"start": 0, "stop": 1, "compute_s": 0.25}]


def test_description_counters_round_trip() -> None:
    reason = "edge: upstream cloud at 127.0.0.1:5 unavailable: x; finished [36:70] locally"
    counters = Counters(requests=12, fallbacks=2, duplicates_served=3, shed=4, last_fallback=reason)
    d = Description("edge", "fp", 70, [1], ["lossless"], "edge[0:]", counters=counters)
    data = encode_description(d)
    assert decode_description(data).counters == counters
    c = pb.DescribeResponse.FromString(data).counters  # what a standard protobuf client (grpcurl, ...) reads
    assert (c.requests, c.fallbacks, c.duplicates_served, c.shed, c.last_fallback) == (12, 2, 3, 4, reason)
    assert d.to_json()["counters"] == {"requests": 12, "fallbacks": 2, "duplicates_served": 3, "shed": 4,
                                       "last_fallback": reason}  # fmt: skip


def test_description_without_counters_reads_as_zeros() -> None:
    old = pb.DescribeResponse(role="cloud", model_fingerprint="fp").SerializeToString()  # an agent predating field 17
    assert decode_description(old).counters == Counters() == Counters(0, 0, 0, 0, "")


def test_datatypes() -> None:
    assert datatype_of("float32") == "FP32" and dtype_name_of("BF16") == "bfloat16"
    with pytest.raises(InvalidRequest, match="unknown datatype 'FP8'"):
        dtype_name_of("FP8")


def _raw(msg: pb.InferRequest) -> bytes:
    return msg.SerializeToString()


def _tensor(msg: pb.InferRequest, **kw: object) -> pb.Tensor:
    t = msg.inputs.add(**{"name": "x", "datatype": "FP32", "shape": [1, 2], **kw})
    return t


@pytest.mark.parametrize(
    "build, error, words",
    [
        (lambda m: (_tensor(m), m.raw_input_contents.append(b"")), InvalidRequest, "lacks the 'codec'"),
        (lambda m: _tensor(m), InvalidRequest, "1 input tensors but 0 raw payloads"),
        (lambda m: (_tensor(m, datatype="F32"), m.raw_input_contents.append(b"")), InvalidRequest, "unknown datatype 'F32'"),
        (lambda m: (_tensor(m, shape=[1, -2]), m.raw_input_contents.append(b"")), InvalidRequest, "negative dim"),
        (lambda m: (_tensor(m, shape=[1] * 5), m.raw_input_contents.append(b"")), InvalidRequest, "rank 5, limit 4"),
        (lambda m: [(_tensor(m), m.raw_input_contents.append(b"")) for _ in range(5)], RequestTooLarge, "raw payloads"),
        (lambda m: setattr(m, "id", "i" * 300), InvalidRequest, "request id is 300 characters"),
    ],
)
def test_bad_requests_name_the_problem(build, error: type, words: str) -> None:  # type: ignore[no-untyped-def]
    msg = pb.InferRequest(id="r", model_fingerprint="fp")
    build(msg)
    with pytest.raises(error) as err:
        decode_request(_raw(msg), LIMITS)
    assert words in str(err.value)


def test_invalid_utf8_in_a_string_field_is_invalid_argument() -> None:
    bad = b"\x0a\x02\xff\xfe"  # field 1 (id), 2 bytes, not UTF-8
    with pytest.raises(InvalidRequest, match="malformed InferRequest"):
        decode_request(bad, LIMITS)


def test_a_device_check_of_its_upstream_travels_in_the_reply_parameters() -> None:
    b = Breakdown([TierTiming("device")], "device", validation="recomputed", validation_reason="edge answered 3",
                  upstream_classes=(3, 7))  # fmt: skip
    got = decode_reply(encode_reply(InferReply("r", "fp", 70, [], b)), LIMITS).breakdown
    assert (got.validation, got.validation_reason, got.upstream_classes) == ("recomputed", "edge answered 3", (3, 7))
    assert got.to_json()["upstream_classes"] == [3, 7]
    plain = decode_reply(encode_reply(InferReply("r", "fp", 70, [], Breakdown())), LIMITS).breakdown
    assert (plain.validation, plain.upstream_classes) == ("", ())


@pytest.mark.parametrize("status, classes, want", [("lied", "3", ("", ())), ("ok", "3,-1", ("ok", ())),
                                                   ("ok", "1" * 5000, ("ok", ())), ("ok", "x", ("ok", ()))])
def test_a_malformed_validation_report_is_dropped(status: str, classes: str, want: tuple) -> None:
    msg = pb.InferResponse(id="r", model_fingerprint="fp", position=70)
    msg.parameters["validation"].string_param = status
    msg.parameters["upstream_classes"].string_param = classes
    from edgeflow.transport.wire import frame

    got = decode_reply(frame(msg.SerializeToString(), 15, []), LIMITS).breakdown
    assert (got.validation, got.upstream_classes) == want
