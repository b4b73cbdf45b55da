"""The device's result memory: identical inputs answered again without compute or transfer.

A camera that sees the same scene, a sensor that repeats a reading, a client that retries: the device keeps the
answers of recent inputs in a bounded LRU (``memory`` in the node file, off by default) and answers an identical
input from it at once — no compute on any tier, no bytes on any hop. The per-request breakdown says ``memory:
"hit"`` (with the bytes the original request moved over every hop, now saved) or ``"miss"``.

What makes two inputs identical is their content: SHA-256 over each input tensor's dtype, shape and bytes (never
a caller's request id, which a caller chooses). The key also holds the model's fingerprint and the plan's text
(its cuts, codecs and exits), because the answer depends on them: an int8 hop or an early exit can answer
differently from the full model, so a plan switch starts afresh rather than serving another plan's answer, and a
memory never crosses models. Only answers that went by their plan (no fallback) are kept, each with the tier that
produced it; :meth:`ResultMemory.forget` drops every answer one tier produced (a tier found lying), so a wrong
cached answer can only have come from the tier that computed it and is gone once that tier is distrusted.

Bounded by entries and bytes (outputs as stored, plus the key): the least recently used answers are evicted first;
an answer bigger than the whole budget is not kept. With a :class:`~edgeflow.agent.nearmemory.NearCalibration`
(``memory.near``), an input that misses may be answered by the nearest remembered input of the same plan within the
calibrated distance (:meth:`ResultMemory.find`, ``"near"``); the embeddings live in the entries, so the same LRU
bounds them.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

from edgeflow.agent.nearmemory import NearCalibration, distances, embed
from edgeflow.config import MemoryConfig

_KEY_OVERHEAD = 256  # bytes an entry costs besides its tensors (key, record), counted against max_mb


@dataclass(frozen=True)
class Remembered:
    """One answer in the memory: what the caller gets again, and what its first computation cost."""

    values: tuple[torch.Tensor, ...]
    position: int
    answered_by: str
    exit_position: int
    exit_confidence: float
    saved_bytes: int  # bytes the original request moved over every hop (out and back)
    nbytes: int  # what the entry costs the memory
    plan: str = ""
    embedding: torch.Tensor | None = None  # the input's (near matching)


@dataclass
class MemoryStats:
    hits: int = 0
    near_hits: int = 0  # misses answered from a near-duplicate (not in hits or misses)
    misses: int = 0
    stored: int = 0
    evicted: int = 0
    forgotten: int = 0
    bytes_saved: int = 0
    entries: int = 0
    nbytes: int = 0


class ResultMemory:
    """A bounded LRU of answers keyed by input content, model fingerprint and plan (see the module doc)."""

    def __init__(self, config: MemoryConfig, fingerprint: str, near: NearCalibration | None = None):
        self.max_entries = config.max_entries
        self.max_bytes = int(config.max_mb * 2**20)
        self.fingerprint = fingerprint
        self.near = near if near is not None and near.threshold > 0 else None
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Remembered] = OrderedDict()
        self._stats = MemoryStats()
        self._by_plan: dict[str, dict[bytes, torch.Tensor]] = {}  # plan -> key -> embedding (near matching)
        self._stacked: dict[str, tuple[list[bytes], torch.Tensor]] = {}  # plan -> its embeddings stacked, until changed

    def embed(self, values: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """The input's embedding when near matching is on (else None)."""
        return embed(values) if self.near is not None else None

    def find(self, key: bytes, embedding: torch.Tensor | None, plan: str) -> tuple[Remembered, str] | None:
        """The answer for ``key``'s input (``"hit"``), else the answer of the remembered input of the same plan
        nearest to ``embedding`` (:meth:`embed` of the input) within the calibrated distance (``"near"``), else None
        (a miss)."""
        got = self.get(key)
        if got is not None or self.near is None:
            return None if got is None else (got, "hit")
        emb = embedding
        if emb is None:
            return None
        with self._lock:
            keys, stacked = self._stack(plan)
            if not keys or stacked.shape[1] != emb.shape[0]:
                return None
            d = distances(emb, stacked)
            i = int(d.argmin())
            if float(d[i]) > self.near.threshold:
                return None
            entry = self._entries[keys[i]]
            self._entries.move_to_end(keys[i])
            self._stats.misses -= 1  # get() counted it
            self._stats.near_hits += 1
            self._stats.bytes_saved += entry.saved_bytes
            return entry, "near"

    def _stack(self, plan: str) -> tuple[list[bytes], torch.Tensor]:
        got = self._stacked.get(plan)
        if got is None:
            table = self._by_plan.get(plan, {})
            keys = list(table)
            got = (keys, torch.stack([table[k] for k in keys]) if keys else torch.empty(0, 0))
            self._stacked[plan] = got
        return got

    def _drop(self, key: bytes, entry: Remembered) -> None:
        """Unlink ``entry`` (popped from the LRU) from the near index and the byte count (lock held)."""
        self._stats.nbytes -= entry.nbytes
        if entry.embedding is not None:
            table = self._by_plan.get(entry.plan)
            if table is not None:
                table.pop(key, None)
                if not table:
                    del self._by_plan[entry.plan]
            self._stacked.pop(entry.plan, None)

    def key(self, values: Sequence[torch.Tensor], plan: str) -> bytes:
        """The content key of model inputs ``values`` under ``plan``."""
        h = hashlib.sha256()
        for part in (self.fingerprint, plan):
            data = part.encode()
            h.update(len(data).to_bytes(8, "little") + data)
        h.update(len(values).to_bytes(8, "little"))
        for v in values:
            t = v.detach()
            if t.device.type != "cpu":
                t = t.cpu()
            t = t.contiguous()
            head = f"{t.dtype}|{tuple(t.shape)}".encode()
            h.update(len(head).to_bytes(8, "little") + head)
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy())
        return h.digest()

    def get(self, key: bytes) -> Remembered | None:
        """The answer remembered under ``key`` (counted as a hit), or None (a miss)."""
        with self._lock:
            got = self._entries.get(key)
            if got is None:
                self._stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self._stats.hits += 1
            self._stats.bytes_saved += got.saved_bytes
            return got

    def put(self, key: bytes, values: Sequence[torch.Tensor], *, position: int, answered_by: str, exit_position: int,
            exit_confidence: float, saved_bytes: int, plan: str = "",
            embedding: torch.Tensor | None = None) -> bool:  # fmt: skip
        """Remember an answer that went by its plan; False if it alone is over the byte budget (not kept).
        ``embedding`` (:meth:`embed` of the input) makes it a candidate for near matches under ``plan``."""
        kept = tuple(v.detach().clone() for v in values)
        nbytes = _KEY_OVERHEAD + sum(v.numel() * v.element_size() for v in kept)
        if embedding is not None:
            nbytes += embedding.numel() * embedding.element_size()
        if nbytes > self.max_bytes:
            return False
        entry = Remembered(kept, position, answered_by, exit_position, exit_confidence, saved_bytes, nbytes, plan,
                           embedding)  # fmt: skip
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._drop(key, old)
            self._entries[key] = entry
            self._stats.nbytes += nbytes
            self._stats.stored += 1
            if embedding is not None:
                self._by_plan.setdefault(plan, {})[key] = embedding
                self._stacked.pop(plan, None)
            while len(self._entries) > self.max_entries or self._stats.nbytes > self.max_bytes:
                gone_key, gone = self._entries.popitem(last=False)
                self._drop(gone_key, gone)
                self._stats.evicted += 1
        return True

    def forget(self, tier: str) -> int:
        """Drop every answer ``tier`` produced (e.g. it was found answering wrongly); returns how many."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.answered_by == tier]
            for k in keys:
                self._drop(k, self._entries.pop(k))
            self._stats.forgotten += len(keys)
            return len(keys)

    def stats(self) -> MemoryStats:
        with self._lock:
            s = MemoryStats(**vars(self._stats))
            s.entries = len(self._entries)
            return s
