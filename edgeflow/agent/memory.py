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
an answer bigger than the whole budget is not kept. Near-duplicates (a calibrated distance on the cut's activations)
are not matched: only exact repeats.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch

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


@dataclass
class MemoryStats:
    hits: int = 0
    misses: int = 0
    stored: int = 0
    evicted: int = 0
    forgotten: int = 0
    bytes_saved: int = 0
    entries: int = 0
    nbytes: int = 0


class ResultMemory:
    """A bounded LRU of answers keyed by input content, model fingerprint and plan (see the module doc)."""

    def __init__(self, config: MemoryConfig, fingerprint: str):
        self.max_entries = config.max_entries
        self.max_bytes = int(config.max_mb * 2**20)
        self.fingerprint = fingerprint
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, Remembered] = OrderedDict()
        self._stats = MemoryStats()

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
            exit_confidence: float, saved_bytes: int) -> bool:  # fmt: skip
        """Remember an answer that went by its plan; False if it alone is over the byte budget (not kept)."""
        kept = tuple(v.detach().clone() for v in values)
        nbytes = _KEY_OVERHEAD + sum(v.numel() * v.element_size() for v in kept)
        if nbytes > self.max_bytes:
            return False
        entry = Remembered(kept, position, answered_by, exit_position, exit_confidence, saved_bytes, nbytes)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._stats.nbytes -= old.nbytes
            self._entries[key] = entry
            self._stats.nbytes += nbytes
            self._stats.stored += 1
            while len(self._entries) > self.max_entries or self._stats.nbytes > self.max_bytes:
                _, gone = self._entries.popitem(last=False)
                self._stats.nbytes -= gone.nbytes
                self._stats.evicted += 1
        return True

    def forget(self, tier: str) -> int:
        """Drop every answer ``tier`` produced (e.g. it was found answering wrongly); returns how many."""
        with self._lock:
            keys = [k for k, e in self._entries.items() if e.answered_by == tier]
            for k in keys:
                self._stats.nbytes -= self._entries.pop(k).nbytes
            self._stats.forgotten += len(keys)
            return len(keys)

    def stats(self) -> MemoryStats:
        with self._lock:
            s = MemoryStats(**vars(self._stats))
            s.entries = len(self._entries)
            return s
