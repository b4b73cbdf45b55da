"""OpenTelemetry spans per request, with the W3C trace context carried in gRPC metadata (``traceparent``).

An agent with tracing on opens a server span for every request it serves (a child of the caller's span when the
call carries ``traceparent``); the call it makes upstream from that thread carries the span's context on, so one
request's spans across device, edge and cloud share one trace id. An agent with tracing off records nothing but
still passes a caller's ``traceparent`` on upstream, so a chain with a traced device and untraced middle tiers
keeps one trace. Exporters (off by default): ``none`` (spans kept for their ids only), ``console``, ``jsonl``
(one JSON object per span appended to a file: what the scenario report links), ``otlp``
(needs ``opentelemetry-exporter-otlp``).

    tracer = Tracer.create("edge", exporter="jsonl", path=Path("spans.jsonl"))
    with tracer.server_span("Infer", metadata, {"edgeflow.request_id": rid}):
        ...   # PeerClient calls made here carry the trace context
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterator, Mapping, Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from edgeflow.errors import ConfigError

__all__ = ["Tracer", "EXPORTERS", "outgoing_metadata", "current_trace_id", "JsonlSpanExporter"]

EXPORTERS = ("none", "console", "jsonl", "otlp")
_PROPAGATOR = TraceContextTextMapPropagator()
_HEADER = "traceparent"


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata (empty without a valid current span)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return ()
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return tuple(carrier.items())


def current_trace_id() -> str:
    """The current span's trace id in hex (``""`` without one)."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


class Tracer:
    """An agent's tracer; :meth:`disabled` passes contexts on and records nothing.

    Build with :meth:`create` (tracing on) or :meth:`disabled`.
    """

    def __init__(self, tracer: Any | None, provider: Any | None = None):
        self._tracer = tracer
        self._provider = provider

    @classmethod
    def disabled(cls) -> "Tracer":
        return cls(None)

    @classmethod
    def create(cls, service_name: str, *, exporter: str = "none", path: Path | None = None,
               endpoint: str | None = None) -> "Tracer":  # fmt: skip
        """A tracer with its own SDK provider (not the process-global one), exporting to ``exporter``.

        Raises:
            ConfigError: unknown exporter, ``jsonl`` without a path, or ``otlp`` without its package.
        """
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        elif exporter == "jsonl":
            if path is None:
                raise ConfigError("tracing.path: the jsonl exporter needs a file path")
            provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
        elif exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            except ImportError:
                raise ConfigError("tracing.exporter: otlp needs `pip install opentelemetry-exporter-otlp`") from None
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()))
        elif exporter != "none":
            raise ConfigError(f"tracing.exporter: {exporter!r} is not one of {', '.join(EXPORTERS)}")
        return cls(provider.get_tracer("edgeflow"), provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def server_span(self, name: str, metadata: Sequence[tuple[str, Any]] | None,
                    attributes: Mapping[str, Any] | None = None) -> ContextManager[None]:  # fmt: skip
        """Serve a call inside a span (child of the caller's ``traceparent``); disabled: only pass the context on."""
        carrier = {k: v for k, v in (metadata or ()) if k == _HEADER and isinstance(v, str)}
        if self._tracer is None:
            return _attached(_PROPAGATOR.extract(carrier)) if carrier else nullcontext()
        return self._span(name, carrier, attributes)

    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> ContextManager[None]:
        """A span in the current context (a root span without one); disabled: nothing."""
        if self._tracer is None:
            return nullcontext()
        return self._span(name, None, attributes, kind=trace.SpanKind.CLIENT)

    @contextmanager
    def _span(self, name: str, carrier: dict[str, str] | None, attributes: Mapping[str, Any] | None,
              kind: Any = trace.SpanKind.SERVER) -> Iterator[None]:  # fmt: skip
        assert self._tracer is not None
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        with self._tracer.start_as_current_span(name, context=parent, kind=kind, attributes=dict(attributes or {})):
            yield

    def close(self) -> None:
        """Flush and stop the exporter."""
        if self._provider is not None:
            self._provider.shutdown()


@contextmanager
def _attached(ctx: Any) -> Iterator[None]:
    token = otel_context.attach(ctx)
    try:
        yield
    finally:
        otel_context.detach(token)


class JsonlSpanExporter:
    """Appends one JSON object per finished span to a file: ``trace_id``, ``span_id``, ``parent_span_id``, ``name``,
    ``service``, ``start_ns``, ``end_ns``, ``attributes``, ``status``. Several processes may append to one file
    (each line is one ``write``)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        lines = []
        for s in spans:
            ctx, parent = s.get_span_context(), s.parent
            lines.append(json.dumps({
                "trace_id": format(ctx.trace_id, "032x"),
                "span_id": format(ctx.span_id, "016x"),
                "parent_span_id": format(parent.span_id, "016x") if parent is not None else "",
                "name": s.name,
                "service": s.resource.attributes.get("service.name", ""),
                "start_ns": s.start_time,
                "end_ns": s.end_time,
                "attributes": dict(s.attributes or {}),
                "status": s.status.status_code.name,
            }, separators=(",", ":")))  # fmt: skip
        with self._lock, open(self.path, "a") as f:
            f.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
