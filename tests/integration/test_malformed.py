"""Malformed input against a live agent: each is refused with the right status and a message naming the
problem, and the agent goes on serving (a valid request succeeds after every case)."""

from __future__ import annotations

import pickle

import grpc
import pytest
import torch

from edgeflow.core.codecs import get_codec
from edgeflow.transport import SERVICE_NAME, InferCall, WireTensor, datatype_of
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import WireLimits, decode_reply, encode_request

START = 36


def _call(runtime, **change) -> InferCall:  # type: ignore[no-untyped-def]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    v = runtime.partition.run_range(0, START, x)
    values = [v] if isinstance(v, torch.Tensor) else list(v)
    codec = get_codec("lossless")
    tensors = [WireTensor(i.name, datatype_of(i.dtype), tuple(t.shape), "lossless", codec.encode(t))
               for i, t in zip(runtime.cut_info(START).tensors, values)]
    call = InferCall("bad", runtime.fingerprint, START, tensors)
    for k, v in change.items():
        if k.startswith("t_"):
            t = call.tensors[0]
            fields = dict(name=t.name, datatype=t.datatype, shape=t.shape, codec=t.codec, payload=t.payload)
            fields[k[2:]] = v(t) if callable(v) else v
            call.tensors[0] = WireTensor(**fields)
        else:
            setattr(call, k, v)
    return call


def _flip(payload: bytes, at: int) -> bytes:
    b = bytearray(payload)
    b[at] ^= 0x55
    return bytes(b)


def _bomb_header(t: WireTensor) -> bytes:
    """A lossless payload whose header claims a 10^8-element tensor (a decompression bomb)."""
    return get_codec("lossless").encode(torch.zeros(1, 10**4, 100, 100, dtype=torch.uint8))


CASES = {
    "garbage": (lambda rt: b"\xff" * 64, "INVALID_ARGUMENT", "malformed message"),
    "truncated message": (lambda rt: encode_request(_call(rt))[:-10], "INVALID_ARGUMENT", "malformed message"),
    "not utf-8 id": (lambda rt: b"\x0a\x02\xc3\x28", "INVALID_ARGUMENT", "malformed InferRequest"),
    "wrong fingerprint": (lambda rt: encode_request(_call(rt, fingerprint="x" * 64)), "FAILED_PRECONDITION", "fingerprint mismatch"),
    "unknown codec": (lambda rt: encode_request(_call(rt, t_codec="brotli")), "INVALID_ARGUMENT", "unknown codec 'brotli'"),
    "wrong dtype": (lambda rt: encode_request(_call(rt, t_datatype="INT64")), "INVALID_ARGUMENT", "datatype INT64, expected FP32"),
    "wrong shape": (lambda rt: encode_request(_call(rt, t_shape=(1, 7, 8, 8))), "INVALID_ARGUMENT", "has shape [1, 7, 8, 8]"),
    "unknown datatype": (lambda rt: encode_request(_call(rt, t_datatype="FP8")), "INVALID_ARGUMENT", "unknown datatype 'FP8'"),
    "wrong range": (lambda rt: encode_request(_call(rt, start=10**6)), "INVALID_ARGUMENT", "out of range"),
    "backwards range": (lambda rt: encode_request(_call(rt, stop=10)), "INVALID_ARGUMENT", "runs backwards"),
    "huge batch": (lambda rt: encode_request(_call(rt, t_shape=lambda t: (10**6, *t.shape[1:]))), "RESOURCE_EXHAUSTED", "limit 64"),
    "corrupt payload header": (lambda rt: encode_request(_call(rt, t_payload=lambda t: _flip(t.payload, 25))), "INVALID_ARGUMENT", "corrupt header"),
    "corrupt payload body": (lambda rt: encode_request(_call(rt, t_payload=lambda t: _flip(t.payload, -2))), "INVALID_ARGUMENT", ""),
    "truncated payload": (lambda rt: encode_request(_call(rt, t_payload=lambda t: bytes(t.payload)[:40])), "INVALID_ARGUMENT", "truncated"),
    "pickle payload": (lambda rt: encode_request(_call(rt, t_payload=pickle.dumps({"a": list(range(20))}))), "INVALID_ARGUMENT", "not an edgeflow tensor payload"),
    "bomb payload": (lambda rt: encode_request(_call(rt, t_payload=_bomb_header)), "INVALID_ARGUMENT", "over the limit"),
    "payload count": (lambda rt: pb.InferRequest(id="x", raw_input_contents=[b"1"]).SerializeToString(), "INVALID_ARGUMENT", "0 input tensors but 1 raw payloads"),
}


@pytest.fixture(scope="module")
def infer(cloud):  # type: ignore[no-untyped-def]
    ch = grpc.insecure_channel(cloud.address, options=[("grpc.max_send_message_length", 80 << 20)])
    yield ch.unary_unary(f"/{SERVICE_NAME}/Infer")
    ch.close()


def _assert_still_serving(infer, runtime) -> None:  # type: ignore[no-untyped-def]
    reply = decode_reply(infer(encode_request(_call(runtime)), timeout=30), WireLimits())
    assert reply.position == runtime.num_positions and reply.breakdown.answered_by == "cloud"


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_request_is_refused_then_a_valid_one_succeeds(infer, runtime, case: str) -> None:  # type: ignore[no-untyped-def]
    build, code, words = CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        infer(build(runtime), timeout=30)
    assert err.value.code().name == code, err.value.details()
    assert words in err.value.details()
    _assert_still_serving(infer, runtime)


def test_oversized_message_is_resource_exhausted(infer, runtime) -> None:  # type: ignore[no-untyped-def]
    big = encode_request(_call(runtime, t_payload=bytes(65 << 20)))
    with pytest.raises(grpc.RpcError) as err:
        infer(big, timeout=30)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_still_serving(infer, runtime)


def test_bad_stream_items_fail_alone(cloud, runtime) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(cloud.address) as ch:
        stream = ch.stream_stream(f"/{SERVICE_NAME}/InferStream")
        good = encode_request(_call(runtime, request_id="good"))
        items = [good, CASES["unknown codec"][0](runtime), b"\xff\xff", good]
        replies = [decode_reply(r, WireLimits()) for r in stream(iter(items), timeout=30)]
    codes = sorted(r.error_code for r in replies)
    assert codes == [0, 0, 3, 3]  # two OK, two INVALID_ARGUMENT
    assert any("unknown codec" in r.error_message for r in replies)


def test_malformed_describe_and_probe(cloud, runtime) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(cloud.address) as ch:
        for method in ("Describe", "Probe"):
            call = ch.unary_unary(f"/{SERVICE_NAME}/{method}")
            with pytest.raises(grpc.RpcError) as err:
                call(b"\x0a\xff", timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        describe = ch.unary_unary(f"/{SERVICE_NAME}/Describe")
        with pytest.raises(grpc.RpcError) as err:
            describe(pb.DescribeRequest(model_fingerprint="other", caller_role="edge").SerializeToString(), timeout=10)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "fingerprint mismatch" in err.value.details()
