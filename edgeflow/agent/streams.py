"""Stream mode: each hop codes a stream's frames against the previous frame's reconstruction.

A request may name a stream and its frame number (request parameters ``stream``, ``frame``). On every hop the
sending tier (:class:`StreamSender`) codes the values it forwards as a residual against the reconstruction of the
last frame it sent (:mod:`edgeflow.core.codecs.delta`), and the receiving tier (:class:`StreamReceiver`) keeps the
same reconstruction. A key frame — the hop codec's ordinary payload — goes first, every ``key_interval`` frames,
when the residual would cost more than ``key_ratio`` of a key frame, after a plan switch (another position, codec
or plan) and after any failed call upstream (the receiver's state is then unknown).

The receiver never guesses. A residual whose base is not the frame it holds (a frame lost or reordered), one for
a stream it holds nothing for (never started, or evicted), one at another position or with another shape, is
refused with FAILED_PRECONDITION ``stream 's': ...; send a key frame`` (:class:`~edgeflow.errors.StreamRejected`
with ``resync``); the sender then sends the same frame again as a key frame, once. A frame number already
received is refused without ``resync`` (a duplicate: the caller's bug).

Stream ids are scoped by the caller (``InferCall.caller``: the TLS identity or the connection), so one caller can
neither read nor corrupt another's state; the id a tier uses towards its own upstream is derived from
``(sender, caller, stream)`` (:meth:`StreamSender.upstream_id`, the sender being a random id each agent draws at
start, so two devices that share a TLS identity and a stream name never share state upstream). State is bounded per stream and in total, by count and
bytes, evicting the least recently used stream.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

import numpy as np
import torch

from edgeflow.config import StreamsConfig
from edgeflow.core.codecs import Codec, DecodeLimits, decode
from edgeflow.core.codecs.delta import (
    DELTA,
    STREAM_CODECS,
    decode_residual,
    encode_residual,
    read_delta_info,
    residual_steps,
)
from edgeflow.errors import CodecError, InvalidRequest, RemoteError, StreamRejected
from edgeflow.transport import WireTensor, datatype_of

__all__ = ["RESYNC_HINT", "StreamRef", "StreamReceiver", "StreamSender", "Coded", "is_resync"]

RESYNC_HINT = "send a key frame"
_RECENT = 64  # frame numbers remembered per stream to tell a duplicate
# a residual keeps the key frame's step; a frame whose own step would be finer than this share of it (its range
# shrank) goes as a key frame: every frame keeps within 1 / _FIDELITY of the error bound coding it alone gives
_FIDELITY = 0.9


def is_resync(error: BaseException) -> bool:
    """True if an upstream's error asks this tier to resend the frame as a key frame."""
    return isinstance(error, RemoteError) and error.code == "FAILED_PRECONDITION" and error.details.rstrip(
        ".").endswith(RESYNC_HINT)  # fmt: skip


@dataclass(frozen=True)
class StreamRef:
    """A request's place in a stream, as one tier sees it.

    Attributes:
        caller: who sent it (``InferCall.caller``; ``"local"`` for the device's in-process caller).
        stream: the stream id the caller gave.
        frame: the frame number.
    """

    caller: str
    stream: str
    frame: int

    @property
    def key(self) -> tuple[str, str]:
        return self.caller, self.stream

    def label(self) -> str:
        return f"stream {self.stream[:64]!r}"


_V = TypeVar("_V")


class _Lru(Generic[_V]):
    """Entries keyed by (caller, stream), bounded by count and bytes; least recently used evicted first."""

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[_V, int]] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> _V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: tuple[str, str], value: _V, nbytes: int) -> None:
        self.pop(key)
        self._items[key] = (value, nbytes)
        self._bytes += nbytes
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, (_, n) = self._items.popitem(last=False)
            self._bytes -= n
            self.evictions += 1

    def pop(self, key: tuple[str, str]) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[1]

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)


def _nbytes(values: Sequence[torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in values)


def _signature(values: Sequence[torch.Tensor]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple((str(v.dtype).removeprefix("torch."), tuple(v.shape)) for v in values)


# ------------------------------------------------------------------------------------------------ receiving
@dataclass
class _Received:
    position: int
    frame: int
    values: list[torch.Tensor]
    recent: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class StreamReceiver:
    """The receiving end of every stream hop into one agent (see the module doc).

    Args:
        config: the node's ``streams`` section.
        role: this agent's role, named in statuses.
    """

    def __init__(self, config: StreamsConfig, role: str):
        self.config, self.role = config, role
        self.table: _Lru[_Received] = _Lru(config.max_streams, int(config.max_mb * 2**20))
        self.max_stream_bytes = int(config.max_stream_mb * 2**20)
        self.resyncs = 0  # residuals refused with a resync status

    def decode(
        self,
        ref: StreamRef,
        position: int,
        tensors: Sequence[WireTensor],
        decode_plain: Callable[[int, WireTensor], torch.Tensor],
    ) -> list[torch.Tensor]:
        """The values of frame ``ref.frame`` at ``position``: a key frame decoded by ``decode_plain`` (and kept as
        the stream's reference when it is the newest), or residuals decoded against the reference.

        Raises:
            StreamRejected: a duplicate, or (``resync``) a residual that does not apply to the state held here.
            InvalidRequest, CodecError: malformed tensors (as for any request).
        """
        deltas = [t.codec == DELTA for t in tensors]
        if not any(deltas):
            values = [decode_plain(i, t) for i, t in enumerate(tensors)]
            self._keep(ref, position, values)
            return values
        if not all(deltas):
            raise InvalidRequest(f"{ref.label()} frame {ref.frame}: some tensors are residuals, some not; a frame is "
                                 "one or the other")  # fmt: skip
        base = self._check_residuals(ref, tensors)
        if not self.config.enabled:
            self._refuse(f"{ref.label()}: this {self.role} keeps no stream state (streams.enabled is off); "
                         f"{RESYNC_HINT}")  # fmt: skip
        with self.table.lock:
            entry = self.table.get(ref.key)
        if entry is None:
            self._refuse(f"{ref.label()}: frame {ref.frame} is a residual against frame {base}, but this {self.role} "
                         f"holds no state for the stream (never started, or evicted: {self.table.max_entries} streams "
                         f"and {self.table.max_bytes / 2**20:g} MiB are kept); {RESYNC_HINT}")  # fmt: skip
        with entry.lock:
            if ref.frame in entry.recent:
                raise StreamRejected(f"{ref.label()}: frame {ref.frame} was already received here (a duplicate)",
                                     resync=False)  # fmt: skip
            if entry.position != position:
                self._refuse(f"{ref.label()}: frame {ref.frame} arrives at position {position}, the stream's "
                             f"reference is at position {entry.position} (the plan changed); {RESYNC_HINT}")  # fmt: skip
            have = [(datatype_of(d), list(s)) for d, s in _signature(entry.values)]
            got = [(t.datatype, list(t.shape)) for t in tensors]
            if have != got:
                self._refuse(f"{ref.label()}: frame {ref.frame} holds {got}, the stream's reference {have} (the "
                             f"shape changed); {RESYNC_HINT}")  # fmt: skip
            if base != entry.frame:
                self._refuse(f"{ref.label()}: expected a residual against frame {entry.frame}, got frame {ref.frame} "
                             f"against frame {base} (a frame was lost or reordered); {RESYNC_HINT}")  # fmt: skip
            values = [decode_residual(t.payload, r, t.decode_limits()) for t, r in zip(tensors, entry.values)]
            entry.values = [v.clone() for v in values]  # the compute may write into what it is given
            entry.frame = ref.frame
            _remember(entry.recent, ref.frame)
        with self.table.lock:
            if self.table.get(ref.key) is entry:
                self.table.put(ref.key, entry, _nbytes(entry.values))
        return values

    def _check_residuals(self, ref: StreamRef, tensors: Sequence[WireTensor]) -> int:
        """The base frame the residuals share, once each agrees with its declaration and the request's frame."""
        bases = set()
        for i, t in enumerate(tensors):
            try:
                info = read_delta_info(t.payload, t.decode_limits())
            except CodecError as e:
                raise InvalidRequest(f"{ref.label()} frame {ref.frame} tensor {i}: {e}") from None
            got = str(info.header.dtype).removeprefix("torch.")
            if datatype_of(got) != t.datatype or list(info.header.shape) != list(t.shape):
                raise InvalidRequest(f"{ref.label()} frame {ref.frame} tensor {i}: declared {t.datatype} "
                                     f"{list(t.shape)}, the residual holds {datatype_of(got)} "
                                     f"{list(info.header.shape)}")  # fmt: skip
            if info.frame != ref.frame:
                raise InvalidRequest(f"{ref.label()}: the request is frame {ref.frame}, tensor {i}'s residual codes "
                                     f"frame {info.frame}")  # fmt: skip
            bases.add(info.base)
        if len(bases) != 1:
            raise InvalidRequest(f"{ref.label()} frame {ref.frame}: residuals against different frames {sorted(bases)}")
        return bases.pop()

    def _refuse(self, message: str) -> None:
        self.resyncs += 1
        raise StreamRejected(message, resync=True)

    def _keep(self, ref: StreamRef, position: int, values: list[torch.Tensor]) -> None:
        """A key frame: refuse a duplicate; keep it as the reference if it is the newest frame."""
        nbytes = _nbytes(values)
        with self.table.lock:
            entry = self.table.get(ref.key)
        if entry is not None:
            with entry.lock:
                if ref.frame in entry.recent:
                    raise StreamRejected(f"{ref.label()}: frame {ref.frame} was already received here (a duplicate)",
                                         resync=False)  # fmt: skip
                _remember(entry.recent, ref.frame)
                if ref.frame < entry.frame:
                    return  # an older frame, answered on its own: the newer reference stays
        if not self.config.enabled or nbytes > self.max_stream_bytes:
            return
        recent = entry.recent if entry is not None else [ref.frame]
        fresh = _Received(position, ref.frame, [v.clone() for v in values], recent)
        with self.table.lock:
            self.table.put(ref.key, fresh, nbytes)

    def note_input(self, ref: StreamRef) -> None:
        """A frame entering the chain here without a hop (the device's in-process caller): refuse a duplicate.

        Raises:
            StreamRejected: the frame number was received already.
        """
        with self.table.lock:
            entry = self.table.get(ref.key)
            if entry is None:
                entry = _Received(0, ref.frame, [])
                self.table.put(ref.key, entry, 0)
        with entry.lock:
            if ref.frame in entry.recent:
                raise StreamRejected(f"{ref.label()}: frame {ref.frame} was already received here (a duplicate)",
                                     resync=False)  # fmt: skip
            _remember(entry.recent, ref.frame)
            entry.frame = max(entry.frame, ref.frame)


def _remember(recent: list[int], frame: int) -> None:
    recent.append(frame)
    if len(recent) > _RECENT:
        del recent[0]


# ------------------------------------------------------------------------------------------------ sending
@dataclass
class _Sent:
    signature: tuple
    frame: int
    values: list[torch.Tensor]  # the receiver's reconstruction of `frame`
    steps: list[tuple[np.ndarray | None, int | None]]
    since_key: int
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Coded:
    """One frame coded for the hop up: ``wire`` to send (residuals when ``delta``), and what coding it on its own
    would have cost (``key_nbytes``), for the breakdown."""

    ref: StreamRef
    upstream_id: str  # the stream's id on the hop up
    wire: list[WireTensor]
    delta: bool
    nbytes: int
    key_nbytes: int
    _rekey: Callable[[], "Coded"] | None = None

    @property
    def saved_bytes(self) -> int:
        return self.key_nbytes - self.nbytes

    def as_key(self) -> "Coded":
        """The same frame as a key frame (after the receiver asked for a resync); kept as the new reference."""
        return self._rekey() if self._rekey is not None else self


class StreamSender:
    """The sending end of one agent's hop up, for every stream passing through it (see the module doc).

    Args:
        config: the node's ``streams`` section.
    """

    def __init__(self, config: StreamsConfig):
        self.config = config
        self.table: _Lru[_Sent] = _Lru(config.max_streams, int(config.max_mb * 2**20))
        self.max_stream_bytes = int(config.max_stream_mb * 2**20)
        self.keys = self.deltas = 0
        self._nonce = secrets.token_hex(8)  # this sender's streams are its own at the next tier, even after a restart

    def upstream_id(self, ref: StreamRef) -> str:
        """The id this tier gives ``ref``'s stream towards its upstream: unique per (this sender, caller, stream),
        so two callers' streams of the same name — or two devices' sharing a TLS identity — stay apart upstream."""
        digest = hashlib.sha256(f"{self._nonce}\0{ref.caller}\0{ref.stream}".encode()).hexdigest()[:16]
        return f"{digest}/{ref.stream[:200]}"

    def encode(
        self, ref: StreamRef, position: int, plan: str, names: Sequence[str], values: Sequence[torch.Tensor], codec: Codec
    ) -> Coded:
        """Code frame ``ref.frame`` (the live values at ``position`` under ``plan``) for the hop up with ``codec``:
        a residual when the stream's state allows, else a key frame."""
        values = list(values)
        key_payloads = [codec.encode(v) for v in values]
        key_wire = [_wire(n, v, codec.spec, p) for n, v, p in zip(names, values, key_payloads)]
        key_nbytes = sum(len(p) for p in key_payloads)
        sig = (position, codec.spec, plan, _signature(values))
        usable = self.config.enabled and codec.name in STREAM_CODECS and _nbytes(values) <= self.max_stream_bytes

        def keyed() -> Coded:
            if usable:
                self._store_key(ref, sig, values, key_payloads, codec)
            return Coded(ref, self.upstream_id(ref), key_wire, False, key_nbytes, key_nbytes)

        if not usable:
            return keyed()
        with self.table.lock:
            entry = self.table.get(ref.key)
        if entry is not None:
            with entry.lock:
                coded = self._residuals(entry, ref, sig, names, values, key_nbytes, codec)
            if coded is not None:
                self.deltas += 1
                coded._rekey = keyed
                return coded
        self.keys += 1
        out = keyed()
        out._rekey = keyed
        return out

    def _residuals(self, e: _Sent, ref: StreamRef, sig: tuple, names: Sequence[str], values: list[torch.Tensor],
                   key_nbytes: int, codec: Codec) -> Coded | None:  # fmt: skip
        if e.signature != sig or ref.frame <= e.frame or e.since_key + 1 >= self.config.key_interval:
            return None
        payloads, recon = [], []
        for v, r, (steps, axis) in zip(values, e.values, e.steps):
            if steps is not None:  # the key frame's resolution must stay close to what this frame gets on its own
                own, _ = residual_steps(codec, v)
                if own is not None and (own < _FIDELITY * steps).any():
                    return None
            out = encode_residual(v, r, steps=steps, axis=axis, frame=ref.frame, base=e.frame)
            if out is None:
                return None  # a residual beyond int16 steps: the scene changed
            payloads.append(out[0])
            recon.append(out[1])
        nbytes = sum(len(p) for p in payloads)
        if nbytes > self.config.key_ratio * key_nbytes:
            return None
        e.frame, e.values, e.since_key = ref.frame, recon, e.since_key + 1
        wire = [_wire(n, v, DELTA, p) for n, v, p in zip(names, values, payloads)]
        return Coded(ref, self.upstream_id(ref), wire, True, nbytes, key_nbytes)

    def _store_key(self, ref: StreamRef, sig: tuple, values: list[torch.Tensor], payloads: list[bytes],
                   codec: Codec) -> None:  # fmt: skip
        with self.table.lock:
            entry = self.table.get(ref.key)
        if entry is not None and ref.frame < entry.frame:
            return  # an older frame sent on its own: the newer reference stays
        # the reference is what the receiver decodes from the key payload, not the exact values
        recon = [decode(p, DecodeLimits(max_elements=max(1, v.numel()), max_bytes=max(1, v.numel() * v.element_size())))
                 for p, v in zip(payloads, values)]  # fmt: skip
        steps = [residual_steps(codec, v) for v in values]
        with self.table.lock:
            self.table.put(ref.key, _Sent(sig, ref.frame, recon, steps, 0), _nbytes(recon))

    def keys_next(self, ref: StreamRef, position: int, codec: Codec, plan: str) -> bool:
        """Whether ``ref``'s frame, sent at ``position`` under ``plan`` with ``codec``, goes as a key frame for sure
        (no reference for that hop, or the key interval ends); False where it cannot be delta coded at all."""
        if not self.config.enabled or codec.name not in STREAM_CODECS:
            return False
        with self.table.lock:
            e = self.table.get(ref.key)
        if e is None:
            return True
        return e.signature[:3] != (position, codec.spec, plan) or e.since_key + 1 >= self.config.key_interval

    def forget(self, ref: StreamRef) -> None:
        """The receiver's state is unknown (a call failed): the stream's next frame goes as a key frame."""
        with self.table.lock:
            self.table.pop(ref.key)


def _wire(name: str, value: torch.Tensor, codec: str, payload: bytes) -> WireTensor:
    return WireTensor(name, datatype_of(str(value.dtype).removeprefix("torch.")), tuple(value.shape), codec, payload)
