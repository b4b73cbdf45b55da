"""Scenario files: what ``edgeflow run`` replays, validated by pydantic.

A scenario names the node files of the three tiers (with overrides such as an emulated slowdown), the two
links between them (constant rate or a bandwidth trace, one-way delay, loss, scheduled outages), the model,
the workload (data, arrivals, number of requests, seed), the objective with its SLO and accuracy floor, and
the baselines to run against. See ``docs/SCENARIOS.md`` for every field; ``scenarios/*.yaml`` are examples.

Only the CLI reads files: :meth:`Scenario.from_mapping` takes parsed YAML and raises
:class:`~edgeflow.errors.ConfigError` with one line per problem, each naming the field path and, for a
choice, the allowed values::

    quickstart.yaml: links.device_edge.trace.format: 'foo' is not one of auto, cooked, mahimahi, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeflow.core.plan import Plan
from edgeflow.errors import ConfigError, PlanError

__all__ = [
    "BASELINES",
    "GENERATORS",
    "LINK_NAMES",
    "TraceSpec",
    "OutageSpec",
    "FaultSpec",
    "LinkConfig",
    "NodeRef",
    "NodesConfig",
    "ModelSpec",
    "NormalizeSpec",
    "WorkloadSpec",
    "BestFixedSpec",
    "Scenario",
]

BASELINES = ("device-only", "edge-only", "cloud-only", "best-fixed", "neurosurgeon", "a-priori")
GENERATORS = ("constant", "steps", "markov-3g", "markov-lte")
TRACE_FORMATS = ("auto", "cooked", "mahimahi", "norway_raw", "belgium_raw")  # edgeflow.core.traces.TRACE_FORMATS
LINK_NAMES = ("device_edge", "edge_cloud")  # chain order: links[i] joins tier i and i + 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TraceSpec(_Strict):
    """A bandwidth trace: a generator, or a file.

    ``generator: markov-3g`` / ``markov-lte`` draw a seeded path of the Markov models fitted to the Norway
    HSDPA / Belgium 4G logs (``edgeflow.core.traces``); ``steps`` holds ``[duration_s, Mbit/s]`` pairs;
    ``constant`` holds ``rate_mbit``. ``file`` is a path (relative to the scenario file) or ``builtin:NAME``
    for a trace shipped in the package. The trace loops; ``offset_s`` starts the replay that far in, ``scale``
    multiplies every rate.
    """

    generator: Literal["constant", "steps", "markov-3g", "markov-lte"] | None = None
    seed: int = 0
    duration_s: float = Field(600.0, gt=0, le=86400)
    rate_mbit: float | None = Field(None, ge=0)
    steps: list[tuple[float, float]] | None = None
    file: str | None = None
    format: Literal["auto", "cooked", "mahimahi", "norway_raw", "belgium_raw"] = "auto"
    bin_s: float = Field(1.0, gt=0)
    scale: float = Field(1.0, ge=0)
    offset_s: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> "TraceSpec":
        if (self.generator is None) == (self.file is None):
            raise ValueError("give exactly one of 'generator' or 'file'")
        if self.generator == "constant" and self.rate_mbit is None:
            raise ValueError("generator 'constant' needs rate_mbit")
        if self.generator == "steps":
            if not self.steps:
                raise ValueError("generator 'steps' needs steps: [[duration_s, Mbit/s], ...]")
            if any(d <= 0 or r < 0 for d, r in self.steps):
                raise ValueError("steps: every duration_s must be > 0 and every rate >= 0")
        return self


class OutageSpec(_Strict):
    """A window in which the link carries nothing. ``mode``: ``refuse`` (new connections reset, open ones
    stall), ``stall`` (everything waits), ``reset`` (open connections are reset too)."""

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)
    mode: Literal["refuse", "stall", "reset"] = "refuse"


class FaultSpec(_Strict):
    """Something done to an agent process at ``at_s`` seconds after a run starts (every run; see docs/SCENARIOS.md).

    ``kill: edge`` sends ``signal`` (``KILL``: a crash; ``TERM``: a clean shutdown that drains for the node's
    grace period) to the tier's agent; it is started again, on the same port, ``restart_after_s`` later (default:
    when the run ends, before the next one). ``stall: cloud`` freezes the agent (SIGSTOP: its sockets stay open,
    nothing is answered) for ``for_s``. Link outages are ``links.<name>.outages``. ``lie: edge`` (``at_s: 0``: for
    the whole of every run) starts the tier with the node section ``chaos``: it answers a well-formed wrong class for
    ``fraction`` of the requests (``choice``: ``uniform`` or ``runner-up``; ``seed``), for the device's ``validate``.
    """

    at_s: float = Field(ge=0, le=86400)
    kill: Literal["edge", "cloud"] | None = None
    stall: Literal["edge", "cloud"] | None = None
    lie: Literal["edge", "cloud"] | None = None
    signal: Literal["KILL", "TERM"] = "KILL"
    restart_after_s: float | None = Field(None, gt=0, le=86400)
    for_s: float | None = Field(None, gt=0, le=86400)
    fraction: float | None = Field(None, gt=0, le=1)
    choice: Literal["uniform", "runner-up"] = "uniform"
    seed: int = Field(0, ge=0, le=2**31)

    @model_validator(mode="after")
    def _one_action(self) -> "FaultSpec":
        if sum(x is not None for x in (self.kill, self.stall, self.lie)) != 1:
            raise ValueError("give exactly one of 'kill', 'stall' or 'lie'")
        if self.lie is not None:
            if self.fraction is None:
                raise ValueError("'lie' needs fraction (of the requests answered with a wrong class)")
            # (values, not the fields given: a scenario re-validated from its own dump has every field set)
            if self.at_s != 0 or self.for_s is not None or self.restart_after_s is not None or self.signal != "KILL":
                raise ValueError("'lie' lasts every whole run: at_s 0, and no for_s, restart_after_s or signal")
            return self
        if self.fraction is not None or self.choice != "uniform" or self.seed != 0:
            raise ValueError("fraction, choice and seed go with 'lie'")
        if self.stall is not None:
            if self.for_s is None:
                raise ValueError("'stall' needs for_s")
            if self.restart_after_s is not None or "signal" in self.model_fields_set:
                raise ValueError("'stall' takes for_s, not restart_after_s or signal")
        elif self.for_s is not None:
            raise ValueError("'kill' takes restart_after_s, not for_s")
        return self

    @property
    def tier(self) -> str:
        return self.kill or self.stall or self.lie or ""

    @property
    def end_s(self) -> float | None:
        """When the tier is back (planned: the restart starts then), or None (at the run's end)."""
        length = self.for_s if self.stall is not None else self.restart_after_s
        return None if length is None else self.at_s + length

    def describe(self) -> str:
        if self.lie is not None:
            return f"{self.lie} answers a wrong class ({self.choice}) for {self.fraction:g} of the requests, seed {self.seed}"
        if self.stall is not None:
            return f"stall {self.stall} at {self.at_s:g} s for {self.for_s:g} s"
        back = f"restart after {self.restart_after_s:g} s" if self.restart_after_s else "restart at the run's end"
        return f"kill {self.kill} (SIG{self.signal}) at {self.at_s:g} s, {back}"


class LinkConfig(_Strict):
    """One link between adjacent tiers. ``rate_mbit`` (constant) or ``trace`` sets the rate of the direction away
    from the device (up); neither leaves the link unshaped. The direction back (down) gets the same unless
    ``down_rate_mbit`` or ``down_trace`` is set (e.g. a Mahimahi ``.up``/``.down`` pair).
    """

    rate_mbit: float | None = Field(None, gt=0)
    trace: TraceSpec | None = None
    down_rate_mbit: float | None = Field(None, gt=0)
    down_trace: TraceSpec | None = None
    delay_ms: float = Field(0.0, ge=0, le=10000)
    loss: float = Field(0.0, ge=0, lt=1)
    outages: list[OutageSpec] = []

    @model_validator(mode="after")
    def _one_rate(self) -> "LinkConfig":
        if self.rate_mbit is not None and self.trace is not None:
            raise ValueError("give at most one of 'rate_mbit' or 'trace'")
        if self.down_rate_mbit is not None and self.down_trace is not None:
            raise ValueError("give at most one of 'down_rate_mbit' or 'down_trace'")
        ends = sorted((o.start_s, o.start_s + o.duration_s) for o in self.outages)
        for (_, end), (start, _) in zip(ends, ends[1:]):
            if start < end:
                raise ValueError("outages overlap")
        return self


class NodeRef(_Strict):
    """A tier's node file plus overrides. ``overrides`` takes dotted NodeConfig paths
    (``{"queues.compute": 16}``); the named fields are shorthands for the common ones."""

    file: str | None = None  # default: ../nodes/<tier>.yaml relative to the scenario file
    slowdown_factor: float | None = Field(None, ge=1.0, le=1000.0)
    threads: int | None = Field(None, ge=1, le=256)
    overrides: dict[str, Any] = {}


class NodesConfig(_Strict):
    device: NodeRef = NodeRef()
    edge: NodeRef = NodeRef()
    cloud: NodeRef = NodeRef()


class LinksConfig(_Strict):
    device_edge: LinkConfig = LinkConfig()
    edge_cloud: LinkConfig = LinkConfig()


class ModelSpec(_Strict):
    """The artifact every tier loads (``builtin:demo``, a path, or ``zoo:NAME?...``)."""

    artifact: str = "builtin:demo"


class NormalizeSpec(_Strict):
    """Per-channel ``(x - mean) / std`` applied to images in [0, 1] (e.g. ImageNet's mean 0.485, 0.456, 0.406 and
    std 0.229, 0.224, 0.225)."""

    mean: list[float] = Field(min_length=1, max_length=4)
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1, max_length=4)


class WorkloadSpec(_Strict):
    """What the device sends.

    ``source``: ``demo-test`` (the demo model's labelled test split, shuffled by ``seed``), ``synthetic`` (inputs
    matching the model's: photo crops for an image model; unlabelled: accuracy is not measured, agreement still
    is), or a path relative to the scenario file: a folder of images, a ``.npy`` or a ``.safetensors`` file
    (:mod:`edgeflow.scenario.sources`; ``labels``, ``normalize`` and ``max_file_mb`` apply to these), or a
    ``.txt`` file of sentences, one a line, for a text model (``model.artifact: text:all-MiniLM-L6-v2``): tokenized
    on the device, unlabelled, compared with the unsplit model's embeddings by cosine similarity. ``arrival``: open loop with
    ``poisson`` or ``fixed`` inter-arrival times at ``rate_hz``, or ``closed`` loop with ``concurrency``
    requests outstanding. ``devices`` spreads the requests round-robin over that many devices, each with its
    own device-edge link. A request not answered within ``timeout_s`` of its send time is lost. ``distinct``:
    the requests are drawn (uniformly, by ``seed``) from only that many different inputs, so inputs repeat (a
    camera on the same scenes); with the device's ``memory`` on, repeats are answered from it. Streams: ``video``
    (a demo image with a demo object moving over it, ``motion: static`` or ``moving``; unlabelled) or ``frames``
    (the images of ``frames_dir`` in name order, relative to the scenario file); their requests are frames of one
    stream per device (``stream``: each hop delta codes them; false: every frame coded on its own).
    """

    source: str = Field("demo-test", min_length=1, max_length=4096)  # demo-test | synthetic | video | frames | a path (.txt: sentences)
    labels: str | None = Field(None, min_length=1, max_length=4096)  # folders | a labels file (see sources.py)
    normalize: NormalizeSpec | None = None  # image folders: per-channel (x - mean) / std after scaling to [0, 1]
    max_file_mb: float = Field(1024.0, gt=0, le=65536)  # a tensor or image file larger than this is refused
    motion: Literal["static", "moving"] = "static"  # source: video
    frames_dir: str | None = Field(None, min_length=1, max_length=4096)  # source: frames
    stream: bool | None = None  # None: true for video and frames
    arrival: Literal["poisson", "fixed", "closed"] = "poisson"
    rate_hz: float = Field(10.0, gt=0, le=10000)
    concurrency: int = Field(1, ge=1, le=256)
    requests: int = Field(100, ge=1, le=1_000_000)
    seed: int = 0
    timeout_s: float = Field(10.0, gt=0, le=3600)
    devices: int = Field(1, ge=1, le=64)
    distinct: int | None = Field(None, ge=1, le=1_000_000)  # draw the requests from only this many inputs (repeats)

    @model_validator(mode="after")
    def _file_options(self) -> "WorkloadSpec":
        if self.source in ("demo-test", "synthetic", "video", "frames") and (self.labels is not None or self.normalize is not None):
            raise ValueError(f"labels and normalize apply to a folder or file source, not {self.source!r}")
        if self.source == "frames" and self.frames_dir is None:
            raise ValueError("frames_dir: required by source: frames")
        if self.stream and self.source not in ("video", "frames"):
            raise ValueError(f"stream: needs a video or frames source, not {self.source}")
        return self

    @property
    def streamed(self) -> bool:
        """Whether requests are frames of a stream."""
        return self.source in ("video", "frames") if self.stream is None else self.stream


class BestFixedSpec(_Strict):
    """How the best-fixed-split candidates are drawn: the planner's best and ``top_k`` alternatives at the
    mean link rates times each of ``bandwidth_factors``, plus every other run's fixed plan; the one with the
    lowest measured median latency wins."""

    bandwidth_factors: list[float] = [0.25, 4.0]
    top_k: int = Field(1, ge=0, le=8)
    max_candidates: int = Field(3, ge=0, le=32)


class Scenario(_Strict):
    """A whole scenario file. Build with :meth:`from_mapping` to get field-path errors."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    nodes: NodesConfig = NodesConfig()
    links: LinksConfig = LinksConfig()
    model: ModelSpec = ModelSpec()
    workload: WorkloadSpec = WorkloadSpec()
    objective: Literal["latency", "energy", "throughput"] = "latency"
    slo_ms: float | None = Field(None, gt=0)
    accuracy_floor_pts: float = Field(1.0, ge=0, le=100)
    privacy: bool = False
    plan: str = "auto"  # auto: the device's live planner; static: the planner's choice at the mean rates; or a plan
    baselines: list[Literal["device-only", "edge-only", "cloud-only", "best-fixed", "neurosurgeon", "a-priori"]] = [
        "device-only", "edge-only", "cloud-only", "best-fixed", "neurosurgeon"]  # fmt: skip
    best_fixed: BestFixedSpec = BestFixedSpec()
    faults: list[FaultSpec] = []  # done to the agents in every run, at the same times after its start

    @model_validator(mode="after")
    def _plan(self) -> "Scenario":
        if self.plan not in ("auto", "static"):
            try:
                Plan.parse(self.plan)
            except PlanError as e:
                raise ValueError(f"plan: {e}") from None
        if len(set(self.baselines)) != len(self.baselines):
            raise ValueError("baselines: listed twice")
        for tier in ("edge", "cloud"):
            if len([f for f in self.faults if f.lie == tier]) > 1:
                raise ValueError(f"faults: {tier}: one 'lie' per tier")
            mine = sorted((f for f in self.faults if f.tier == tier and f.lie is None), key=lambda f: f.at_s)
            for a, b in zip(mine, mine[1:]):
                if a.end_s is None or b.at_s <= a.end_s:
                    raise ValueError(f"faults: {tier}: {b.describe()} starts before {a.describe()} is over")
        return self

    @property
    def fixed_plan(self) -> Plan | None:
        """The scenario's own plan, or None for ``auto`` / ``static`` (the planner chooses)."""
        return None if self.plan in ("auto", "static") else Plan.parse(self.plan)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "scenario") -> "Scenario":
        """Validate a mapping (parsed YAML).

        Raises:
            ConfigError: one line per problem: ``source: field.path: what is wrong``.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise ConfigError("\n".join(describe_errors(e, source))) from None

    def with_overrides(self, **fields: Any) -> "Scenario":
        """A re-validated copy with top-level or dotted fields replaced: ``with_overrides(**{"workload.requests": 20})``.

        Raises:
            ConfigError: the result is invalid.
        """
        data = self.model_dump(mode="json")
        for path, value in fields.items():
            node = data
            keys = path.split(".")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
        return Scenario.from_mapping(data, source=f"scenario {self.name} (overridden)")


def node_file_of(scenario_dir: Path, tier: str, ref: NodeRef) -> Path:
    """The node file a tier uses: ``ref.file`` relative to the scenario's folder, else ``../nodes/<tier>.yaml``."""
    if ref.file is None:
        return (scenario_dir / ".." / "nodes" / f"{tier}.yaml").resolve()
    p = Path(ref.file)
    return p if p.is_absolute() else (scenario_dir / p).resolve()


def describe_errors(e: ValidationError, source: str) -> list[str]:
    """One line per pydantic error: ``source: a.b.c: message``, choices listed as ``is not one of ...``."""
    lines = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if not _is_union_tag(p))
        given = err.get("input")
        kind = err["type"]
        if kind == "literal_error":
            allowed = str(err.get("ctx", {}).get("expected", "")).replace("'", "").replace(" or ", ", ")
            lines.append(f"{source}: {loc}: {given!r} is not one of {allowed}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if kind == "extra_forbidden":
            known = _fields_at([p for p in err["loc"][:-1] if not _is_union_tag(p)])
            lines.append(f"{source}: {loc}: unknown field; known: {', '.join(known)}")
            continue
        if not loc and msg.split(":", 1)[0] in Scenario.model_fields:
            lines.append(f"{source}: {msg}")  # a cross-field check that names its own field
            continue
        shown = f" (got {given!r})" if kind != "missing" and not isinstance(given, (dict, list)) else ""
        lines.append(f"{source}: {loc or '<root>'}: {msg}{shown}")
    return lines


def _fields_at(path: list[Any]) -> list[str]:
    """Field names of the model found by walking ``path`` from :class:`Scenario` (for unknown-field errors)."""
    model: Any = Scenario
    for part in path:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        model = next((a for a in (field.annotation, *getattr(field.annotation, "__args__", ()))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            args = getattr(field.annotation, "__args__", ())
            model = next((b for a in args for b in getattr(a, "__args__", ())
                          if isinstance(b, type) and issubclass(b, BaseModel)), None)
    return list(model.model_fields) if model is not None else []


def _is_union_tag(part: Any) -> bool:
    """pydantic puts the union member's type name in the location (``function-after[...]``); drop it."""
    return isinstance(part, str) and ("[" in part or part in ("float", "int", "str", "none"))
