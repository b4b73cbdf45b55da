"""The messages agents exchange, as plain dataclasses, and their wire encoding.

Protobuf stays inside this package: the agent builds and reads these dataclasses. Payload bytes are never
copied by protobuf — :func:`encode_request` appends them raw and :func:`decode_request` hands out zero-copy
``memoryview`` slices of the received buffer (see :mod:`edgeflow.transport.wire`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from google.protobuf.message import DecodeError

from edgeflow.core.codecs import DecodeLimits
from edgeflow.core.codecs.format import PayloadParts
from edgeflow.transport.strings import BYTES
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.errors import InvalidRequest, RequestTooLarge
from edgeflow.transport.wire import frame, split_fields

__all__ = [
    "DATATYPES",
    "datatype_of",
    "dtype_name_of",
    "WireLimits",
    "WireTensor",
    "InferCall",
    "TierTiming",
    "Breakdown",
    "InferReply",
    "RangeProfile",
    "Counters",
    "LinkReading",
    "PlanSwitch",
    "LiveState",
    "Description",
    "encode_request",
    "decode_request",
    "encode_reply",
    "decode_reply",
    "encode_description",
    "decode_description",
]

_RAW_FIELD = 15  # raw_input_contents / raw_output_contents / payload, in agent.proto

# torch dtype name -> KServe v2 datatype string
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
}
_DTYPE_NAMES = {v: k for k, v in DATATYPES.items()}
_ITEMSIZES = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
              "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}  # fmt: skip


def datatype_of(dtype_name: str) -> str:
    """KServe datatype string of a torch dtype name (``"float32"`` -> ``"FP32"``).

    Raises:
        InvalidRequest: a dtype with no KServe datatype.
    """
    try:
        return DATATYPES[dtype_name]
    except KeyError:
        raise InvalidRequest(f"dtype {dtype_name!r} has no wire datatype (known: {sorted(DATATYPES)})") from None


def dtype_name_of(datatype: str) -> str:
    """Torch dtype name of a KServe datatype string (``"FP32"`` -> ``"float32"``).

    Raises:
        InvalidRequest: unknown datatype string.
    """
    try:
        return _DTYPE_NAMES[datatype]
    except KeyError:
        raise InvalidRequest(f"unknown datatype {datatype!r} (known: {sorted(_DTYPE_NAMES)})") from None


@dataclass(frozen=True)
class WireLimits:
    """Bounds on what a peer may send; the same numbers configure gRPC's message-size limits.

    Attributes:
        max_message_bytes: whole gRPC message, both directions (gRPC answers RESOURCE_EXHAUSTED beyond it).
        max_tensors: tensors per message (several values cross a cut inside a residual block).
        max_dims: rank of any tensor.
        max_name_chars: length of ids, names and codec names.
    """

    max_message_bytes: int = 64 * 1024 * 1024
    max_tensors: int = 32
    max_dims: int = 8
    max_name_chars: int = 256


@dataclass
class WireTensor:
    """One named tensor as it travels: a codec payload plus the decoded tensor's datatype and shape.

    A tensor about to be sent may carry its payload as :class:`PayloadParts` (``Codec.encode_parts``): framing the
    message then copies the codec's body once, not twice. Received tensors always carry a buffer (a view of the
    message), and only those are decoded or hashed.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    codec: str
    payload: bytes | memoryview | PayloadParts

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire."""
        p = self.payload
        return p.nbytes if isinstance(p, PayloadParts) else memoryview(p).nbytes

    def decode_limits(self) -> DecodeLimits:
        """Decoding bounded by the declaration: the declared shape's elements at the datatype's size (an unknown
        datatype sized as the widest; a header check refuses it), not a generic gigabyte."""
        numel = math.prod(max(0, int(d)) for d in self.shape)
        return DecodeLimits(max_elements=max(1, numel), max_bytes=max(1, numel * _ITEMSIZES.get(self.datatype, 8)))


@dataclass
class InferCall:
    """An inference request: the live values at ``start``.

    Attributes:
        request_id: caller-chosen id, echoed back.
        fingerprint: the caller's model fingerprint.
        start: position the tensors are live at.
        stop: 0 to run to the model output (forwarding upstream per plan), else the position to stop at here.
        tensors: the live values at ``start``, in position order.
        output_codec: codec for the values returned when ``stop`` is set ("" = agent default).
        plan: the plan this request goes by, text form ("" = the agent's configured plan); stamped by the
            device so that a re-plan never changes a request in flight.
        wire_nbytes: size of the received message (set by :func:`decode_request`).
        stream: the stream this request is a frame of ("" = none; request parameter ``stream``): hops code its
            values against the previous frame's reconstruction (``edgeflow.agent.streams``).
        frame: its frame number in the stream (request parameter ``frame``, >= 0; -1 without a stream).
        caller: who sent it, as the server saw it (TLS identity, else the connection); not on the wire. Stream ids
            are scoped by it.
    """

    request_id: str
    fingerprint: str
    start: int
    tensors: list[WireTensor]
    stop: int = 0
    output_codec: str = ""
    plan: str = ""
    wire_nbytes: int = 0
    stream: str = ""
    frame: int = -1
    caller: str = ""


@dataclass
class TierTiming:
    """Seconds and bytes one tier spent on one request (see ``TierTiming`` in agent.proto)."""

    tier: str
    start: int = 0
    stop: int = 0
    queue_s: float = 0.0
    compute_s: float = 0.0
    encode_s: float = 0.0
    decode_s: float = 0.0
    network_s: float = 0.0
    total_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_back: int = 0
    energy_j: float = 0.0
    batch_size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Breakdown:
    """Where a request's time and bytes went, tier by tier in chain order.

    ``fallback`` is empty unless a tier could not reach its upstream and finished the model itself; then it says
    which tier, why, and what it ran, starting with that tier's role:
    ``"edge: upstream cloud at 127.0.0.1:5 unavailable: ...; finished [52:70] locally"``.
    """

    tiers: list[TierTiming] = field(default_factory=list)
    answered_by: str = ""
    exit_position: int = -1
    exit_confidence: float = 0.0
    fallback: str = ""
    memory: str = ""  # the device's result memory: "hit" (answered from it), "near" (from a near-duplicate's answer,
    # agent/nearmemory.py), "miss", "" (off, or not an input)
    memory_saved_bytes: int = 0  # on a hit: the bytes the original request moved over every hop
    # the device's check of an upstream answer (node section validate): "ok", "flagged", "recomputed", "unchecked",
    # "" (off, or the device answered); why it was flagged; the classes the upstream answered (one per sample)
    validation: str = ""
    validation_reason: str = ""
    upstream_classes: tuple[int, ...] = ()
    stream_frame: bool = False  # a frame of a stream, sent up by at least one hop
    stream_delta_hops: int = 0  # a stream frame: hops that sent it delta coded (the rest sent a key frame)
    stream_saved_bytes: int = 0  # a stream frame: bytes its hops saved over coding each frame on its own
    # a stream frame, at the tier that sent it up (not on the wire): what this tier's own hop saved, and the rest
    stream_own_saved_bytes: int | None = None

    @property
    def fallback_tier(self) -> str:
        """The role of the tier that fell back (``""``: none)."""
        return self.fallback.split(":", 1)[0] if self.fallback else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "answered_by": self.answered_by,
            "exit_position": self.exit_position,
            "exit_confidence": self.exit_confidence,
            "fallback": self.fallback,
            "memory": self.memory,
            "memory_saved_bytes": self.memory_saved_bytes,
            "validation": self.validation,
            "validation_reason": self.validation_reason,
            "upstream_classes": list(self.upstream_classes),
            "stream_frame": self.stream_frame,
            "stream_delta_hops": self.stream_delta_hops,
            "stream_saved_bytes": self.stream_saved_bytes,
            "tiers": [t.to_json() for t in self.tiers],
        }


@dataclass
class InferReply:
    """An inference response: the values at ``position`` (N = model output) and the breakdown.

    ``error_code``/``error_message`` are set only on failed items of a stream (``tensors`` is then empty). A device
    answering an input it took over gRPC says which ``plan`` it went by and the live planner's prediction for it
    (``predicted_latency_s``, 0 without one): the caller of a device agent process sees what the in-process one does.
    """

    request_id: str
    fingerprint: str
    position: int
    tensors: list[WireTensor]
    breakdown: Breakdown = field(default_factory=Breakdown)
    error_code: int = 0
    error_message: str = ""
    wire_nbytes: int = 0
    plan: str = ""
    predicted_latency_s: float = 0.0
    predicted_outcome_s: float = 0.0  # the prediction for the path it took (its exit, or the output); 0: none


@dataclass(frozen=True)
class RangeProfile:
    """Measured compute seconds of range ``[start:stop]`` on one agent (batch 1, slowdown included)."""

    start: int
    stop: int
    compute_s: float


@dataclass(frozen=True)
class Counters:
    """What an agent has been through since it started (see ``Counters`` in agent.proto); monotonic, so an
    operator takes rates from two Describes.

    Attributes:
        requests: requests taken in (Infer calls, stream items, the device's own inputs), failed ones included.
        fallbacks: requests this tier finished itself because its upstream failed.
        duplicates_served: requests answered from the idempotency reply cache instead of computing again.
        shed: requests refused as overloaded (RESOURCE_EXHAUSTED: compute queue full or memory cap in use).
        last_fallback: the latest fallback's ``Breakdown.fallback`` ("" if none).
    """

    requests: int = 0
    fallbacks: int = 0
    duplicates_served: int = 0
    shed: int = 0
    last_fallback: str = ""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class LinkReading:
    """One link's estimates as a live planner holds them (``LinkReading`` in agent.proto)."""

    name: str  # "device>edge"
    bandwidth_bps: float  # 0: not measured yet
    rtt_s: float


@dataclass(frozen=True)
class PlanSwitch:
    """One switch of a live plan (``PlanSwitch`` in agent.proto; what the log line says, as data)."""

    t_s: float  # monotonic seconds in process; seconds after the planner started on the wire
    request_index: int  # replies learned from before the switch
    old: str
    new: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class LiveState:
    """What a device that plans live reports in ``Describe`` (``LiveState`` in agent.proto)."""

    ready: bool = False
    safe_plan: str = ""
    first_plan_s: float = 0.0
    error: str = ""
    plan: str = ""
    predicted_latency_s: float = 0.0
    predicted_outcome_s: float = 0.0  # the prediction for the path it took (its exit, or the output); 0: none
    links: list[LinkReading] = field(default_factory=list)
    compute_factor: dict[str, float] = field(default_factory=dict)
    down: list[str] = field(default_factory=list)
    switches: list[PlanSwitch] = field(default_factory=list)
    requests: int = 0
    last_reason: str = ""
    uptime_s: float = 0.0  # seconds since the planner started, when this was answered

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["links"] = [{"name": k.name, "bandwidth_bps": k.bandwidth_bps, "rtt_s": k.rtt_s} for k in self.links]
        out["switches"] = [sw.to_json() for sw in self.switches]
        return out


@dataclass
class Description:
    """What an agent says about itself in the handshake (see ``DescribeResponse`` in agent.proto)."""

    role: str
    fingerprint: str
    num_positions: int
    cuts: list[int]
    codecs: list[str]
    plan: str
    profile: list[RangeProfile] = field(default_factory=list)
    slowdown_factor: float = 1.0
    power_w: tuple[float, float, float] = (0.0, 0.0, 0.0)  # idle, active, transmit
    torch_device: str = "cpu"
    threads: int = 1
    max_message_bytes: int = 0
    max_batch: int = 1
    upstream: str = ""
    version: str = ""
    inputs: list[tuple[str, str, tuple[int, ...]]] = field(default_factory=list)  # name, datatype, shape
    counters: Counters = Counters()
    # asked for with ``with_upstream``: the upstream's own answer (one level), or why it could not be had
    upstream_description: "Description | None" = None
    upstream_error: str = ""
    live: LiveState | None = None  # a device that plans live

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["profile"] = [{"start": p.start, "stop": p.stop, "compute_s": p.compute_s} for p in self.profile]
        out["power_w"] = dict(zip(("idle", "active", "transmit"), self.power_w))
        out["counters"] = self.counters.to_json()
        if self.upstream_description is not None:
            out["upstream_description"] = self.upstream_description.to_json()
        out["live"] = self.live.to_json() if self.live is not None else None
        return out


_TIMING_FIELDS = tuple(f.name for f in fields(TierTiming))
_COUNTER_FIELDS = tuple(f.name for f in fields(Counters))


_TIMING_NUMBERS = tuple(f.name for f in fields(TierTiming) if f.name != "tier")
MAX_REPLY_META_BYTES = 256 * 1024  # a reply's fields but its payloads (a few names, shapes, timings, a reason)
MAX_BREAKDOWN_TIERS = 16  # tier timings in a reply's breakdown (a chain has three tiers; relays add none)
MAX_REASON_CHARS = 4096  # a reply's fallback reason or error message
_MEMORY_OUTCOMES = ("hit", "near", "miss")  # Breakdown.memory on the wire; anything else is dropped
_VALIDATIONS = ("ok", "flagged", "recomputed", "unchecked")  # Breakdown.validation on the wire; else dropped
_MAX_CLASSES_CHARS = 4096  # Breakdown.upstream_classes on the wire ("3,7,1")

# ------------------------------------------------------------------------------------------- encoding
def _tensor_meta(t: WireTensor, into: Any) -> None:
    into.name = t.name
    into.datatype = t.datatype
    into.shape.extend(t.shape)
    if t.codec or t.datatype != BYTES:  # text carries no codec
        into.parameters["codec"].string_param = t.codec


def _breakdown_meta(b: Breakdown, into: Any) -> None:
    into.answered_by = b.answered_by
    into.exit_position = b.exit_position
    into.exit_confidence = b.exit_confidence
    into.fallback = b.fallback
    for t in b.tiers:
        into.tiers.add(**vars(t))  # the dataclass fields are exactly TierTiming's proto fields


def encode_request(call: InferCall) -> bytes:
    """Serialise ``call`` as an ``edgeflow.v1.InferRequest`` (payloads appended raw)."""
    msg = pb.InferRequest(id=call.request_id, model_fingerprint=call.fingerprint, start=call.start, stop=call.stop)
    for t in call.tensors:
        _tensor_meta(t, msg.inputs.add())
    if call.output_codec:
        msg.parameters["output_codec"].string_param = call.output_codec
    if call.plan:
        msg.parameters["plan"].string_param = call.plan
    if call.stream:
        msg.parameters["stream"].string_param = call.stream
        msg.parameters["frame"].int64_param = call.frame
    return frame(msg.SerializeToString(), _RAW_FIELD, [t.payload for t in call.tensors])


def encode_reply(reply: InferReply) -> bytes:
    """Serialise ``reply`` as an ``edgeflow.v1.InferResponse`` (payloads appended raw)."""
    msg = pb.InferResponse(
        id=reply.request_id,
        model_fingerprint=reply.fingerprint,
        position=reply.position,
        error_code=reply.error_code,
        error_message=reply.error_message,
    )
    for t in reply.tensors:
        _tensor_meta(t, msg.outputs.add())
    _breakdown_meta(reply.breakdown, msg.breakdown)
    if reply.plan:
        msg.parameters["plan"].string_param = reply.plan
    if reply.predicted_latency_s:
        msg.parameters["predicted_latency_s"].double_param = reply.predicted_latency_s
    if reply.predicted_outcome_s:
        msg.parameters["predicted_outcome_s"].double_param = reply.predicted_outcome_s
    if reply.breakdown.memory:  # a device's result memory (a reply to an input it took over gRPC)
        msg.parameters["memory"].string_param = reply.breakdown.memory
        msg.parameters["memory_saved_bytes"].int64_param = reply.breakdown.memory_saved_bytes
    if reply.breakdown.validation:  # a device's check of its upstream's answer (a reply to an input it took)
        msg.parameters["validation"].string_param = reply.breakdown.validation
        msg.parameters["validation_reason"].string_param = reply.breakdown.validation_reason[:MAX_REASON_CHARS]
        msg.parameters["upstream_classes"].string_param = ",".join(map(str, reply.breakdown.upstream_classes))
    if reply.breakdown.stream_frame:
        msg.parameters["stream_delta_hops"].int64_param = reply.breakdown.stream_delta_hops
        msg.parameters["stream_saved_bytes"].int64_param = reply.breakdown.stream_saved_bytes
    return frame(msg.SerializeToString(), _RAW_FIELD, [t.payload for t in reply.tensors])


# ------------------------------------------------------------------------------------------- decoding
def _parse(msg: Any, rest: bytes | memoryview, what: str) -> None:
    try:
        msg.ParseFromString(rest)
    except DecodeError as e:
        raise InvalidRequest(f"malformed {what}: {e}") from None


def _check_name(value: str, what: str, limits: WireLimits) -> None:
    if len(value) > limits.max_name_chars:
        raise InvalidRequest(f"{what} is {len(value)} characters, limit {limits.max_name_chars}")


def _tensors(metas: Any, payloads: list[memoryview], limits: WireLimits, what: str) -> list[WireTensor]:
    if len(metas) > limits.max_tensors:
        raise RequestTooLarge(f"{len(metas)} {what} tensors, limit {limits.max_tensors}")
    if len(metas) != len(payloads):
        raise InvalidRequest(f"{len(metas)} {what} tensors but {len(payloads)} raw payloads; need one per tensor")
    out = []
    for i, (m, p) in enumerate(zip(metas, payloads)):
        label = f"{what} tensor {i} ({m.name!r})"
        _check_name(m.name, f"{label} name", limits)
        if len(m.shape) > limits.max_dims:
            raise InvalidRequest(f"{label} has rank {len(m.shape)}, limit {limits.max_dims}")
        if any(d < 0 for d in m.shape):
            raise InvalidRequest(f"{label} has a negative dim in shape {list(m.shape)}")
        if m.datatype == BYTES:  # text: KServe's length-prefixed strings, no codec (edgeflow.transport.strings)
            if len(m.shape) != 1:
                raise InvalidRequest(f"{label} is BYTES (text) with shape {list(m.shape)}; text has shape [batch]")
            out.append(WireTensor(m.name, m.datatype, tuple(m.shape), "", p))
            continue
        dtype_name_of(m.datatype)  # validates the datatype string
        codec = m.parameters["codec"].string_param if "codec" in m.parameters else ""
        if not codec:
            raise InvalidRequest(f"{label} lacks the 'codec' string parameter")
        _check_name(codec, f"{label} codec", limits)
        out.append(WireTensor(m.name, m.datatype, tuple(m.shape), codec, p))
    return out


def decode_request(data: bytes | memoryview, limits: WireLimits) -> InferCall:
    """Parse an ``edgeflow.v1.InferRequest``; tensor payloads are zero-copy views of ``data``.

    Raises:
        InvalidRequest: malformed message, tensor/payload count mismatch, bad datatype, missing codec.
        RequestTooLarge: more tensors or dims than ``limits`` allow, or a payload over the message limit.
    """
    rest, payloads = split_fields(
        data, _RAW_FIELD, max_payloads=limits.max_tensors, max_payload_nbytes=limits.max_message_bytes
    )
    msg = pb.InferRequest()
    _parse(msg, rest, "InferRequest")
    _check_name(msg.id, "request id", limits)
    _check_name(msg.model_fingerprint, "model fingerprint", limits)  # echoed in error messages: keep it short
    codec = msg.parameters["output_codec"].string_param if "output_codec" in msg.parameters else ""
    _check_name(codec, "output_codec", limits)
    plan = msg.parameters["plan"].string_param if "plan" in msg.parameters else ""
    if len(plan) > 4 * limits.max_name_chars:  # a plan is a few stages and exits: ~100 characters
        raise InvalidRequest(f"plan is {len(plan)} characters, limit {4 * limits.max_name_chars}")
    stream, frame_no = _stream_of(msg, limits)
    return InferCall(
        request_id=msg.id,
        fingerprint=msg.model_fingerprint,
        start=msg.start,
        stop=msg.stop,
        tensors=_tensors(msg.inputs, payloads, limits, "input"),
        output_codec=codec,
        plan=plan,
        wire_nbytes=memoryview(data).nbytes,
        stream=stream,
        frame=frame_no,
    )


MAX_FRAME = 2**62  # frame numbers: 0 .. MAX_FRAME - 1


def _stream_of(msg: Any, limits: WireLimits) -> tuple[str, int]:
    """``(stream, frame)`` of a request's parameters, checked: ``("", -1)`` without a stream."""
    p = msg.parameters
    stream = p["stream"].string_param if "stream" in p else ""
    has_frame = "frame" in p
    if not stream:
        if has_frame or "stream" in p:
            raise InvalidRequest("request parameter 'frame' needs a non-empty string parameter 'stream'")
        return "", -1
    _check_name(stream, "stream id", limits)
    if not stream.isprintable():
        raise InvalidRequest(f"stream id {stream[:64]!r} holds non-printable characters")
    if not has_frame or p["frame"].WhichOneof("parameter_choice") != "int64_param":
        raise InvalidRequest(f"stream {stream[:64]!r}: request parameter 'frame' (int64) is required with 'stream'")
    frame_no = p["frame"].int64_param
    if not 0 <= frame_no < MAX_FRAME:
        raise InvalidRequest(f"stream {stream[:64]!r}: frame {frame_no} is outside 0..{MAX_FRAME - 1}")
    return stream, frame_no


def decode_reply(data: bytes | memoryview, limits: WireLimits) -> InferReply:
    """Parse an ``edgeflow.v1.InferResponse``; tensor payloads are zero-copy views of ``data``.

    Raises:
        InvalidRequest: malformed message (here: the peer's fault; the client re-raises it as such).
        RequestTooLarge: over ``limits``.
    """
    rest, payloads = split_fields(
        data, _RAW_FIELD, max_payloads=limits.max_tensors, max_payload_nbytes=limits.max_message_bytes
    )
    if len(rest) > MAX_REPLY_META_BYTES:  # refused before parsing: a million empty breakdown entries fit in 2 MB
        raise InvalidRequest(f"reply metadata is {len(rest)} bytes (payloads aside), limit {MAX_REPLY_META_BYTES}")
    msg = pb.InferResponse()
    _parse(msg, rest, "InferResponse")
    plan = msg.parameters["plan"].string_param if "plan" in msg.parameters else ""
    if len(plan) > 4 * limits.max_name_chars:
        raise InvalidRequest(f"reply plan is {len(plan)} characters, limit {4 * limits.max_name_chars}")
    predicted, outcome = (msg.parameters[k].double_param if k in msg.parameters else 0.0
                          for k in ("predicted_latency_s", "predicted_outcome_s"))  # fmt: skip
    b = msg.breakdown
    if len(b.tiers) > MAX_BREAKDOWN_TIERS:  # before a Python object is made for each (1M empty ones: ~1 GB)
        raise InvalidRequest(f"reply breakdown has {len(b.tiers)} tier timings, limit {MAX_BREAKDOWN_TIERS}")
    for name, text, most in (("answered_by", b.answered_by, limits.max_name_chars),
                             ("fallback", b.fallback, MAX_REASON_CHARS),
                             ("error_message", msg.error_message, MAX_REASON_CHARS)):  # fmt: skip
        if len(text) > most:
            raise InvalidRequest(f"reply {name} is {len(text)} characters, limit {most}")
    if any(len(t.tier) > limits.max_name_chars for t in b.tiers):
        raise InvalidRequest(f"reply breakdown: a tier name is over {limits.max_name_chars} characters")
    for t in b.tiers:  # seconds, bytes and joules feed the live planner's estimates: finite and >= 0
        if not all(math.isfinite(v := getattr(t, name)) and v >= 0 for name in _TIMING_NUMBERS):
            raise InvalidRequest(f"reply breakdown: tier {t.tier[:32]!r} has a negative or non-finite timing")
    if not (math.isfinite(b.exit_confidence) and 0 <= b.exit_confidence <= 1):
        raise InvalidRequest(f"reply breakdown: exit_confidence {b.exit_confidence!r} is not in [0, 1]")
    breakdown = Breakdown(
        tiers=[TierTiming(*[getattr(t, name) for name in _TIMING_FIELDS]) for t in b.tiers],
        answered_by=b.answered_by,
        exit_position=b.exit_position if msg.HasField("breakdown") else -1,
        exit_confidence=b.exit_confidence,
        fallback=b.fallback,
    )
    memory = msg.parameters["memory"].string_param if "memory" in msg.parameters else ""
    if memory in _MEMORY_OUTCOMES:
        breakdown.memory = memory
        breakdown.memory_saved_bytes = max(0, msg.parameters["memory_saved_bytes"].int64_param) if memory != "miss" else 0
    validation = msg.parameters["validation"].string_param if "validation" in msg.parameters else ""
    if validation in _VALIDATIONS:
        breakdown.validation = validation
        reason = msg.parameters["validation_reason"].string_param if "validation_reason" in msg.parameters else ""
        breakdown.validation_reason = reason[:MAX_REASON_CHARS]
        breakdown.upstream_classes = _classes(msg.parameters["upstream_classes"].string_param
                                              if "upstream_classes" in msg.parameters else "")  # fmt: skip
    if "stream_delta_hops" in msg.parameters:  # reported figures only: clamped, never trusted for decoding
        breakdown.stream_frame = True
        breakdown.stream_delta_hops = min(max(0, msg.parameters["stream_delta_hops"].int64_param), MAX_BREAKDOWN_TIERS)
        breakdown.stream_saved_bytes = max(-limits.max_message_bytes * MAX_BREAKDOWN_TIERS,
                                           min(msg.parameters["stream_saved_bytes"].int64_param,
                                               limits.max_message_bytes * MAX_BREAKDOWN_TIERS))  # fmt: skip
    return InferReply(
        request_id=msg.id,
        fingerprint=msg.model_fingerprint,
        position=msg.position,
        tensors=_tensors(msg.outputs, payloads, limits, "output"),
        breakdown=breakdown,
        error_code=msg.error_code,
        error_message=msg.error_message,
        wire_nbytes=memoryview(data).nbytes,
        plan=plan,
        predicted_latency_s=predicted if math.isfinite(predicted) and predicted > 0 else 0.0,
        predicted_outcome_s=outcome if math.isfinite(outcome) and outcome > 0 else 0.0,
    )


def _classes(text: str) -> tuple[int, ...]:
    """``"3,7,1"`` -> (3, 7, 1); anything malformed or over the bound -> () (it is a report, not an answer)."""
    if not text or len(text) > _MAX_CLASSES_CHARS:
        return ()
    parts = text.split(",")
    if not all(p.isdigit() and len(p) <= 9 for p in parts):
        return ()
    return tuple(int(p) for p in parts)


def encode_description(d: Description) -> bytes:
    """Serialise ``d`` as an ``edgeflow.v1.DescribeResponse``."""
    return _description_msg(d).SerializeToString()


def _description_msg(d: Description) -> Any:
    msg = pb.DescribeResponse(
        role=d.role,
        model_fingerprint=d.fingerprint,
        num_positions=d.num_positions,
        cuts=d.cuts,
        codecs=d.codecs,
        plan=d.plan,
        profile=[pb.RangeProfile(start=p.start, stop=p.stop, compute_s=p.compute_s) for p in d.profile],
        slowdown_factor=d.slowdown_factor,
        power=pb.Power(idle_w=d.power_w[0], active_w=d.power_w[1], transmit_w=d.power_w[2]),
        torch_device=d.torch_device,
        threads=d.threads,
        max_message_bytes=d.max_message_bytes,
        max_batch=d.max_batch,
        upstream=d.upstream,
        version=d.version,
        inputs=[pb.Tensor(name=n, datatype=dt, shape=shape) for n, dt, shape in d.inputs],
        counters=pb.Counters(**d.counters.to_json()),  # the dataclass fields are exactly Counters' proto fields
        upstream_error=d.upstream_error,
    )
    if d.upstream_description is not None:
        msg.upstream_description.CopyFrom(_description_msg(replace(d.upstream_description, upstream_description=None)))
    if d.live is not None:
        _live_msg(d.live, msg.live)
    return msg


def _live_msg(state: LiveState, into: Any) -> None:
    for f in ("ready", "safe_plan", "first_plan_s", "error", "plan", "predicted_latency_s", "requests", "last_reason",
              "uptime_s"):
        setattr(into, f, getattr(state, f))
    into.links.extend(pb.LinkReading(name=k.name, bandwidth_bps=k.bandwidth_bps, rtt_s=k.rtt_s) for k in state.links)
    into.compute_factor.update(state.compute_factor)
    into.down.extend(state.down)
    into.switches.extend(pb.PlanSwitch(**sw.to_json()) for sw in state.switches)


def _live_of(msg: Any) -> LiveState:
    return LiveState(
        ready=msg.ready, safe_plan=msg.safe_plan, first_plan_s=msg.first_plan_s, error=msg.error, plan=msg.plan,
        predicted_latency_s=msg.predicted_latency_s,
        links=[LinkReading(k.name, k.bandwidth_bps, k.rtt_s) for k in msg.links],
        compute_factor=dict(msg.compute_factor), down=list(msg.down),
        switches=[PlanSwitch(sw.t_s, sw.request_index, sw.old, sw.new, sw.reason) for sw in msg.switches],
        requests=msg.requests, last_reason=msg.last_reason, uptime_s=msg.uptime_s,
    )  # fmt: skip


def decode_description(data: bytes) -> Description:
    """Parse an ``edgeflow.v1.DescribeResponse`` (and its ``upstream_description``, one level deep).

    Raises:
        InvalidRequest: malformed message.
    """
    msg = pb.DescribeResponse()
    _parse(msg, data, "DescribeResponse")
    d = _description_of(msg)
    if msg.HasField("upstream_description"):
        d.upstream_description = _description_of(msg.upstream_description)
    return d


MAX_DESCRIBED = 100_000  # cuts, codecs, profile entries, inputs in a Description


def _check_description(msg: Any) -> None:
    """Numbers a peer's Description feeds the planner must be sane (a slowdown of 0 divided by zero at a device's
    start-up); lists bounded. Raises InvalidRequest naming the field."""
    if msg.slowdown_factor != 0 and not (math.isfinite(msg.slowdown_factor) and 0 < msg.slowdown_factor <= 1e6):
        raise InvalidRequest(f"describe: slowdown_factor {msg.slowdown_factor!r} must be finite and > 0 (0: unset)")
    for name in ("cuts", "codecs", "profile", "inputs"):
        if len(getattr(msg, name)) > MAX_DESCRIBED:
            raise InvalidRequest(f"describe: {len(getattr(msg, name))} {name}, limit {MAX_DESCRIBED}")
    if not 0 <= msg.num_positions <= MAX_DESCRIBED or any(not 0 <= c <= msg.num_positions for c in msg.cuts):
        raise InvalidRequest(f"describe: num_positions {msg.num_positions} or a cut out of range")
    for p in msg.profile:
        if not (math.isfinite(p.compute_s) and 0 <= p.compute_s <= 3600 and 0 <= p.start < p.stop <= msg.num_positions):
            raise InvalidRequest(f"describe: profile [{p.start}:{p.stop}] {p.compute_s!r} s is not a range and a time")
    power = (msg.power.idle_w, msg.power.active_w, msg.power.transmit_w)
    if not all(math.isfinite(w) and 0 <= w <= 1e6 for w in power):
        raise InvalidRequest(f"describe: power {power} must be finite watts >= 0")
    if not (0 <= msg.threads <= 4096 and 0 <= msg.max_batch <= 1_000_000 and msg.max_message_bytes >= 0):
        raise InvalidRequest("describe: threads, max_batch or max_message_bytes out of range")


def _description_of(msg: Any) -> Description:
    _check_description(msg)
    return Description(
        role=msg.role,
        fingerprint=msg.model_fingerprint,
        num_positions=msg.num_positions,
        cuts=list(msg.cuts),
        codecs=list(msg.codecs),
        plan=msg.plan,
        profile=[RangeProfile(p.start, p.stop, p.compute_s) for p in msg.profile],
        slowdown_factor=msg.slowdown_factor or 1.0,  # 0: unset (proto3's default), i.e. no emulated slowdown
        power_w=(msg.power.idle_w, msg.power.active_w, msg.power.transmit_w),
        torch_device=msg.torch_device,
        threads=msg.threads,
        max_message_bytes=msg.max_message_bytes,
        max_batch=msg.max_batch,
        upstream=msg.upstream,
        version=msg.version,
        inputs=[(t.name, t.datatype, tuple(t.shape)) for t in msg.inputs],
        counters=Counters(*[getattr(msg.counters, name) for name in _COUNTER_FIELDS]),
        upstream_error=msg.upstream_error,
        live=_live_of(msg.live) if msg.HasField("live") else None,
    )
