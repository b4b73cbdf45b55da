"""The model as one agent runs it: partition, exit heads, fingerprint, and input checks.

Every tier loads the same artifact and can run any range ``[a:b]`` of it (so a re-plan needs no redeploy);
tiers agree on the model by fingerprint. Values received from the wire are checked against the partition's
:class:`~edgeflow.core.partition.CutInfo` before they reach the model:

- the number of tensors, their names (when the sender gives them), dtypes and ranks must match;
- dim 0 is the batch dim and may be anything in ``1..max_batch``; every other dim must match exactly
  (0-d tensors must match exactly). All tensors of one request must share the batch size.

Several requests can run as one batch (:meth:`ModelRuntime.run_batch`, for dynamic batching): their values
are concatenated along dim 0, run once and split back; early exits stay per request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import torch
from torch import nn

from edgeflow.core.exits import ExitHead, check_exits
from edgeflow.core.inputs import DTYPES, InputSpec
from edgeflow.core.exits import confidence as exit_confidence
from edgeflow.core.partition import CutInfo, Partition, TensorInfo, partition
from edgeflow.core.plan import ExitPoint
from edgeflow.errors import PartitionError
from edgeflow.transport import InvalidRequest, RequestTooLarge, WireTensor, datatype_of

__all__ = ["ModelRuntime", "RunOutcome", "fingerprint_of"]


def fingerprint_of(model: nn.Module, p: Partition) -> str:
    """A fingerprint for a model that did not come from an artifact: graph signature + parameter bytes."""
    h = hashlib.sha256(p.signature.encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


@dataclass
class RunOutcome:
    """What running a range produced: the live values at ``position``, or an exit head's answer."""

    values: list[torch.Tensor]
    position: int
    exit_position: int = -1
    exit_confidence: float = 0.0
    heads: dict[int, torch.Tensor] = field(default_factory=dict)  # logits of every exit evaluated on the way (B, C)


class ModelRuntime:
    """A loaded model ready to run ranges.

    Args:
        model: the full model (put in eval mode here).
        example_input: an input batch (batch 1) to trace with.
        fingerprint: the artifact's fingerprint; computed from the model when ``None``.
        exits: early-exit heads by position; each maps the primary value at its position to logits (B, C).
        device: torch device to compute on.
        max_batch: largest batch dim accepted from the wire.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor | tuple[torch.Tensor, ...],
        *,
        fingerprint: str | None = None,
        exits: Mapping[int, nn.Module] | None = None,
        device: str = "cpu",
        max_batch: int = 64,
    ):
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        args = example_input if isinstance(example_input, tuple) else (example_input,)
        self.example_input = tuple(a.to(self.device) for a in args)
        self.partition = partition(self.model, self.example_input)
        self.fingerprint = fingerprint or fingerprint_of(self.model, self.partition)
        self.exits = {int(k): v.eval().to(self.device) for k, v in (exits or {}).items()}
        self.max_batch = max_batch
        self.calibration: Any = None  # the artifact's exit calibration table, when loaded from one (planner input)
        # text in, the model's token inputs out (edgeflow.agent.textin); None: this runtime takes no text, and why
        self.tokenizer: Any = None
        self.tokenizer_error = ""
        # the artifact's input spec (edgeflow.core.inputs.InputSpec), when loaded from one; else from the trace
        self.inputs: list[InputSpec] = _inputs_of(self.partition.cut_info(0))
        self._batch_dims: dict[tuple[int, ...], bool] = {}  # positions -> every value there has a batch dim
        for pos, head in self.exits.items():
            if pos not in self.partition.cuts:
                raise PartitionError(f"exit head at position {pos} is not at a candidate cut")
            if isinstance(head, ExitHead):
                check_exits(self.partition, [head])

    @property
    def num_positions(self) -> int:
        return self.partition.num_positions

    @property
    def cuts(self) -> list[int]:
        return list(self.partition.cuts)

    def is_boundary(self, position: int) -> bool:
        """Whether a range may start or stop at ``position`` (0, N, or a candidate cut)."""
        return position in (0, self.num_positions) or position in self.partition.cuts

    def cut_info(self, position: int) -> CutInfo:
        return self.partition.cut_info(position)

    # ------------------------------------------------------------------------------------- checks
    def check_range(self, start: int, stop: int) -> None:
        """Raises InvalidRequest unless ``[start:stop]`` is runnable (``start == stop`` allowed: nothing to run)."""
        n = self.num_positions
        for what, p in (("start", start), ("stop", stop)):
            if not 0 <= p <= n:
                raise InvalidRequest(f"{what} position {p} out of range 0..{n}")
            if not self.is_boundary(p):
                raise InvalidRequest(f"{what} position {p} is not a candidate cut (cuts: {_short(self.cuts)})")
        if start > stop:
            raise InvalidRequest(f"range [{start}:{stop}] runs backwards")

    def check_wire_tensors(self, position: int, tensors: Sequence[WireTensor]) -> int:
        """Check declared names/dtypes/shapes against what crosses ``position``; returns the batch size.

        Raises:
            InvalidRequest: count, name, dtype or shape does not fit.
            RequestTooLarge: batch dim above ``max_batch``.
        """
        expected = self.cut_info(position).tensors
        if len(tensors) != len(expected):
            names = [t.name for t in expected]
            if position == 0:
                got = [t.name for t in tensors if t.name]
                missing = [n for n in names if n not in got]
                hint = f" (missing {missing})" if got and missing else ""
                raise InvalidRequest(f"the model takes {len(expected)} inputs {names}, got {len(tensors)}{hint}")
            raise InvalidRequest(f"position {position} takes {len(expected)} tensors {names}, got {len(tensors)}")
        batch = None
        for i, (t, e) in enumerate(zip(tensors, expected)):
            # at position 0 the values are the model's own inputs: name them as the artifact's input spec does
            label = f"model input {e.name!r}" if position == 0 else f"input {i} ({t.name or e.name!r}) at position {position}"
            if t.name and t.name != e.name:
                where = "model input" if position == 0 else f"input {i} at position {position}"
                raise InvalidRequest(f"{where} {i} is named {t.name!r}, expected {e.name!r}")
            want = datatype_of(e.dtype)
            if t.datatype != want:
                raise InvalidRequest(f"{label} has datatype {t.datatype}, expected {want}")
            b = _check_shape(t.shape, e, label, self.max_batch)
            if b is not None:
                if batch is not None and b != batch:
                    raise InvalidRequest(f"{label} has batch {b}, other inputs have {batch}")
                batch = b
        return batch or 1

    def check_values(self, position: int, values: Sequence[torch.Tensor]) -> None:
        """Like :meth:`check_wire_tensors`, for tensors given in process (the device's own inputs)."""
        wire = [WireTensor("", datatype_of(str(v.dtype).removeprefix("torch.")), tuple(v.shape), "", b"") for v in values]
        self.check_wire_tensors(position, wire)

    # ------------------------------------------------------------------------------------- running
    def run(self, start: int, stop: int, values: Sequence[torch.Tensor], exits: Sequence[ExitPoint] = ()) -> RunOutcome:
        """Run ``[start:stop]`` on the live values at ``start``, evaluating ``exits`` on the way.

        An exit at position ``e`` (``start < e <= stop``) answers when its head's confidence
        (``edgeflow.core.exits.confidence``, max softmax probability) is ``>= threshold`` for every sample:
        a batch exits only if all its samples are confident.
        """
        current = [v.to(self.device) for v in values]
        pos = start
        heads: dict[int, torch.Tensor] = {}
        with torch.inference_mode():
            for e in sorted(exits, key=lambda e: e.position):
                if not start < e.position <= stop or e.position not in self.exits:
                    continue
                current = self._run_range(pos, e.position, current)
                pos = e.position
                primary = current[self.cut_info(pos).primary]
                logits = self.exits[pos](primary)
                heads[pos] = logits
                confidence = float(exit_confidence(logits).min())  # (B,) -> the least confident sample
                if confidence >= e.threshold:
                    return RunOutcome([logits], self.num_positions, e.position, confidence, heads)
            if pos < stop:
                current = self._run_range(pos, stop, current)
        return RunOutcome(current, stop, heads=heads)

    def batch_key(
        self, start: int, stop: int, values: Sequence[torch.Tensor], exits: Sequence[ExitPoint] = ()
    ) -> Hashable | None:
        """Requests with equal keys may share a batch (:meth:`run_batch`); ``None``: this one runs alone.

        Equal keys mean the same range, the same exits (positions and thresholds), and values that agree in
        everything but dim 0 (shape, dtype, device). Ranges whose values at ``start``, ``stop`` or an exit
        include a 0-d tensor (no batch dim) are never batched.
        """
        used = tuple(
            sorted((e.position, e.threshold) for e in exits if start < e.position <= stop and e.position in self.exits)
        )
        positions = (start, stop, *(p for p, _ in used))
        ok = self._batch_dims.get(positions)
        if ok is None:
            ok = all(len(t.shape) >= 1 for p in positions for t in self.cut_info(p).tensors)
            self._batch_dims[positions] = ok
        if not ok or any(v.dim() == 0 for v in values):
            return None
        return start, stop, used, tuple((tuple(v.shape[1:]), v.dtype, v.device) for v in values)

    def run_batch(
        self, start: int, stop: int, batch: Sequence[Sequence[torch.Tensor]], exits: Sequence[ExitPoint] = ()
    ) -> list[RunOutcome]:
        """Run several requests' values (equal :meth:`batch_key`) as one batch; one outcome per request.

        Each request's outcome is what :meth:`run` gives it alone, up to batch-size dependent rounding of the
        kernels (ulps). The values are concatenated along dim 0, (B_1 + ... + B_n, ...), and run once. Exits
        stay per request: at an exit the head runs on the whole batch, a request exits when *its own* samples
        are all confident (as in :meth:`run`) and gets its rows of the logits; the others continue as a
        smaller batch (their rows, selected along dim 0) to the next exit or ``stop``. Results are split
        back along dim 0. Should a range's output not keep the batch dim, the requests are run one by one.
        """
        if len(batch) == 1:
            return [self.run(start, stop, batch[0], exits)]
        sizes = [int(values[0].shape[0]) for values in batch]
        current = [torch.cat([values[i] for values in batch]).to(self.device) for i in range(len(batch[0]))]
        live = list(range(len(batch)))  # requests still computing, in batch order
        out: list[RunOutcome | None] = [None] * len(batch)
        heads: list[dict[int, torch.Tensor]] = [{} for _ in batch]  # each request's rows of every head evaluated
        pos = start
        with torch.inference_mode():
            for e in sorted(exits, key=lambda e: e.position):
                if not start < e.position <= stop or e.position not in self.exits:
                    continue
                current = self._run_range(pos, e.position, current)
                pos = e.position
                logits = self.exits[pos](current[self.cut_info(pos).primary])  # (B, C)
                rows = sum(sizes[r] for r in live)
                if logits.dim() == 0 or logits.shape[0] != rows:
                    return [self.run(start, stop, values, exits) for values in batch]
                confidence = exit_confidence(logits)  # (B,)
                staying, keep, offset = [], [], 0
                for r in live:
                    n = sizes[r]
                    heads[r][pos] = logits[offset : offset + n]
                    c = float(confidence[offset : offset + n].min())  # the request's least confident sample
                    if c >= e.threshold:
                        out[r] = RunOutcome([logits[offset : offset + n]], self.num_positions, e.position, c, heads[r])
                    else:
                        staying.append(r)
                        keep.append(torch.arange(offset, offset + n))
                    offset += n
                if not staying:
                    return out  # type: ignore[return-value]
                if len(staying) < len(live):
                    index = torch.cat(keep).to(self.device)
                    current = [v.index_select(0, index) for v in current]
                    live = staying
            if pos < stop:
                current = self._run_range(pos, stop, current)
        rows = sum(sizes[r] for r in live)
        if any(v.dim() == 0 or v.shape[0] != rows for v in current):
            return [self.run(start, stop, values, exits) for values in batch]
        parts = [torch.split(v, [sizes[r] for r in live]) for v in current]
        for j, r in enumerate(live):
            out[r] = RunOutcome([p[j] for p in parts], stop, heads=heads[r])
        return out  # type: ignore[return-value]

    def _run_range(self, a: int, b: int, values: list[torch.Tensor]) -> list[torch.Tensor]:
        out: Any = self.partition.range_module(a, b)(*values)
        if isinstance(out, torch.Tensor):
            return [out]
        if isinstance(out, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in out):
            return list(out)
        raise PartitionError(f"range [{a}:{b}] returned {type(out).__name__}, not tensors")

    def output_names(self, count: int) -> list[str]:
        """Names for the tensors of the model output (or an exit's logits)."""
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _inputs_of(info: CutInfo) -> list[InputSpec]:
    """The input spec the trace saw at position 0 (names, shapes at the example's batch, dtypes)."""
    out = []
    for t in info.tensors:
        try:
            out.append(InputSpec(t.name, t.shape, DTYPES[t.dtype]))
        except (KeyError, ValueError):  # a 0-d or exotic input: the runtime's own checks still apply
            return []
    return out


def _check_shape(shape: tuple[int, ...], e: TensorInfo, label: str, max_batch: int) -> int | None:
    if len(shape) != len(e.shape):
        raise InvalidRequest(f"{label} has shape {list(shape)}, expected rank {len(e.shape)} like {list(e.shape)}")
    if not shape:
        return None
    if tuple(shape[1:]) != tuple(e.shape[1:]):
        raise InvalidRequest(f"{label} has shape {list(shape)}, expected [B, {', '.join(map(str, e.shape[1:]))}]")
    if not 1 <= shape[0] <= max_batch:
        if shape[0] > max_batch:
            raise RequestTooLarge(f"{label} has batch {shape[0]}, limit {max_batch}")
        raise InvalidRequest(f"{label} has batch {shape[0]}, must be >= 1")
    return int(shape[0])


def _short(xs: Sequence[int]) -> str:
    return str(list(xs)) if len(xs) <= 12 else f"[{', '.join(map(str, xs[:10]))}, ... {len(xs)} in all]"
