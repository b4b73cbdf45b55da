"""KServe v2 / Open Inference Protocol (``inference.GRPCInferenceService``), served beside ``edgeflow.v1.Agent``.

A standard client (``tritonclient.grpc``, KServe's) asks an agent for its model by name and sends plain tensors;
this module turns a ``ModelInferRequest`` into the same :class:`InferCall` an ``edgeflow.v1`` Infer carries and
hands it to the same entry point (fingerprint, admission checks, reply cache, fallback: one request path), then
turns the reply back into plain row-major outputs. See docs/KSERVE.md.

- The model name is the artifact's name (``demo`` for ``builtin:demo``); its one version is ``"1"``.
- ``raw_input_contents`` are plain row-major bytes (their length must be the shape's elements x the datatype's
  size), typed ``contents`` work too. An input whose tensor parameter ``codec`` names an edgeflow codec carries an
  edgeflow codec payload instead (``int8``, ``lossless``, ...), and request parameter ``output_codec`` returns the
  outputs as codec payloads (the output tensor's parameter ``codec`` says which): edgeflow's frames only on request.
- Request parameters ``start`` / ``stop`` (int64) choose a range: the inputs are the live values at ``start``
  (named as a range call at ``stop`` names its outputs), ``stop`` 0 runs to the model output through the chain,
  ``plan`` (string) stamps a plan as the device does.
- Statuses: unknown model or version NOT_FOUND; an unsupported datatype, a datatype, shape or byte count that does
  not fit, raw and typed contents mixed: INVALID_ARGUMENT naming the tensor; the rest as ``edgeflow.v1`` Infer
  (docs/WIRE.md).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from edgeflow.errors import InvalidRequest, ModelNotFound, RequestTooLarge
from edgeflow.transport import kserve_pb as kpb
from edgeflow.transport.messages import DATATYPES, InferCall, InferReply, WireLimits, WireTensor, dtype_name_of
from edgeflow.transport.wire import frame, split_fields

if TYPE_CHECKING:
    from edgeflow.transport.service import CallInfo

__all__ = ["KServeModel", "KServeServicer", "PLATFORM", "INPUT_CODEC"]

PLATFORM = "edgeflow_pytorch"
INPUT_CODEC = "lossless:z-7"  # plain inputs enter the agent as the fastest lossless payload (zstd -7)
_RAW_IN, _RAW_OUT = 7, 6  # raw_input_contents / raw_output_contents field numbers
_VERSION = "1"
_ITEMSIZE = {"BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2, "UINT32": 4,
             "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8}  # fmt: skip
# datatype -> (InferTensorContents field, numpy dtype the wire bytes have); FP16/BF16 travel raw only (the spec)
_TYPED = {"BOOL": ("bool_contents", np.bool_), "INT8": ("int_contents", np.int8), "INT16": ("int_contents", np.int16),
          "INT32": ("int_contents", np.int32), "INT64": ("int64_contents", np.int64), "UINT8": ("uint_contents", np.uint8),
          "UINT16": ("uint_contents", np.uint16), "UINT32": ("uint_contents", np.uint32),
          "UINT64": ("uint64_contents", np.uint64), "FP32": ("fp32_contents", np.float32),
          "FP64": ("fp64_contents", np.float64)}  # fmt: skip


@dataclass(frozen=True)
class KServeModel:
    """The one model an agent serves, as KServe clients see it.

    Attributes:
        name: the artifact's name (``demo``).
        fingerprint: the artifact's fingerprint (requests are stamped with it).
        inputs: model inputs ``(name, datatype, shape)``, dim 0 the batch dim.
        outputs: model outputs ``(name, datatype, shape)``.
    """

    name: str
    fingerprint: str
    inputs: Sequence[tuple[str, str, tuple[int, ...]]] = ()
    outputs: Sequence[tuple[str, str, tuple[int, ...]]] = ()
    version: str = _VERSION
    extensions: tuple[str, ...] = field(default=("edgeflow_ranges", "edgeflow_codecs"))


InferFn = Callable[[InferCall, "CallInfo"], InferReply]


class KServeServicer:
    """The six KServe rpcs over an agent's infer entry point.

    Args:
        model: what the agent serves.
        infer: the entry point for one call (the one ``edgeflow.v1`` Infer uses: span, metrics, the agent).
        ready: whether the agent takes requests (False while it drains).
        limits: message limits (payload count and size are checked before slicing).
        version: the server's version string (ServerMetadata).
    """

    def __init__(self, model: KServeModel, *, infer: InferFn, ready: Callable[[], bool], limits: WireLimits,
                 version: str = "") -> None:  # fmt: skip
        self.model = model
        self._infer = infer
        self._ready = ready
        self.limits = limits
        self.version = version

    def methods(self) -> dict[str, Callable[[bytes, "CallInfo"], bytes]]:
        """Every rpc by name: ``(request bytes, call) -> response bytes``, raising edgeflow errors."""
        return {name: getattr(self, name) for name in kpb.KSERVE_METHODS}

    # ------------------------------------------------------------------------------------------ health & metadata
    def ServerLive(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802 (rpc names)
        return kpb.ServerLiveResponse(live=True).SerializeToString()

    def ServerReady(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802
        return kpb.ServerReadyResponse(ready=self._ready()).SerializeToString()

    def ModelReady(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802
        req = _parse(kpb.ModelReadyRequest, data, "ModelReadyRequest")
        self._check_model(req.name, req.version)
        return kpb.ModelReadyResponse(ready=self._ready()).SerializeToString()

    def ServerMetadata(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802
        m = kpb.ServerMetadataResponse(name="edgeflow", version=self.version, extensions=list(self.model.extensions))
        return m.SerializeToString()

    def ModelMetadata(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802
        req = _parse(kpb.ModelMetadataRequest, data, "ModelMetadataRequest")
        self._check_model(req.name, req.version)
        m = kpb.ModelMetadataResponse(name=self.model.name, versions=[self.model.version], platform=PLATFORM)
        for into, tensors in ((m.inputs, self.model.inputs), (m.outputs, self.model.outputs)):
            for name, datatype, shape in tensors:
                into.add(name=name, datatype=datatype, shape=[-1, *shape[1:]] if shape else [])
        return m.SerializeToString()

    def _check_model(self, name: str, version: str) -> None:
        if name != self.model.name:
            raise ModelNotFound(f"unknown model {name[:256]!r}; this agent serves {self.model.name!r}")
        if version not in ("", self.model.version):
            raise ModelNotFound(f"model {name!r} has no version {version[:64]!r}; versions: [{self.model.version!r}]")

    # ------------------------------------------------------------------------------------------ inference
    def ModelInfer(self, data: bytes, call: CallInfo) -> bytes:  # noqa: N802
        req, raw = self._parse_infer(data)
        reply = self._infer(self.to_call(req, raw), call)
        return self.encode_response(req, reply)

    def _parse_infer(self, data: bytes) -> tuple[Any, list[memoryview]]:
        rest, raw = split_fields(
            data, _RAW_IN, max_payloads=self.limits.max_tensors, max_payload_nbytes=self.limits.max_message_bytes
        )
        return _parse(kpb.ModelInferRequest, rest, "ModelInferRequest"), raw

    def to_call(self, req: Any, raw: list[memoryview]) -> InferCall:
        """The :class:`InferCall` a ``ModelInferRequest`` stands for (``raw``: its raw contents, zero-copy).

        Raises:
            ModelNotFound: another model or version.
            InvalidRequest: a tensor whose datatype, shape, byte count or contents do not fit (named), bad parameters.
            RequestTooLarge: more tensors than the limit.
        """
        self._check_model(req.model_name, req.model_version)
        params = req.parameters
        start, stop = _int_param(params, "start"), _int_param(params, "stop")
        plan, out_codec = _str_param(params, "plan"), _str_param(params, "output_codec")
        if len(req.inputs) > self.limits.max_tensors:
            raise RequestTooLarge(f"{len(req.inputs)} input tensors, limit {self.limits.max_tensors}")
        if raw and len(raw) != len(req.inputs):
            raise InvalidRequest(f"{len(req.inputs)} inputs but {len(raw)} raw_input_contents; need one per input")
        tensors = [self._tensor(i, t, raw[i] if raw else None) for i, t in enumerate(req.inputs)]
        if len(req.id) > self.limits.max_name_chars:
            raise InvalidRequest(f"request id is {len(req.id)} characters, limit {self.limits.max_name_chars}")
        # An id keeps the chain's retries idempotent (the reply cache); a request without one gets a fresh one.
        rid = req.id or f"kserve-{uuid.uuid4().hex}"
        return InferCall(rid, self.model.fingerprint, start, tensors, stop=stop, output_codec=out_codec or "lossless",
                         plan=plan)  # fmt: skip

    def _tensor(self, i: int, t: Any, raw: memoryview | None) -> WireTensor:
        label = f"input {i} ({t.name[:256]!r})"
        if len(t.shape) > self.limits.max_dims or any(d < 0 for d in t.shape):
            raise InvalidRequest(f"{label}: shape {list(t.shape)[:16]} is not a tensor shape (rank <= {self.limits.max_dims}, dims >= 0)")
        if t.datatype not in DATATYPES.values():
            raise InvalidRequest(f"{label}: datatype {t.datatype[:32]!r} is not supported; supported: {sorted(_ITEMSIZE)}")
        shape = tuple(int(d) for d in t.shape)
        codec = _str_param(t.parameters, "codec")
        if codec:  # an edgeflow codec payload, on request: the agent checks it against the declared tensor
            if raw is None:
                raise InvalidRequest(f"{label}: parameter codec={codec!r} needs its payload in raw_input_contents")
            return WireTensor(t.name, t.datatype, shape, codec, raw)
        need = _numel(shape) * _ITEMSIZE[t.datatype]
        if raw is None:
            raw = memoryview(_typed_bytes(label, t))
        elif t.HasField("contents"):
            raise InvalidRequest(f"{label}: has both raw_input_contents and typed contents; send one")
        if raw.nbytes != need:
            raise InvalidRequest(
                f"{label}: {raw.nbytes} bytes of contents, but {t.datatype} {list(shape)} holds {need} "
                f"({_numel(shape)} x {_ITEMSIZE[t.datatype]} bytes, row-major)"
            )
        return WireTensor(t.name, t.datatype, shape, INPUT_CODEC, _encode_plain(raw, t.datatype, shape))

    def encode_response(self, req: Any, reply: InferReply) -> bytes:
        """A ``ModelInferResponse`` for ``reply``: plain row-major outputs (codec payloads with ``output_codec``).

        Raises:
            InvalidRequest: the request asked for an output the reply does not have.
        """
        wanted = [o.name for o in req.outputs]
        names = [t.name for t in reply.tensors]
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise InvalidRequest(f"requested outputs {unknown} not produced; outputs at position {reply.position}: {names}")
        keep = [t for t in reply.tensors if not wanted or t.name in wanted]
        as_codec = bool(_str_param(req.parameters, "output_codec"))
        m = kpb.ModelInferResponse(model_name=self.model.name, model_version=self.model.version, id=req.id)
        b = reply.breakdown
        for key, value in (("position", reply.position), ("exit_position", b.exit_position)):
            m.parameters[key].int64_param = value
        m.parameters["answered_by"].string_param = b.answered_by
        m.parameters["request_id"].string_param = reply.request_id
        m.parameters["breakdown"].string_param = json.dumps(b.to_json(), separators=(",", ":"))
        if b.fallback:
            m.parameters["fallback"].string_param = b.fallback
        payloads: list[bytes | memoryview] = []
        for t in keep:
            out = m.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
            if as_codec:
                out.parameters["codec"].string_param = t.codec
                payloads.append(t.payload)
            else:
                payloads.append(_decode_plain(t))
        return frame(m.SerializeToString(), _RAW_OUT, payloads)


# ------------------------------------------------------------------------------------------------ helpers
def _parse(cls: Any, data: bytes | memoryview, what: str) -> Any:
    msg = cls()
    try:
        msg.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError
        raise InvalidRequest(f"malformed {what}: {e}") from None
    return msg


def _int_param(params: Any, key: str) -> int:
    if key not in params:
        return 0
    p = params[key]
    kind = p.WhichOneof("parameter_choice")
    if kind not in ("int64_param", "uint64_param"):
        raise InvalidRequest(f"parameter {key!r} must be an integer, got {kind}")
    value = int(getattr(p, kind))
    if not 0 <= value < 2**31:
        raise InvalidRequest(f"parameter {key!r} = {value} out of range 0..{2**31 - 1}")
    return value


def _str_param(params: Any, key: str) -> str:
    if key not in params:
        return ""
    p = params[key]
    if p.WhichOneof("parameter_choice") != "string_param":
        raise InvalidRequest(f"parameter {key!r} must be a string, got {p.WhichOneof('parameter_choice')}")
    if len(p.string_param) > 1024:
        raise InvalidRequest(f"parameter {key!r} is {len(p.string_param)} characters, limit 1024")
    return p.string_param


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _typed_bytes(label: str, t: Any) -> bytes:
    """The row-major bytes of an input's typed ``contents``."""
    if t.datatype not in _TYPED:
        raise InvalidRequest(f"{label}: {t.datatype} travels only as raw_input_contents (no typed contents field)")
    name, np_dtype = _TYPED[t.datatype]
    values = getattr(t.contents, name)
    n = _numel(t.shape)
    if len(values) != n:
        raise InvalidRequest(f"{label}: {len(values)} values in contents.{name}, but {t.datatype} {list(t.shape)} holds {n}")
    try:
        return np.asarray(values, dtype=np_dtype).tobytes()  # int8 from int32 contents etc.: a value out of range
    except OverflowError as e:
        raise InvalidRequest(f"{label}: contents.{name} out of range for {t.datatype}: {e}") from None


def _encode_plain(raw: memoryview, datatype: str, shape: tuple[int, ...]) -> bytes:
    """Plain row-major bytes as the edgeflow payload the agent takes (lossless, zstd -7: no loss, little time)."""
    import torch

    from edgeflow.core.codecs import codec_from_spec

    dtype = getattr(torch, dtype_name_of(datatype))
    if raw.nbytes:
        tensor = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)
    else:
        tensor = torch.empty(shape, dtype=dtype)
    return codec_from_spec(INPUT_CODEC).encode(tensor)


def _decode_plain(t: WireTensor) -> bytes:
    """An output payload as plain row-major bytes (decoding bounded by the declared tensor)."""
    from edgeflow.core.codecs import decode

    value = decode(t.payload, t.decode_limits())
    from edgeflow.core.codecs.lossless import raw_bytes

    return raw_bytes(value.contiguous()).numpy().tobytes()
