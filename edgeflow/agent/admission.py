"""Inbound tensors are admitted in one step: checked, budgeted, decoded.

Whatever tensors reach an agent from the wire — a request's inputs, or payloads it relayed and must now finish
itself (a fallback) — pass :meth:`Admission.admit` once:

1. **checked** against what crosses that position of the model (:meth:`ModelRuntime.check_wire_tensors`: count,
   names, datatypes, shapes, batch size), before anything is decoded; text (a ``BYTES`` model input) is checked
   and tokenized by :mod:`edgeflow.agent.textin` instead of decoded;
2. **budgeted**: the decoded size implied by the declared shapes is taken from the agent's memory budget
   (``compute.memory_cap_mb``) for as long as the values are held;
3. **decoded**: each payload's codec must be known and its header must agree with the declaration; decoding is
   bounded by the declared size, so a payload cannot make the agent allocate more than it declared.

Replies are admitted the same way (:meth:`Admission.check_reply`, :meth:`Admission.decode_reply`): an agent trusts
an upstream's answer no more than a caller's request; a reply that fails is a :class:`~edgeflow.errors.BadReply`.

Codec specs are parsed once and kept in a bounded cache (:class:`CodecCache`): requests name a handful, hostile ones
could name millions.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from edgeflow.agent.compute import MemoryBudget
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.streams import StreamReceiver, StreamRef
from edgeflow.agent.textin import check_text, is_text, tokenize_text
from edgeflow.core.codecs import CODEC_NAMES, Codec, DecodeLimits, codec_from_spec, decode, read_header
from edgeflow.core.plan import TIERS, Plan
from edgeflow.errors import BadReply, CodecError
from edgeflow.transport import InferReply, InvalidRequest, WireTensor, datatype_of

__all__ = ["CodecCache", "Admitted", "Admission"]

_CODEC_CACHE = 64  # parsed codec specs kept


class CodecCache:
    """Codec specs (``int8``, ``int8c:z3:a-1``) parsed once; at most ``size`` kept."""

    def __init__(self, size: int = _CODEC_CACHE):
        self.size = size
        self._codecs: dict[str, Codec] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> Codec:
        """The codec ``spec`` names.

        Raises:
            InvalidRequest: an unknown codec name.
            CodecError: a known name with a malformed spec.
        """
        codec = self._codecs.get(spec)
        if codec is None:
            if spec.split(":")[0] not in CODEC_NAMES:
                raise InvalidRequest(f"unknown codec {spec!r}; known: {', '.join(CODEC_NAMES)}")
            codec = codec_from_spec(spec)
            with self._lock:
                if len(self._codecs) < self.size:
                    self._codecs[spec] = codec
        return codec


@dataclass
class Admitted:
    """Decoded values held under the memory budget until the ``admit`` block ends."""

    values: list[torch.Tensor]
    decode_s: float
    nbytes: int


class Admission:
    """The admission step of one agent (see the module doc).

    Args:
        runtime: the loaded model: what crosses each position.
        memory: the agent's budget of decoded bytes held at once.
        codecs: the agent's codec cache.
    """

    def __init__(self, runtime: ModelRuntime, memory: MemoryBudget, codecs: CodecCache,
                 streams: StreamReceiver | None = None):  # fmt: skip
        self.runtime, self.memory, self.codecs, self.streams = runtime, memory, codecs, streams

    @contextmanager
    def admit(self, position: int, tensors: Sequence[WireTensor], stream: StreamRef | None = None) -> Iterator[Admitted]:
        """Check, budget and decode ``tensors``, the live values at ``position``; the budget is released when the
        block ends. A stream frame (``stream``) is decoded by the stream receiver: residuals against the stream's
        reference, a key frame as any payload (and kept as the reference).

        Raises:
            InvalidRequest: count, name, datatype or shape does not fit the position, or a payload disagrees with
                its declaration (codec, datatype, shape).
            RequestTooLarge, Overloaded: the memory budget cannot hold the declared values.
            CodecError: a corrupt or truncated payload.
            StreamRejected: a stream frame that does not apply to the stream's state here.
        """
        infos = self.runtime.cut_info(position).tensors
        text = is_text(position, tensors)  # sentences: tokenized here, the model's token inputs budgeted
        if text:
            batch = check_text(self.runtime, tensors)
            nbytes = sum(batch * _numel(i.shape[1:]) * _itemsize(i.dtype) for i in infos)
        else:
            self.runtime.check_wire_tensors(position, tensors)
            nbytes = sum(_numel(t.shape) * _itemsize(i.dtype) for t, i in zip(tensors, infos))
        self.memory.acquire(nbytes)
        try:
            t0 = time.monotonic()
            if text:
                values = tokenize_text(self.runtime, tensors)
            elif stream is not None and self.streams is not None:
                values = self.streams.decode(stream, position, tensors, lambda i, t: self._decode(i, t, position))
                device = self.runtime.device
                values = [v.to(device) if device.type != "cpu" else v for v in values]
            else:
                values = [self._decode(i, t, position) for i, t in enumerate(tensors)]
            yield Admitted(values, time.monotonic() - t0, nbytes)
        finally:
            self.memory.release(nbytes)

    def _decode(self, index: int, t: WireTensor, position: int) -> torch.Tensor:
        limits = self._checked(f"input {index} ({t.name!r}) at position {position}", t)
        value = decode(t.payload, limits)
        device = self.runtime.device
        return value.to(device, non_blocking=True) if device.type != "cpu" else value

    def _checked(self, label: str, t: WireTensor) -> DecodeLimits:
        """The decode limits of ``t``, its declared size, once its codec and payload header agree with its
        declaration (InvalidRequest if not)."""
        if t.codec.split(":")[0] not in CODEC_NAMES:
            raise InvalidRequest(f"{label}: unknown codec {t.codec!r}; known: {', '.join(CODEC_NAMES)}")
        try:
            self.codecs.get(t.codec)  # the whole spec must parse, not just its name ("lossless:j1" is garbage)
        except CodecError as e:
            raise InvalidRequest(f"{label}: declared codec {t.codec!r} is not a codec spec: {e}") from None
        limits = t.decode_limits()
        header = read_header(t.payload, limits)
        if header.codec_name != t.codec.split(":")[0]:
            raise InvalidRequest(f"{label}: declared codec {t.codec!r} but the payload is {header.codec_name!r}")
        got_dtype = str(header.dtype).removeprefix("torch.")
        if datatype_of(got_dtype) != t.datatype or tuple(header.shape) != tuple(t.shape):
            raise InvalidRequest(
                f"{label}: declared {t.datatype} {list(t.shape)} but the payload holds "
                f"{datatype_of(got_dtype)} {list(header.shape)}"
            )
        return limits

    # ------------------------------------------------------------------------------------ replies
    def check_reply(self, reply: InferReply, *, request_id: str, fingerprint: str, role: str, sent: int, batch: int,
                    plan: Plan) -> None:  # fmt: skip
        """Admit an upstream's ``reply`` to the request this agent sent with the values at position ``sent`` under
        ``plan`` (batch ``batch``), as a request is admitted, before it is decoded or relayed: the same request id
        and model fingerprint; no stream-only fields; the position is the model output and any exit is one of the
        plan's beyond ``sent`` (the upstream's range); the tensors are what the model produces there (count,
        datatype, shape with the request's batch); each payload's codec and header agree with its declaration, so
        decoding is bounded by the expected size (:meth:`decode_reply`); the answering tier is one after this one.

        Raises:
            BadReply: the first check that fails, in words.
        """
        if reply.request_id != request_id:
            raise BadReply(f"reply is for request {reply.request_id[:64]!r}, this one is {request_id!r}")
        if reply.fingerprint != fingerprint:
            raise BadReply(f"reply carries model fingerprint {reply.fingerprint[:64]!r}, the chain serves {fingerprint}")
        if reply.error_code or reply.error_message:
            raise BadReply(f"a unary reply carries the stream-only error_code {reply.error_code}")
        n = self.runtime.num_positions
        if reply.position != n:
            raise BadReply(f"reply at position {reply.position}, expected the model output {n}")
        b = reply.breakdown
        after = TIERS[TIERS.index(role) + 1 :]  # a relaying tier may finish a request itself (a fallback)
        if b.answered_by not in after:
            raise BadReply(f"reply answered by {b.answered_by[:32]!r}, not a tier after the {role}: {list(after)}")
        if b.exit_position != -1:
            allowed = sorted(e.position for e in plan.exits if e.position > sent and e.position in self.runtime.exits)
            if b.exit_position not in allowed:
                raise BadReply(f"reply exit at position {b.exit_position}: the plan's exits past {sent} are {allowed}")
            dtype = self.runtime.cut_info(n).tensors[0].dtype  # the heads compute in the model's precision
            expected = [(dtype, (batch, self.runtime.exits[b.exit_position].spec.num_classes))]
        else:
            expected = [(i.dtype, (batch, *i.shape[1:]) if i.shape else ()) for i in self.runtime.cut_info(n).tensors]
        if len(reply.tensors) != len(expected):
            raise BadReply(f"reply holds {len(reply.tensors)} tensors, the model produces {len(expected)} there")
        for i, (t, (dtype, shape)) in enumerate(zip(reply.tensors, expected)):
            label = f"reply tensor {i} ({t.name[:32]!r})"
            if t.datatype != datatype_of(dtype) or tuple(t.shape) != tuple(shape):
                raise BadReply(f"{label} is {t.datatype} {list(t.shape)}, the model produces {datatype_of(dtype)} "
                               f"{list(shape)}")  # fmt: skip
            try:
                self._checked(label, t)
            except (InvalidRequest, CodecError) as e:
                raise BadReply(str(e)) from None

    def decode_reply(self, tensors: Sequence[WireTensor]) -> list[torch.Tensor]:
        """Decode an admitted reply's tensors (:meth:`check_reply`), each bounded by its declared size.

        Raises:
            BadReply: a payload corrupt past its header.
        """
        try:
            return [decode(t.payload, self._checked(f"reply tensor {i}", t)) for i, t in enumerate(tensors)]
        except (InvalidRequest, CodecError) as e:
            raise BadReply(str(e)) from None


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


_ITEMSIZES: dict[str, int] = {}


def _itemsize(dtype_name: str) -> int:
    """Bytes per element of a torch dtype name (``"float32"`` -> 4)."""
    size = _ITEMSIZES.get(dtype_name)
    if size is None:
        dtype = getattr(torch, dtype_name, None)
        size = torch.empty((), dtype=dtype).element_size() if isinstance(dtype, torch.dtype) else 8
        _ITEMSIZES[dtype_name] = size
    return size
