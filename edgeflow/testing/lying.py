"""A hostile upstream: a gRPC server that stands for an edge or a cloud and lies in its replies.

The hostile-request suite (:mod:`edgeflow.testing.hostile`) attacks an agent as a caller would; this one attacks it
as the tier it calls would. :class:`LyingUpstream` relays every call to a real agent (so the handshake, probes and
honest replies are real) and rewrites each ``Infer`` reply with one :data:`LIES` entry, or answers ``Describe``
with a lying description. A device (in process, or an agent process) or an edge pointed at it must refuse every
lie as a bad reply — fall back, or answer a clear error — and never hand a lie on as the model's output::

    with LyingUpstream(cloud.address, "wrong-shape") as liar:
        device = DeviceClient.from_config(config_with_upstream(liar.address))
        r = device.infer(x)        # answered by the device itself, r.breakdown.fallback says "sent a bad reply"

Each lie is a function of the honest reply (decoded) and the request, returning the bytes to send instead.

Those lies are malformed; :class:`WrongClass` is the lie admission cannot see: a *well-formed* reply whose top
class is not the honest one, for a fraction of the requests (chosen by a hash of the request id and a seed, so a
run is reproducible whatever the timing). The logits of the honest class and the told one are swapped, so the
reply stays self-consistent (its exit confidence is still its logits' top probability); ``careless`` raises the
told class above the rest instead, so an exit reply's confidence no longer matches. ``choice``: ``uniform`` (any
other class) or ``runner-up`` (the honest logits' second class: the most plausible lie)::

    with LyingUpstream(edge.address, wrong_class=WrongClass(0.2, seed=1)) as liar: ...
"""

from __future__ import annotations

import struct
import threading
from concurrent import futures
from dataclasses import replace
from typing import Any, Callable, Iterator

import grpc

from edgeflow.agent.chaos import CHOICES as WRONG_CLASS_CHOICES
from edgeflow.agent.chaos import flip_classes, lies_about
from edgeflow.core.codecs import codec_from_spec, decode
from edgeflow.testing.hostile import _header, _zstd_declaring
from edgeflow.transport import InferReply, TierTiming, WireTensor
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import WireLimits, decode_reply, decode_request, encode_reply
from edgeflow.transport.service import SERVICE_NAME
from edgeflow.transport.wire import frame

__all__ = ["LIES", "DESCRIBE_LIES", "LyingUpstream", "WrongClass", "WRONG_CLASS_CHOICES"]

Lie = Callable[[InferReply, str], bytes]  # (honest reply, request id) -> the bytes sent instead


def _with(reply: InferReply, **changes: Any) -> bytes:
    return encode_reply(replace(reply, **changes))


def _retensor(reply: InferReply, **changes: Any) -> bytes:
    return _with(reply, tensors=[replace(reply.tensors[0], **changes), *reply.tensors[1:]])


def _bomb(t: WireTensor, declared: int) -> bytes:
    """``t``'s payload with its zstd body replaced by a tiny frame that declares ``declared`` bytes of content;
    the codec header (codec, dtype, shape) stays what ``t`` declares."""
    p = bytes(t.payload)
    ndim, params_nbytes = p[7], struct.unpack_from("<I", p, 8)[0]
    params = p[24 + 8 * ndim : 24 + 8 * ndim + params_nbytes]
    return _header(p[5], p[6], tuple(t.shape), _zstd_declaring(declared), params)


def _timings(reply: InferReply, n: int) -> bytes:
    msg = pb.InferResponse(id=reply.request_id, model_fingerprint=reply.fingerprint, position=reply.position)
    for t in reply.tensors:
        o = msg.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
        o.parameters["codec"].string_param = t.codec
    msg.breakdown.answered_by = reply.breakdown.answered_by
    msg.breakdown.exit_position = -1
    for _ in range(n):
        msg.breakdown.tiers.add()
    return frame(msg.SerializeToString(), 15, [bytes(t.payload) for t in reply.tensors])


LIES: dict[str, Lie] = {
    "other-request-id": lambda r, rid: _with(r, request_id=rid + "-someone-else"),
    "wrong-fingerprint": lambda r, rid: _with(r, fingerprint="0" * 16),
    "empty-reply": lambda r, rid: b"",
    "error-code-on-unary": lambda r, rid: _with(r, tensors=[], error_code=13, error_message="stream-only field"),
    "no-tensors": lambda r, rid: _with(r, tensors=[]),
    "position-33": lambda r, rid: _with(r, position=33),
    "exit-not-in-plan": lambda r, rid: _with(r, breakdown=replace(r.breakdown, exit_position=7)),
    "answered-by-the-device": lambda r, rid: _with(r, breakdown=replace(r.breakdown, answered_by="device")),
    "32-outputs": lambda r, rid: _with(r, tensors=[r.tensors[0]] * 32),
    "wrong-shape": lambda r, rid: _retensor(r, shape=(3, 1, 2)),
    "wrong-dtype": lambda r, rid: _retensor(r, datatype="INT64"),
    "declared-shape-not-payload": lambda r, rid: _retensor(r, shape=(1, r.tensors[0].shape[-1] + 1)),
    "garbage-payload": lambda r, rid: _retensor(r, payload=b"\x00" * len(r.tensors[0].payload)),
    "truncated-payload": lambda r, rid: _retensor(r, payload=bytes(r.tensors[0].payload)[:-7]),
    "zstd-bomb-1gib": lambda r, rid: _retensor(r, payload=_bomb(r.tensors[0], 2**30)),
    "two-zstd-bombs": lambda r, rid: _with(r, tensors=[replace(r.tensors[0], payload=_bomb(r.tensors[0], 2**30))] * 2),
    "1m-tier-timings": lambda r, rid: _timings(r, 1_000_000),
    "long-fallback-string": lambda r, rid: _with(r, breakdown=replace(r.breakdown, fallback="x" * 1_000_000)),
    "nan-timings": lambda r, rid: _with(r, breakdown=replace(r.breakdown, tiers=[TierTiming("cloud", total_s=float("nan"))])),
}

# Describe answers that lie about the upstream (the planner divides by its slowdown, reads its profile)
DESCRIBE_LIES: dict[str, Callable[[pb.DescribeResponse], None]] = {
    "slowdown-negative": lambda d: setattr(d, "slowdown_factor", -1.0),
    "slowdown-nan": lambda d: setattr(d, "slowdown_factor", float("nan")),
    "profile-infinite": lambda d: [setattr(p, "compute_s", float("inf")) for p in d.profile] or d.profile.add(
        start=0, stop=1, compute_s=float("inf")),
}


class WrongClass:
    """Flip the answer of a ``fraction`` of the requests to a wrong class, well-formed (see the module doc; the lie is
    :func:`edgeflow.agent.chaos.flip_classes`, the one an agent with a ``chaos`` section tells).

    Args:
        fraction: share of requests lied about, in [0, 1] (decided per request id, reproducibly).
        seed: varies which requests and which classes.
        choice: ``uniform`` or ``runner-up``.
        careless: change the logits without keeping an exit's reported confidence consistent.
    """

    def __init__(self, fraction: float, *, seed: int = 0, choice: str = "uniform", careless: bool = False):
        if not 0 <= fraction <= 1 or choice not in WRONG_CLASS_CHOICES:
            raise ValueError(f"fraction {fraction} must be in [0, 1], choice one of {WRONG_CLASS_CHOICES}")
        self.fraction, self.seed, self.choice, self.careless = fraction, seed, choice, careless
        self.flipped: set[str] = set()  # request ids lied about (bounded by the requests a test sends)

    def lies_about(self, request_id: str) -> bool:
        return lies_about(request_id, self.fraction, self.seed)

    def __call__(self, reply: InferReply, request_id: str) -> bytes | None:
        """The lying reply's bytes, or None to pass the honest one (not chosen, or nothing to flip)."""
        if not self.lies_about(request_id) or len(reply.tensors) != 1 or len(reply.tensors[0].shape) != 2:
            return None
        t = reply.tensors[0]
        logits = decode(t.payload, t.decode_limits())  # (B, C)
        if logits.shape[1] < 2:
            return None
        told = flip_classes(logits, request_id, seed=self.seed, choice=self.choice, careless=self.careless)
        self.flipped.add(request_id)
        return _with(reply, tensors=[replace(t, payload=codec_from_spec(t.codec).encode(told))])


class LyingUpstream:
    """A gRPC server on loopback relaying every call to the real agent at ``target`` and lying in its replies.

    Args:
        target: the honest agent's ``host:port``.
        lie: a :data:`LIES` name (every ``Infer`` reply rewritten), or None (honest).
        describe_lie: a :data:`DESCRIBE_LIES` name (``Describe`` answers rewritten), or None.
        stream_extra: on ``InferStream``, replies for ids never requested sent before each honest one.
    """

    def __init__(self, target: str, lie: str | None = None, *, describe_lie: str | None = None, stream_extra: int = 0,
                 wrong_class: WrongClass | None = None):  # fmt: skip
        if lie is not None and wrong_class is not None:
            raise ValueError("give a malformed lie or wrong_class, not both")
        self.lie = LIES[lie] if lie is not None else None
        self.wrong_class = wrong_class
        self.describe_lie = DESCRIBE_LIES[describe_lie] if describe_lie is not None else None
        self.stream_extra = stream_extra
        self.lies_told = 0
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20),
                                                               ("grpc.max_send_message_length", 64 << 20)])  # fmt: skip
        path = f"/{SERVICE_NAME}/"
        self._up = {name: self._channel.unary_unary(path + name) for name in ("Describe", "Infer", "Probe")}
        self._up_stream = self._channel.stream_stream(path + "InferStream")
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                   options=[("grpc.max_receive_message_length", 64 << 20),
                                            ("grpc.max_send_message_length", 64 << 20)])  # fmt: skip
        handlers = {
            "Describe": grpc.unary_unary_rpc_method_handler(self._describe),
            "Infer": grpc.unary_unary_rpc_method_handler(self._infer),
            "Probe": grpc.unary_unary_rpc_method_handler(lambda data, ctx: self._up["Probe"](data)),
            "InferStream": grpc.stream_stream_rpc_method_handler(self._infer_stream),
        }
        self._server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)])
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self._server.start()

    def _describe(self, data: bytes, ctx: grpc.ServicerContext) -> bytes:
        out = self._up["Describe"](data)
        if self.describe_lie is None:
            return out
        msg = pb.DescribeResponse()
        msg.ParseFromString(out)
        self.describe_lie(msg)
        self._told()
        return msg.SerializeToString()

    def _infer(self, data: bytes, ctx: grpc.ServicerContext) -> bytes:
        out = self._up["Infer"](data)
        if self.wrong_class is not None:
            lied = self.wrong_class(decode_reply(out, WireLimits()), decode_request(data, WireLimits()).request_id)
            if lied is None:
                return out
            self._told()
            return lied
        if self.lie is None:
            return out
        rid = decode_request(data, WireLimits()).request_id
        self._told()
        return self.lie(decode_reply(out, WireLimits()), rid)

    def _infer_stream(self, requests: Iterator[bytes], ctx: grpc.ServicerContext) -> Iterator[bytes]:
        for data in requests:
            out = self._up["Infer"](data)
            reply = decode_reply(out, WireLimits())
            for i in range(self.stream_extra):
                self._told()
                yield encode_reply(replace(reply, request_id=f"never-requested-{i}"))
            yield out

    def _told(self) -> None:
        with self._lock:
            self.lies_told += 1

    def close(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def __enter__(self) -> "LyingUpstream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
