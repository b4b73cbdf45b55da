"""What a stream's frames cost on each hop the planner may choose: measured where frames go, sampled where not.

The live planner (:mod:`edgeflow.agent.live`) prices a hop (position, codec) of a stream at a *share* of its
profiled bytes, the bytes of coding every frame on its own. :class:`HopShares` keeps that share per hop; two
sources feed it:

- **frames** that went over the hop (``LivePlanner.observe``, from each reply's breakdown): the real thing;
- **samples** (:class:`CutSampler`) for the hops the current plan does not use. Without them the planner would
  know a stream's savings only on the hop it already uses, and would never find that another cut is cheaper as a
  stream (e.g. that ``input|lossless`` delta coded moves fewer bytes than ``input|jpeg``, which cannot be delta
  coded). The device holds the whole model, so now and then it takes two consecutive frames of a stream, runs
  them up to the candidate cuts itself (on its compute unit, when that is idle, so an emulated slowdown applies)
  and codes the second against the first with the stream sender's own code (:class:`~edgeflow.agent.streams.
  StreamSender`, so residual steps, the fidelity check and ``key_ratio`` are the real ones) at every candidate
  hop. Its cost is bounded: at most one sample every ``streams.sample_every_frames`` frames, and only while the
  seconds spent sampling stay under ``streams.sample_budget`` of the time since start (both counted and reported).

Share over a key period (``N = streams.key_interval`` frames), as the sender codes a stream: one key frame (the
hop codec's own payload) per period, more when residuals stop paying, residuals between them:

    share = f + (1 - f) * r

``r``: residual frames' bytes over their own key bytes (moving average, weight 0.2). ``f``: the key frames' rate, a
moving average of "this frame was a key" with weight ``1/N`` for a key after a residual — one key per period is
what a period costs, so the key frame after a plan switch (or at a period's end) moves ``f`` by ``1/N`` and does
not undo the switch it follows — and weight 0.2 for a key after a key (a run: residuals no longer pay, e.g. the
camera pans, and the planner must learn that fast). A hop known from samples only is priced with at least one key
per period (``f >= 1/N``): switching to it starts with a key frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from edgeflow.agent.streams import StreamRef, StreamSender
from edgeflow.config import StreamsConfig
from edgeflow.core.codecs import Codec
from edgeflow.core.codecs.delta import STREAM_CODECS
from edgeflow.core.plan import Plan
from edgeflow.errors import EdgeflowError

__all__ = ["CutSampler", "HopShare", "HopShares", "own_hop", "stream_hops"]

_log = logging.getLogger(__name__)
_RESIDUAL_WEIGHT = 0.2  # residual frames' share: as the planner's other moving averages
_RUN_WEIGHT = 0.2  # a key right after a key
_STREAMS_KEPT = 4  # streams whose last frame the sampler keeps (one frame each, only right before a sample is due)
_SAMPLE_DEADLINE_S = 30.0  # a sample waiting this long for the compute unit is dropped
_IDLE_WAIT_S = 5.0  # a due sample waits this long for the compute unit to be idle, then is dropped
_IDLE_POLL_S = 0.005
# activation hops coded per sample, in turns from the input outward (the demo model has 69 cuts x 5 codecs: coding a
# frame pair at all of them took ~2 s on one host core, 12 take ~0.1 s); the input's hops, which need no compute,
# are coded in every sample
HOPS_PER_SAMPLE = 12

Hop = tuple[int, str]  # (position, codec)


@dataclass
class HopShare:
    """One hop's stream share (see the module doc)."""

    residual: float | None = None  # moving average of residual frames' bytes over their key bytes
    key_rate: float = 0.0  # moving average of "the frame was a key frame"
    last_key: bool = False
    frames: int = 0  # frames seen on the hop
    samples: int = 0  # sampled frame pairs

    def add(self, share: float | None, key_interval: int) -> None:
        """One frame (or sample): ``share`` of its key bytes for a residual, None for a key frame."""
        if share is None:
            w = _RUN_WEIGHT if self.last_key else 1.0 / key_interval
            self.key_rate += w * (1.0 - self.key_rate)
            self.last_key = True
            return
        share = min(1.0, max(0.0, share))
        self.residual = share if self.residual is None else (1 - _RESIDUAL_WEIGHT) * self.residual + _RESIDUAL_WEIGHT * share
        self.key_rate *= 1.0 - 1.0 / key_interval
        self.last_key = False

    def share(self, key_interval: int) -> float:
        """The hop's expected bytes per frame over its profiled (independent) bytes, in (0, 1]."""
        if self.residual is None:
            return 1.0
        f = self.key_rate if self.frames else max(self.key_rate, 1.0 / key_interval)
        return max(1e-6, min(1.0, f + (1.0 - f) * self.residual))


class HopShares:
    """Every hop's :class:`HopShare`, bounded by the hops a model has (the caller passes only its own).

    Args:
        key_interval: the stream sender's ``streams.key_interval``.
    """

    def __init__(self, key_interval: int):
        self.key_interval = max(1, int(key_interval))
        self.hops: dict[Hop, HopShare] = {}

    def frame(self, hop: Hop, share: float) -> float:
        """A stream frame moved ``share`` of its independent bytes over ``hop`` (1: a key frame, or a codec that
        cannot delta code). Returns the hop's share now."""
        h = self.hops.setdefault(hop, HopShare())
        h.add(None if share >= 1.0 else share, self.key_interval)
        h.frames += 1
        return h.share(self.key_interval)

    def sample(self, hop: Hop, share: float | None) -> float:
        """A sampled frame pair: the second frame would move ``share`` of its key bytes as a residual (None: the
        sender would send a key frame). Returns the hop's share now."""
        h = self.hops.setdefault(hop, HopShare())
        h.add(share, self.key_interval)
        h.samples += 1
        return h.share(self.key_interval)

    def share(self, hop: Hop) -> float | None:
        h = self.hops.get(hop)
        return None if h is None else h.share(self.key_interval)


def stream_hops(model: Any, source: int = 0) -> list[Hop]:
    """The hops a cost model can price whose codec can delta code: ``(position, codec)`` with finite bytes on the
    source tier's profile (``model``: a :class:`~edgeflow.core.planner.CostModel`)."""
    out = []
    for i, pos in enumerate(model.hop_pos):
        for k, codec in enumerate(model.codecs):
            if codec in STREAM_CODECS and float(model.nbytes[source, i, k]) < float("inf"):
                out.append((int(pos), codec))
    return out


def own_hop(plan: Plan, num_positions: int) -> Hop | None:
    """The hop out of the source tier under ``plan`` (None: the source answers everything itself)."""
    resolved = plan.resolved(num_positions)
    if resolved.sends_input:
        return 0, resolved.input_codec or "lossless"
    if len(resolved.stages) < 2:
        return None
    first = resolved.stages[0]
    return first.stop or 0, first.codec or "lossless"


class CutSampler:
    """Samples consecutive frames of a stream at candidate hops (see the module doc); reports to ``report``.

    Args:
        runtime: the device's :class:`~edgeflow.agent.runtime.ModelRuntime` (the whole model).
        compute: the device's compute unit (``run(fn, deadline)``, ``idle``).
        hops: the candidate hops.
        codec_of: a codec spec -> its :class:`~edgeflow.core.codecs.Codec`.
        config: the node's ``streams`` section (``key_interval``, ``key_ratio``, ``sample_every_frames``,
            ``sample_budget``).
        report: called on the sampler's thread with ``{hop: residual share or None (a key frame)}`` per sample.
        clock: monotonic seconds.
    """

    def __init__(self, runtime: Any, compute: Any, hops: Iterable[Hop], codec_of: Callable[[str], Codec],
                 config: StreamsConfig, report: Callable[[Mapping[Hop, float | None]], None], *,
                 clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.runtime, self.compute, self.codec_of, self.report, self.clock = runtime, compute, codec_of, report, clock
        self.hops = sorted(set(hops))
        self._inputs = [h for h in self.hops if h[0] == 0]
        self._cuts = [h for h in self.hops if h[0] > 0]
        self._turn = 0  # where the next sample's turn over the cuts' hops starts
        self.every_frames, self.budget = config.sample_every_frames, config.sample_budget
        self._coding = StreamsConfig(enabled=True, key_interval=config.key_interval, key_ratio=config.key_ratio,
                                     max_stream_mb=config.max_stream_mb)  # fmt: skip
        self.started_s = clock()
        self.samples = 0
        self.spent_s = 0.0  # seconds the samples took, compute and coding
        self.dropped = 0  # due samples not taken (the compute unit busy, or the sample failed)
        self._since = 0  # frames offered since the last sample was queued
        self._prev: OrderedDict[tuple[str, str], tuple[int, list[torch.Tensor]]] = OrderedDict()
        self._job: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._kicked = False  # the frame that completed the pair was answered: the job may run
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self.sampled = threading.Condition(self._lock)  # notified after each sample (tests wait on it)
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self.every_frames > 0 and bool(self.hops)

    def _affordable(self, now: float) -> bool:
        return self.spent_s <= self.budget * (now - self.started_s)

    def offer(self, ref: StreamRef, values: Sequence[torch.Tensor]) -> None:
        """A frame of a stream entering the chain at the device (its inputs): keep it if the next frame may be
        sampled; queue a sample if it follows a kept frame and one is due. Cheap on the request's thread."""
        if not self.enabled or self._closed:
            return
        with self._lock:
            now = self.clock()
            self._since += 1
            prev = self._prev.pop(ref.key, None)
            if (prev is not None and prev[0] == ref.frame - 1 and self._job is None and self._since > self.every_frames
                    and self._affordable(now)):  # fmt: skip
                self._job = (prev[1], [v.detach().clone() for v in values])
                self._since, self._kicked = 0, False
                self._start()
            elif self._since >= self.every_frames and self._job is None and self._affordable(now):
                self._prev[ref.key] = (ref.frame, [v.detach().clone() for v in values])  # the next frame may pair
                while len(self._prev) > _STREAMS_KEPT:
                    self._prev.popitem(last=False)

    def kick(self) -> None:
        """A request was answered: a queued sample may run now (after the frame that completed its pair, so it does
        not take the compute unit from that frame)."""
        with self._lock:
            if self._job is not None and not self._kicked:
                self._kicked = True
                self._wake.notify_all()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="edgeflow-stream-sampler", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while (self._job is None or not self._kicked) and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
                job = self._job
            assert job is not None
            t = time.perf_counter()
            try:
                self._wait_idle()
                t = time.perf_counter()  # the wait is the requests' time, not the sample's
                shares = self.measure(*job)
            except Exception as e:  # noqa: BLE001 - a failed sample must neither stop sampling nor the device
                if not isinstance(e, EdgeflowError):
                    _log.exception("stream sampler: a sample failed")
                _log.debug("stream sampler: sample dropped: %s", e)
                shares = None
            with self._lock:
                self.spent_s += time.perf_counter() - t
                self._job, self._kicked = None, False
                if shares is None:
                    self.dropped += 1
                else:
                    self.samples += 1
            if shares is not None:
                try:
                    self.report(shares)
                except Exception:  # noqa: BLE001 - as above
                    _log.exception("stream sampler: reporting a sample failed")
            with self._lock:
                self.sampled.notify_all()

    def _wait_idle(self) -> None:
        """Requests go first: wait (bounded) until the compute unit has nothing running or queued."""
        end = time.monotonic() + _IDLE_WAIT_S
        while not self.compute.idle:
            if time.monotonic() > end or self._closed:
                raise EdgeflowError(f"the compute unit was busy for {_IDLE_WAIT_S:g} s")
            time.sleep(_IDLE_POLL_S)

    def measure(self, prev: Sequence[torch.Tensor], cur: Sequence[torch.Tensor]) -> dict[Hop, float | None]:
        """``cur`` coded against ``prev`` at the input's hops and the next :data:`HOPS_PER_SAMPLE` of the others:
        ``{hop: residual bytes / key bytes, or None}`` (None: the stream sender would send ``cur`` as a key frame).

        Raises:
            EdgeflowError: the compute unit did not run it (busy, stopping, past the deadline).
        """
        hops = self._inputs + [self._cuts[(self._turn + i) % len(self._cuts)]
                               for i in range(min(HOPS_PER_SAMPLE, len(self._cuts)))]  # fmt: skip
        self._turn = (self._turn + HOPS_PER_SAMPLE) % max(1, len(self._cuts))
        positions = sorted({p for p, _ in hops})
        values, _ = self.compute.run(lambda: self._forward(positions, [list(prev), list(cur)]),
                                     self.clock() + _SAMPLE_DEADLINE_S)  # fmt: skip
        out: dict[Hop, float | None] = {}
        for pos, spec in hops:
            names = [i.name for i in self.runtime.cut_info(pos).tensors]
            sender = StreamSender(self._coding)  # a fresh reference per hop: prev is its key frame
            codec = self.codec_of(spec)
            sender.encode(StreamRef("sample", "s", 0), pos, "sample", names, values[pos][0], codec)
            coded = sender.encode(StreamRef("sample", "s", 1), pos, "sample", names, values[pos][1], codec)
            out[(pos, spec)] = coded.nbytes / max(1, coded.key_nbytes) if coded.delta else None
        return out

    def _forward(self, positions: list[int], frames: list[list[torch.Tensor]]) -> dict[int, list[list[torch.Tensor]]]:
        """The live values of each frame at each position (the device's own model, no exits)."""
        out: dict[int, list[list[torch.Tensor]]] = {}
        current, at = frames, 0
        for pos in positions:
            if pos > at:
                current = [self.runtime.run(at, pos, f).values for f in current]
                at = pos
            out[pos] = current
        return out

    def stats(self) -> dict[str, float]:
        """Samples taken and dropped, and the seconds they took (also as a share of the time since start)."""
        with self._lock:
            elapsed = max(1e-9, self.clock() - self.started_s)
            return {"samples": self.samples, "dropped": self.dropped, "spent_s": self.spent_s,
                    "spent_share": self.spent_s / elapsed}  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=_SAMPLE_DEADLINE_S)
