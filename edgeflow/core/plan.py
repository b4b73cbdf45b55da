"""A plan: which tier runs which range of positions, the codec on each hop, and the early exits.

Plans are data with a one-line text form that parses back::

    device[0:14]|int8 > edge[14:31]|int4 > cloud[31:]  exits@9:0.92,20:0.8
    input|png > edge[0:52]|int8 > cloud[52:]

- ``input|codec`` (optional, first) is the codec of the raw input (position 0) when the first stage is not the
  device's: the source sends the model input upstream before any tier computes (``lossless``, ``png``, ``jpeg``).
  Absent: ``lossless``. A plan whose first stage is the device's takes none (the device runs the input).
- ``tier[a:b]`` runs positions ``[a:b]`` (see :mod:`edgeflow.core.partition`); ``[a:]`` runs to the model
  output. Tiers appear in chain order ``device > edge > cloud``, each at most once; any may be absent.
- ``|codec`` is the codec on the hop leaving that tier (upstream), a codec spec such as ``int8`` or ``int8:z3``
  (see ``edgeflow.core.codecs.codec_from_spec``). It may be omitted on a hop: ``lossless`` is assumed, and
  the formatted text always names it. The last stage has no hop and takes no codec.
- ``exits@pos:threshold`` lists early exits: the tier whose range contains ``pos`` (``a < pos <= b``) evaluates
  the exit head there and answers if its confidence (max softmax probability) is ``>= threshold``.

``Plan.parse(str(plan)) == plan`` for every valid plan. Checks that need the model (ranges inside 0..N,
stages starting at candidate cuts, exits inside the model) are in :meth:`Plan.check`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Collection, Sequence

from edgeflow.errors import PlanError

__all__ = ["TIERS", "INPUT", "DEFAULT_HOP_CODEC", "Stage", "ExitPoint", "Plan"]

TIERS: tuple[str, ...] = ("device", "edge", "cloud")  # chain order, input first
INPUT = "input"  # the text form's name for the raw input's hop: "input|png > edge[0:]"
DEFAULT_HOP_CODEC = "lossless"

_STAGE = re.compile(r"(?P<tier>[^\[\]|>\s]*)\[(?P<start>[^:\]]*):(?P<stop>[^\]]*)\](?:\|(?P<codec>.*))?")
_CODEC = re.compile(r"[a-z][a-z0-9_]*(?::[a-z]-?[0-9]+)*")  # a codec spec: "int8", "int8:z3", "int8c:z1:a-1"
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Stage:
    """One tier's part of a plan.

    Attributes:
        tier: ``"device"``, ``"edge"`` or ``"cloud"``.
        start: first position the tier runs from.
        stop: position it runs to; ``None`` means the model output (N).
        codec: codec on the hop leaving this tier; ``None`` on the last stage.
    """

    tier: str
    start: int
    stop: int | None
    codec: str | None = None

    def __str__(self) -> str:
        stop = "" if self.stop is None else str(self.stop)
        codec = "" if self.codec is None else f"|{self.codec}"
        return f"{self.tier}[{self.start}:{stop}]{codec}"


@dataclass(frozen=True)
class ExitPoint:
    """An early exit at ``position``, taken when the head's confidence is ``>= threshold``."""

    position: int
    threshold: float

    def __str__(self) -> str:
        return f"{self.position}:{self.threshold!r}"


@dataclass(frozen=True)
class Plan:
    """Stages in chain order, early exits sorted by position, and the raw input's codec when the input is sent
    before any tier computes (``None``: lossless). Build with :meth:`parse` or directly."""

    stages: tuple[Stage, ...]
    exits: tuple[ExitPoint, ...] = ()
    input_codec: str | None = None

    def __post_init__(self) -> None:
        _check_structure(self)

    # ----------------------------------------------------------------------------------- text form
    def __str__(self) -> str:
        text = " > ".join(str(s) for s in self.stages)
        if self.input_codec is not None:
            text = f"{INPUT}|{self.input_codec} > {text}"
        if self.exits:
            text += "  exits@" + ",".join(str(e) for e in self.exits)
        return text

    @classmethod
    def parse(cls, text: str) -> "Plan":
        """Parse the text form.

        Raises:
            PlanError: malformed text, or a structural problem (naming the stage or exit at fault).
        """
        if not isinstance(text, str):
            raise PlanError(f"plan must be text, got {type(text).__name__}")
        body, sep, exit_text = text.strip().partition("exits@")
        if sep and not exit_text.strip():
            raise PlanError(f"plan {text!r}: 'exits@' lists no exits")
        if sep and body and not body[-1].isspace():
            raise PlanError(f"plan {text!r}: put whitespace before 'exits@'")
        body = body.strip()
        if not body:
            raise PlanError(f"plan {text!r} has no stages; expected e.g. 'device[0:14]|int8 > cloud[14:]'")
        stages = []
        parts = [p.strip() for p in body.split(">")]
        input_codec = _parse_input(parts[0], text) if parts[0].startswith(INPUT) else None
        if input_codec is not None:
            parts = parts[1:]
            if not parts:
                raise PlanError(f"plan {text!r} has no stages after its input codec")
        for i, part in enumerate(parts):
            stages.append(_parse_stage(part, i, last=i == len(parts) - 1, text=text))
        exits = _parse_exits(exit_text.strip(), text) if sep else ()
        try:
            return cls(tuple(stages), exits, input_codec)
        except PlanError as e:
            raise PlanError(f"plan {text!r}: {e}") from None

    # ----------------------------------------------------------------------------------- queries
    @property
    def tiers(self) -> tuple[str, ...]:
        return tuple(s.tier for s in self.stages)

    @property
    def cuts(self) -> tuple[int, ...]:
        """Positions where the chain hops from one tier to the next."""
        return tuple(s.start for s in self.stages[1:])

    def stage(self, tier: str) -> Stage | None:
        """The stage ``tier`` runs, or ``None`` if the tier is absent."""
        return next((s for s in self.stages if s.tier == tier), None)

    def upstream_of(self, tier: str) -> Stage | None:
        """The stage after ``tier``'s (where its output goes), or ``None``."""
        tiers = self.tiers
        if tier not in tiers:
            return None
        i = tiers.index(tier)
        return self.stages[i + 1] if i + 1 < len(tiers) else None

    def exits_in(self, start: int, stop: int) -> tuple[ExitPoint, ...]:
        """Exits a tier running ``[start:stop]`` evaluates: ``start < position <= stop``."""
        return tuple(e for e in self.exits if start < e.position <= stop)

    @property
    def sends_input(self) -> bool:
        """Whether the source sends the raw input upstream (the first stage is not the device's)."""
        return self.stages[0].tier != TIERS[0]

    def with_input_codec(self, codec: str | None) -> "Plan":
        """This plan with the raw input's codec replaced (``None``: the default, lossless)."""
        return replace(self, input_codec=codec)

    def resolved(self, num_positions: int) -> "Plan":
        """This plan with the open stop of the last stage replaced by ``num_positions``."""
        last = self.stages[-1]
        if last.stop is not None:
            return self
        return replace(self, stages=(*self.stages[:-1], replace(last, stop=num_positions)))

    def check(
        self,
        num_positions: int,
        cuts: Collection[int] | None = None,
        *,
        codecs: Collection[str] | None = None,
        exit_positions: Collection[int] | None = None,
    ) -> None:
        """Check the plan against a model.

        Args:
            num_positions: the model's N.
            cuts: candidate cut positions; every hop must be at one.
            codecs: known codec names; every hop codec must be one.
            exit_positions: positions that have an exit head.

        Raises:
            PlanError: naming the stage or exit that does not fit.
        """
        n = num_positions
        for s in self.stages:
            stop = n if s.stop is None else s.stop
            if stop > n:
                raise PlanError(f"plan {self}: stage {s} runs past the model output (N = {n})")
            if s.start >= stop:
                raise PlanError(f"plan {self}: stage {s} is empty: start must be < stop (N = {n})")
        if self.stages[-1].stop not in (None, n):
            raise PlanError(f"plan {self}: last stage {self.stages[-1]} must run to the model output {n}")
        if cuts is not None:
            for c in self.cuts:
                if c not in cuts:
                    raise PlanError(f"plan {self}: hop at position {c} is not a candidate cut")
        if codecs is not None:
            for s in self.stages:
                if s.codec is not None and s.codec.split(":")[0] not in codecs:
                    raise PlanError(f"plan {self}: unknown codec {s.codec!r} on stage {s} (known: {sorted(codecs)})")
            if self.input_codec is not None and self.input_codec.split(":")[0] not in codecs:
                raise PlanError(f"plan {self}: unknown input codec {self.input_codec!r} (known: {sorted(codecs)})")
        for e in self.exits:
            if not 0 < e.position < n:
                raise PlanError(f"plan {self}: exit at {e.position} outside the model's interior 1..{n - 1}")
            if exit_positions is not None and e.position not in exit_positions:
                raise PlanError(
                    f"plan {self}: no exit head at position {e.position} (heads at {sorted(exit_positions)})"
                )


# ------------------------------------------------------------------------------------------- parsing
def _parse_int(value: str, what: str, stage_text: str, text: str) -> int:
    value = value.strip()
    if not _INT.fullmatch(value):
        raise PlanError(f"plan {text!r}: stage {stage_text!r}: {what} {value!r} is not a non-negative integer")
    return int(value)


def _parse_stage(part: str, index: int, *, last: bool, text: str) -> Stage:
    if not part:
        raise PlanError(f"plan {text!r}: stage {index} is empty (stray '>'?)")
    m = _STAGE.fullmatch(part)
    if not m:
        raise PlanError(f"plan {text!r}: stage {index} {part!r} is not 'tier[start:stop]|codec'")
    start = _parse_int(m["start"], "start", part, text)
    stop = None if not m["stop"].strip() else _parse_int(m["stop"], "stop", part, text)
    codec = m["codec"]
    if codec is not None:
        codec = codec.strip()
        if not _CODEC.fullmatch(codec):
            raise PlanError(f"plan {text!r}: stage {part!r}: codec {codec!r} is not a codec name")
    elif not last:
        codec = DEFAULT_HOP_CODEC
    return Stage(m["tier"], start, stop, codec)


def _parse_input(part: str, text: str) -> str:
    name, bar, codec = part.partition("|")
    if name.strip() != INPUT or not bar:
        raise PlanError(f"plan {text!r}: {part!r} is not '{INPUT}|codec'")
    codec = codec.strip()
    if not _CODEC.fullmatch(codec):
        raise PlanError(f"plan {text!r}: input codec {codec!r} is not a codec name")
    return codec


def _parse_exits(exit_text: str, text: str) -> tuple[ExitPoint, ...]:
    exits = []
    for item in exit_text.split(","):
        item = item.strip()
        pos, colon, thr = item.partition(":")
        if not colon or not _INT.fullmatch(pos.strip()):
            raise PlanError(f"plan {text!r}: exit {item!r} is not 'position:threshold'")
        try:
            threshold = float(thr)
        except ValueError:
            raise PlanError(f"plan {text!r}: exit {item!r}: threshold {thr!r} is not a number") from None
        exits.append(ExitPoint(int(pos), threshold))
    return tuple(exits)


def _check_structure(plan: Plan) -> None:
    """Checks that need no model; raised from ``Plan.__init__``."""
    stages: Sequence[Stage] = plan.stages
    if not stages:
        raise PlanError("a plan needs at least one stage")
    seen: list[str] = []
    for i, s in enumerate(stages):
        if s.tier not in TIERS:
            raise PlanError(f"stage {s}: unknown tier {s.tier!r} (tiers: {', '.join(TIERS)})")
        if s.tier in seen:
            raise PlanError(f"stage {s}: tier {s.tier!r} appears twice")
        if seen and TIERS.index(s.tier) < TIERS.index(seen[-1]):
            raise PlanError(f"stage {s}: tier {s.tier!r} after {seen[-1]!r}; chain order is {' > '.join(TIERS)}")
        seen.append(s.tier)
        if isinstance(s.start, bool) or not isinstance(s.start, int) or s.start < 0:
            raise PlanError(f"stage {s}: start must be an int >= 0")
        if s.stop is not None and (isinstance(s.stop, bool) or not isinstance(s.stop, int) or s.stop <= s.start):
            raise PlanError(f"stage {s}: stop must be an int > start {s.start}")
        last = i == len(stages) - 1
        if not last:
            if s.stop is None:
                raise PlanError(f"stage {s}: only the last stage may run to the model output ('[a:]')")
            if stages[i + 1].start != s.stop:
                raise PlanError(f"stages {s} > {stages[i + 1]} are not contiguous: {s.stop} != {stages[i + 1].start}")
            if not s.codec:
                raise PlanError(f"stage {s}: needs a codec for its hop to {stages[i + 1].tier}")
        elif s.codec is not None:
            raise PlanError(f"stage {s}: the last stage has no hop, so no codec")
    if stages[0].start != 0:
        raise PlanError(f"first stage {stages[0]} must start at position 0 (the model input)")
    if plan.input_codec is not None:
        if not isinstance(plan.input_codec, str) or not _CODEC.fullmatch(plan.input_codec):
            raise PlanError(f"input codec {plan.input_codec!r} is not a codec name")
        if not plan.sends_input:
            raise PlanError(f"{INPUT}|{plan.input_codec}: the first stage {stages[0]} runs the input, so no input codec")
    previous = 0
    for e in plan.exits:
        if isinstance(e.position, bool) or not isinstance(e.position, int) or e.position <= 0:
            raise PlanError(f"exit {e}: position must be an int > 0")
        if e.position <= previous:
            raise PlanError(f"exit {e}: exits must be listed by increasing position, once each")
        previous = e.position
        t = e.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and 0.0 < t <= 1.0):
            raise PlanError(f"exit {e}: threshold must be a number in (0, 1]")
        last_stop = stages[-1].stop
        if last_stop is not None and e.position >= last_stop:
            raise PlanError(f"exit {e}: position is not before the model output {last_stop}")
