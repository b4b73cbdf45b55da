"""Node configuration: what one agent process needs to know, validated by pydantic.

A node file (``nodes/device.yaml`` …) describes one machine: its role in the chain, where it listens,
its upstream peer, the model artifact, compute settings, power figures, TLS files, the plan, deadlines,
queue sizes and message limits. Only the CLI reads files; the library takes a :class:`NodeConfig`, built with
:meth:`NodeConfig.from_mapping` so that a bad value raises :class:`~edgeflow.errors.ConfigError` naming the
field path (``upstream.address: ...``).

``compute.slowdown_factor`` is *emulation*: to stand in for weaker hardware on one machine, the agent waits
``(factor - 1) x`` each measured compute time after computing (a sleep, so the stand-in uses no CPU).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgeflow.core.plan import TIERS, Plan
from edgeflow.errors import ConfigError, PlanError

__all__ = [
    "BUILTIN_PREFIX",
    "TEXT_PREFIX",
    "ListenConfig",
    "UpstreamConfig",
    "ModelConfig",
    "ComputeConfig",
    "PowerConfig",
    "TlsConfig",
    "AuthConfig",
    "DeadlinesConfig",
    "QueuesConfig",
    "BatchingConfig",
    "FallbackConfig",
    "LimitsConfig",
    "KeepaliveConfig",
    "PlannerConfig",
    "MetricsConfig",
    "TracingConfig",
    "RayConfig",
    "AUTO_PLAN",
    "NodeConfig",
]

AUTO_PLAN = "auto"  # plan: auto -- the device chooses the plan live (planner section); upstream tiers follow it

BUILTIN_PREFIX = "builtin:"  # model.artifact "builtin:demo" = edgeflow/weights/demo.safetensors
ZOO_PREFIX = "zoo:"  # model.artifact "zoo:resnet18?width=8" = a seeded zoo model, not a path
TEXT_PREFIX = "text:"  # model.artifact "text:all-MiniLM-L6-v2" = the pretrained encoder of edgeflow[text], not a path
_SECRET_KEY = re.compile(r"token|secret|password|key|authorization", re.IGNORECASE)  # never echoed in errors
_ADDRESS = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>[0-9]{1,5})")


def _check_address(value: str) -> str:
    m = _ADDRESS.fullmatch(value)
    if not m or int(m["port"]) > 65535:
        raise ValueError(f"{value!r} is not 'host:port' with port 0..65535")
    return value


Address = Annotated[str, AfterValidator(_check_address)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # every number finite


class ListenConfig(_Section):
    """Where the agent serves. Port 0 picks a free port (printed at start)."""

    address: Address = "127.0.0.1:0"


class TlsConfig(_Section):
    """PEM files. Server side: ``cert`` + ``key`` (+ ``ca`` to require client certificates).
    Client side (``upstream.tls``): ``ca`` to trust (+ ``cert`` + ``key`` for mTLS)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    @model_validator(mode="after")
    def _pairs(self) -> "TlsConfig":
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together: set both or neither")
        return self


class AuthConfig(_Section):
    """A shared bearer token, read at start from ``token_file`` or the environment variable ``token_env``
    (exactly one). Server side (``auth``): calls without ``authorization: Bearer <token>`` are refused with
    UNAUTHENTICATED (health and reflection stay open). Client side (``upstream.auth``): sent on every call.
    The token itself never goes in a node file: node files get logged, copied and committed."""

    token_file: Path | None = None
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @model_validator(mode="after")
    def _one_source(self) -> "AuthConfig":
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("set exactly one of token_file or token_env")
        return self


class UpstreamConfig(_Section):
    """The next tier up the chain."""

    address: Address
    tls: TlsConfig | None = None
    auth: AuthConfig | None = None  # the token to present upstream
    # more endpoints of the same tier (plain multi-process cloud): calls are spread over address and these by gRPC's
    # round_robin policy; IPv4 literals only
    endpoints: list[Address] = []
    # gRPC metadata sent on every call, e.g. {application: edgeflow} for a Ray Serve upstream (docs/RAY.md)
    metadata: dict[str, str] = {}

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.fullmatch(r"[a-z0-9_.\-]+", key) or key.endswith("-bin") or key == "authorization":
                raise ValueError(f"{key!r} is not a metadata key (lowercase a-z 0-9 _ . -; not -bin, not authorization)")
        return v


class ModelConfig(_Section):
    """The model artifact; every tier must load the same one (checked by fingerprint at handshake)."""

    artifact: str = "builtin:demo"
    fingerprint: str | None = None  # if set, loading fails unless the artifact has this fingerprint

    @field_validator("artifact")
    @classmethod
    def _artifact(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("empty artifact path")
        if v.startswith(BUILTIN_PREFIX) and not re.fullmatch(r"[a-z0-9_]+", v[len(BUILTIN_PREFIX) :]):
            raise ValueError(f"{v!r}: builtin artifacts are named like 'builtin:demo'")
        return v


class DeviceSpeedConfig(_Section):
    """A measured speed of the emulated machine, exactly one of: ``ms_per_model``, one whole-model forward pass
    (batch 1) on it; ``gflops``, its sustained GFLOP/s, so one pass takes the model's FLOPs (as the planner counts
    them) / that. The agent (``edgeflow agent``, ``edgeflow run``) turns it into ``slowdown_factor`` = that time /
    this host's measured ms per model at start-up (``edgeflow.agent.speed``)."""

    ms_per_model: float | None = Field(None, gt=0, le=1e6)
    gflops: float | None = Field(None, gt=0, le=1e9)

    @model_validator(mode="after")
    def _one(self) -> "DeviceSpeedConfig":
        if (self.ms_per_model is None) == (self.gflops is None):
            raise ValueError("give exactly one of ms_per_model or gflops")
        return self


class ComputeConfig(_Section):
    """How the agent computes. ``slowdown_factor`` > 1 emulates a slower machine (see module doc);
    ``device_speed`` states the machine's measured speed instead (not both)."""

    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(1, ge=1, le=256)
    slowdown_factor: float = Field(1.0, ge=1.0, le=1000.0)
    device_speed: DeviceSpeedConfig | None = None

    @model_validator(mode="after")
    def _one_speed(self) -> "ComputeConfig":
        if self.device_speed is not None and self.slowdown_factor != 1.0:  # 1.0: the default, or a dump re-read
            raise ValueError("device_speed: give either slowdown_factor or device_speed, not both")
        return self
    memory_cap_mb: float | None = Field(None, gt=0)  # decoded activations held at once; beyond: RESOURCE_EXHAUSTED
    max_batch: int = Field(64, ge=1)  # largest batch dim accepted on the wire


class PowerConfig(_Section):
    """Power draw in watts, for energy estimates in the breakdown (active*compute + transmit*network)."""

    idle_w: float = Field(0.0, ge=0)
    active_w: float = Field(0.0, ge=0)
    transmit_w: float = Field(0.0, ge=0)


class DeadlinesConfig(_Section):
    """Seconds. Every call carries a deadline: ``request_s`` for a whole request (the caller's deadline, if
    shorter, wins), ``connect_s`` for reaching the upstream peer, ``shutdown_grace_s`` for in-flight requests
    after SIGTERM."""

    request_s: float = Field(30.0, gt=0, le=3600)  # finite: an unbounded deadline holds a slot forever
    connect_s: float = Field(10.0, gt=0, le=600)
    shutdown_grace_s: float = Field(5.0, ge=0, le=600)
    stream_idle_s: float = Field(10.0, gt=0, le=600)  # an InferStream that sends nothing this long is ended


class QueuesConfig(_Section):
    """Bounded queues. ``compute`` requests may wait for the compute worker; beyond it requests are refused
    (RESOURCE_EXHAUSTED) or, for a local pipeline, the submitter blocks. ``inflight`` requests may be
    past the compute worker at once (on the wire upstream); ``workers`` bounds the RPCs served at once."""

    compute: int = Field(8, ge=1, le=4096)
    inflight: int = Field(4, ge=1, le=1024)
    workers: int = Field(16, ge=2, le=1024)
    streams_per_peer: int = Field(8, ge=1, le=1024)  # InferStreams one connection may hold at once


class BatchingConfig(_Section):
    """Dynamic batching, with the names and semantics of Triton's ``dynamic_batching``: requests for the same
    range (same exits, same input shapes but dim 0) are run as one batch of at most ``max_batch_size``
    samples. A full batch goes at once; a partial one waits at most ``max_queue_delay_microseconds`` from its
    oldest request's arrival. ``queues.compute`` bounds the waiting requests (Triton's ``max_queue_size``);
    beyond it requests are refused with RESOURCE_EXHAUSTED. Off: one request at a time, first come first served.
    """

    enabled: bool = False
    max_batch_size: int = Field(8, ge=1, le=4096)  # samples per batch (sum of the requests' dim 0)
    max_queue_delay_microseconds: int = Field(2000, ge=0, le=10_000_000)  # a partial batch's longest wait


class FallbackConfig(_Section):
    """What a tier does when its upstream fails (down, stalled, overloaded): finish the model itself.

    The upstream call gets the request's deadline minus a reserve for finishing here, ``safety_factor`` x this
    tier's profiled compute for the rest of the model plus ``local_margin_s``, so a stalled peer still leaves time
    to answer. Errors that are bugs (a fingerprint mismatch, an invalid request) are never papered over.

    With a latency target (``slo_ms``, default: the planner's), the source also gives the upstream up at the
    target minus the same reserve after the request started: past that the split cannot make the target and
    finishing here still can (a stalled link then costs no SLO miss). It applies only where the reserve fits in
    the target at all.

    With the live planner, the source also gives up an upstream call that has taken ``stall_factor`` x the
    request's predicted latency (at least ``stall_min_ms``): the link or a peer has stalled, SLO or not, and waiting
    out the deadline would cost seconds. The reply says so, and the planner plans without that tier until it answers
    probes again. ``stall_factor: 0`` turns this off.
    """

    enabled: bool = True
    safety_factor: float = Field(2.0, ge=1.0)  # profiles are medians of a quiet machine; x2 covers a busy one
    local_margin_s: float = Field(0.05, ge=0, le=60)  # plus decode, encode and thread hand-offs
    slo_ms: float | None = Field(None, gt=0)  # latency target per request at the source; null: planner.slo_ms
    stall_factor: float = Field(4.0, ge=0)  # x the predicted latency; 0: off
    stall_min_ms: float = Field(200.0, gt=0, le=600_000)  # never sooner: predictions of a few ms miss a cold path or a GC


class LimitsConfig(_Section):
    """Message limits, set on the server and on the upstream channel alike."""

    max_message_mb: float = Field(64.0, ge=1, le=2047)  # gRPC caps messages below 2 GiB
    max_tensors: int = Field(32, ge=1, le=4096)


class KeepaliveConfig(_Section):
    """HTTP/2 keepalive; the same numbers configure this node's server and its upstream channel, and the
    peers' files should carry the same values (the server tolerates pings down to half ``time_s``)."""

    time_s: float = Field(30.0, ge=1.0, le=86_400)  # gRPC takes milliseconds as a C int: bounded well below
    timeout_s: float = Field(10.0, ge=0.1, le=3600)
    permit_without_calls: bool = True


class PlannerConfig(_Section):
    """The device's live planner (``edgeflow.agent.live``): on when ``enabled`` or ``plan: auto``.

    The device stamps every request with the plan it goes by; edge and cloud run what the request's plan gives
    them, so only the device needs this section. Defaults follow ``edgeflow.core.planner.Replanner``.
    """

    enabled: bool = False
    objective: Literal["latency", "energy", "throughput"] = "latency"
    slo_ms: float | None = Field(None, gt=0)  # expected-latency bound (latency and energy objectives)
    max_accuracy_drop_pts: float = Field(1.0, ge=0)  # accuracy floor: points below the full model, never crossed
    privacy: bool = False  # the raw input never leaves the device
    margin: float = Field(0.10, ge=0, lt=1)  # relative gain a better plan must keep ...
    hold_s: float = Field(0.1, ge=0, le=3600)  # ... for this long (0.1, not the replanner's 0.3: a switch by the 3rd slow request) ...
    min_evaluations: int = Field(2, ge=1)  # ... and this many requests in a row
    min_interval_s: float = Field(1.0, ge=0, le=3600)  # the least time between two switches
    activation_codecs: list[str] | None = None  # codecs tried at cuts; None: every activation codec
    # codecs tried for the raw input when the device runs nothing; png/jpeg only if they take the profiled input
    input_codecs: list[str] = ["lossless"]
    exit_grid: list[float] = [0.8, 0.9, 0.95, 0.99]  # exit thresholds tried
    probe: bool = True  # probe links that carried no usable transfer for a while (Probe RPC)
    fallback_bandwidth_mbit: float = Field(100.0, gt=0)  # a link's bandwidth until it is measured
    fallback_rtt_ms: float = Field(2.0, ge=0)  # and its round trip
    down_probe_s: float = Field(0.25, gt=0, le=3600)  # a tier found down (a reply fell back) is probed this often until back
    # a call upstream out longer than suspect_factor x its request's prediction (at least suspect_min_ms) makes its
    # tier suspect: later requests are planned without it until that call ends (0: off; see agent/source.py)
    suspect_factor: float = Field(2.0, ge=0, le=1000)
    suspect_min_ms: float = Field(100.0, gt=0, le=600_000)
    idle_probe_s: float = Field(0.5, gt=0, le=3600)  # a link the current plan does not use is probed this often


class MetricsConfig(_Section):
    """Prometheus ``/metrics`` (``edgeflow.transport.metrics``): served on ``host:port`` when ``port`` is set
    (``edgeflow agent --metrics-port N`` overrides it; 0 picks a free port, printed at start)."""

    port: int | None = Field(None, ge=0, le=65535)
    host: str = "127.0.0.1"


class MemoryConfig(_Section):
    """The device's result memory (``edgeflow.agent.memory``): identical inputs answered again from a bounded LRU,
    without compute or transfer. Off by default; a device only."""

    enabled: bool = False
    max_entries: int = Field(1024, ge=1, le=1_000_000)
    max_mb: float = Field(64.0, gt=0, le=65536)
    # near-duplicate inputs answered too, within a distance calibrated on the demo's training split so that such
    # answers agree with the full model at near_agreement (edgeflow.agent.nearmemory)
    near: bool = False
    near_agreement: float = Field(0.995, ge=0.9, lt=1)


VALIDATE_MODES = ("off", "flag", "recompute-locally")


class ValidateConfig(_Section):
    """The device's check of upstream answers (``edgeflow.agent.validate``): its own exit head against the answer,
    calibrated on the demo's calibration (validation) split at start-up. ``mode``: ``off``; ``flag`` (answer, and mark
    a suspicious answer in the breakdown); ``recompute-locally`` (the device finishes the model itself for a
    flagged request, answers that, and holds the upstream suspect). ``validate: flag`` is short for ``{mode: flag}``.
    A device only."""

    mode: Literal["off", "flag", "recompute-locally"] = "off"
    false_alarm: float = Field(0.005, gt=0, lt=0.5)  # per request: honest answers flagged, on the calibration split
    drop: float = Field(0.1, gt=0, lt=1)  # running test: agreement-rate drop it looks for (H1: calibrated - drop)
    alpha: float = Field(0.001, gt=0, lt=0.5)  # running test: false-suspicion probability per decision
    beta: float = Field(0.01, gt=0, lt=0.5)  # running test: miss probability (ends a suspicion)
    calibration: Literal["demo"] = "demo"  # the held-out inputs: the demo's calibration split (never its test split)


class ChaosConfig(_Section):
    """Chaos for testing the device's ``validate`` (``edgeflow.agent.chaos``): this edge or cloud answers a well-formed
    wrong class for ``wrong_class`` of its requests (0: never, the default), chosen by request id and ``seed``;
    ``choice``: ``uniform`` (any other class) or ``runner-up`` (the most plausible one). Never in production."""

    wrong_class: float = Field(0.0, ge=0, le=1)
    choice: Literal["uniform", "runner-up"] = "uniform"
    seed: int = Field(0, ge=0, le=2**31)


class StreamsConfig(_Section):
    """Stream mode (``edgeflow.agent.streams``): frames of a stream (request parameters ``stream`` and ``frame``) are
    coded on each hop as the residual against the previous frame's reconstruction. ``key_interval``: a key frame
    (coded on its own) at least every that many frames; ``key_ratio``: also when the residual would take more than
    that share of a key frame's bytes. State is kept per stream and caller, LRU-bounded by ``max_streams`` and
    ``max_mb`` (a stream needing more than ``max_stream_mb`` is coded frame by frame). Off: every frame is coded on
    its own, and residuals sent here are refused with a resync status."""

    enabled: bool = True
    key_interval: int = Field(64, ge=1, le=100_000)
    key_ratio: float = Field(0.5, gt=0, le=1)
    max_streams: int = Field(256, ge=1, le=100_000)
    max_mb: float = Field(64.0, gt=0, le=65536)
    max_stream_mb: float = Field(16.0, gt=0, le=65536)
    # the live planner's estimates at hops a stream does not use (edgeflow.agent.streamcost): two consecutive frames
    # sampled at most every that many frames (0: off), while sampling takes at most that share of the device's time
    sample_every_frames: int = Field(8, ge=0, le=1_000_000)
    sample_budget: float = Field(0.05, gt=0, le=1)


class TracingConfig(_Section):
    """OpenTelemetry spans per request (``edgeflow.transport.tracing``); off by default. Off, an agent still passes a
    caller's trace context on upstream. ``exporter``: none (ids only), console, jsonl (``path``: one JSON line per
    span), otlp (``endpoint``; needs opentelemetry-exporter-otlp)."""

    enabled: bool = False
    exporter: Literal["none", "console", "jsonl", "otlp"] = "none"
    path: Path | None = None
    endpoint: str | None = None
    service_name: str | None = None  # default: edgeflow-<role>

    @model_validator(mode="after")
    def _path(self) -> "TracingConfig":
        if self.enabled and self.exporter == "jsonl" and self.path is None:
            raise ValueError("path: required by the jsonl exporter")
        return self


class RayConfig(_Section):
    """The cloud tier as a Ray Serve deployment (``edgeflow serve-ray``, docs/RAY.md). Autoscaling between
    ``min_replicas`` and ``max_replicas`` on ``target_ongoing_requests`` per replica; ``num_replicas`` fixes the
    count instead. Batching follows the node's ``batching`` section through ``@serve.batch``."""

    app_name: str = Field("edgeflow", pattern=r"^[A-Za-z0-9_\-]+$")
    grpc_port: int = Field(9000, ge=0, le=65535)
    num_replicas: int | None = Field(None, ge=1, le=256)
    min_replicas: int = Field(1, ge=0, le=256)
    max_replicas: int = Field(4, ge=1, le=256)
    target_ongoing_requests: float = Field(2.0, gt=0)
    max_ongoing_requests: int = Field(16, ge=1, le=4096)
    num_cpus: float = Field(1.0, gt=0)  # per replica
    exactly_once: bool = True  # a shared reply ledger across replicas (docs/RAY.md)

    @model_validator(mode="after")
    def _range(self) -> "RayConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas {self.max_replicas}")
        return self


class NodeConfig(_Section):
    """One node file. Build with :meth:`from_mapping` to get field-path errors."""

    # ``validate`` is spelled ``validate_`` in Python (BaseModel has a ``validate``); files and dumps say ``validate``
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)  # fmt: skip
    role: Literal["device", "edge", "cloud"]
    listen: ListenConfig = ListenConfig()
    upstream: UpstreamConfig | None = None
    model: ModelConfig = ModelConfig()
    compute: ComputeConfig = ComputeConfig()
    power: PowerConfig = PowerConfig()
    tls: TlsConfig | None = None  # this node's server
    auth: AuthConfig | None = None  # this node's server: require a bearer token
    plan: str  # a plan's text form, or "auto" (see PlannerConfig)
    planner: PlannerConfig = PlannerConfig()
    deadlines: DeadlinesConfig = DeadlinesConfig()
    queues: QueuesConfig = QueuesConfig()
    batching: BatchingConfig = BatchingConfig()
    fallback: FallbackConfig = FallbackConfig()
    limits: LimitsConfig = LimitsConfig()
    keepalive: KeepaliveConfig = KeepaliveConfig()
    metrics: MetricsConfig = MetricsConfig()
    tracing: TracingConfig = TracingConfig()
    ray: RayConfig = RayConfig()
    memory: MemoryConfig = MemoryConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    chaos: ChaosConfig = ChaosConfig()  # (``validate`` is a BaseModel method)
    streams: StreamsConfig = StreamsConfig()

    @field_validator("validate_", mode="before")
    @classmethod
    def _validate_short(cls, v: Any) -> Any:
        return {"mode": v} if isinstance(v, str) else v

    @field_validator("plan")
    @classmethod
    def _plan(cls, v: str) -> str:
        if v.strip() == AUTO_PLAN:
            return AUTO_PLAN
        try:
            return str(Plan.parse(v))
        except PlanError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _chain(self) -> "NodeConfig":
        if self.tls is not None and self.tls.cert is None:
            raise ValueError("tls: a server needs cert and key")
        if self.memory.enabled and self.role != "device":
            raise ValueError(f"memory: the result memory is the device's (inputs enter the chain there), not the "
                             f"{self.role}'s")  # fmt: skip
        if self.validate_.mode != "off" and self.role != "device":
            raise ValueError(f"validate: upstream answers are checked by the device (its own exit head), not the "
                             f"{self.role}")  # fmt: skip
        if self.chaos.wrong_class > 0 and self.role == "device":
            raise ValueError("chaos: wrong_class makes an edge or a cloud lie to the device below it; a device has none")
        if self.plan == AUTO_PLAN:
            return self  # any chain: the device's live planner decides, over whatever upstream there is
        plan = Plan.parse(self.plan)
        after = [t for t in plan.tiers if TIERS.index(t) > TIERS.index(self.role)]
        if after and self.upstream is None:
            raise ValueError(f"upstream: required: plan {plan} continues to {after[0]} after {self.role}")
        if not after and self.role not in plan.tiers:
            raise ValueError(f"plan: {plan} has no stage for {self.role} or after it")
        if not after and self.upstream is not None:
            raise ValueError(f"upstream: set, but plan {plan} has no tier after {self.role}")
        return self

    @property
    def auto(self) -> bool:
        """Whether this node plans live (``plan: auto`` or ``planner.enabled``)."""
        return self.plan == AUTO_PLAN or self.planner.enabled

    @property
    def parsed_plan(self) -> Plan:
        """The configured plan; for ``plan: auto`` the tier runs the whole rest of the model (``role[0:]``):
        what it does for a request that carries no plan. The device's live planner replaces it at start."""
        if self.plan == AUTO_PLAN:
            return Plan.parse(f"{self.role}[0:]")
        return Plan.parse(self.plan)

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "node config") -> "NodeConfig":
        """Validate a mapping (e.g. parsed YAML).

        Raises:
            ConfigError: one line per problem, each naming ``source`` and the field path.
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of fields, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise ConfigError("\n".join(_describe(e, source))) from None

    def with_overrides(self, **dotted: Any) -> "NodeConfig":
        """A copy with fields replaced by dotted path, re-validated: ``with_overrides(**{"upstream.address": a})``.

        Raises:
            ConfigError: the result is invalid (naming the field).
        """
        data = self.model_dump(mode="json", exclude_none=True)
        for path, value in dotted.items():
            node = data
            keys = path.split(".")
            for k in keys[:-1]:
                node = node.setdefault(k, {})
            node[keys[-1]] = value
        return NodeConfig.from_mapping(data, source="overrides")

    def resolve_paths(self, base: Path) -> "NodeConfig":
        """A copy with relative paths (artifact, TLS and token files) made relative to ``base`` (the file's folder)."""

        def fix(p: Any) -> Any:
            return str(base / p) if p and not Path(p).is_absolute() else p

        data = self.model_dump(mode="json", exclude_none=True)
        if not data["model"]["artifact"].startswith((BUILTIN_PREFIX, ZOO_PREFIX, TEXT_PREFIX)):
            data["model"]["artifact"] = fix(data["model"]["artifact"])
        up = data.get("upstream", {})
        for section in (data.get("tls"), up.get("tls"), data.get("auth"), up.get("auth")):
            if section:
                for k in ("cert", "key", "ca", "token_file"):
                    if k in section:
                        section[k] = fix(section[k])
        return NodeConfig.from_mapping(data, source=str(base))


_FIELD_NAMES = {f.alias or name for name, f in NodeConfig.model_fields.items()}


def _describe(e: ValidationError, source: str) -> list[str]:
    lines = []
    for err in e.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if msg.split(":", 1)[0] in _FIELD_NAMES and not loc:
            lines.append(f"{source}: {msg}")  # a cross-field check that names its own field
        else:
            given = err.get("input")
            secret = any(isinstance(p, str) and _SECRET_KEY.search(p) for p in err["loc"]) or "auth" in err["loc"]
            plain = err["type"] != "missing" and not isinstance(given, (dict, list)) and not secret
            shown = f" (got {given!r})" if plain else ""
            lines.append(f"{source}: {loc or '<root>'}: {msg}{shown}")
    return lines
