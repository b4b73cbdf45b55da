"""The edgeflow error tree: small and flat, each error says whose fault it is.

    EdgeflowError
    ├── PartitionError     the model cannot be cut as asked (untraceable, bad cut id)
    ├── CodecError         a payload cannot be encoded/decoded (corrupt, truncated, oversized, lying)
    ├── ArtifactError      a model artifact is missing, malformed or has the wrong fingerprint
    ├── PlanError          a plan is malformed or infeasible
    ├── ConfigError        a config file is invalid (message names the field path)
    ├── ScenarioError      a scenario cannot run
    ├── RequestRejected    an agent refuses a request; the subclass says whose fault
    │   ├── InvalidRequest       the caller's: malformed, wrong dtype/shape/position, unknown codec (INVALID_ARGUMENT)
    │   ├── RequestTooLarge      the caller's: over this agent's limits (RESOURCE_EXHAUSTED)
    │   ├── FingerprintMismatch  the deployment's: peers run different models (FAILED_PRECONDITION)
    │   ├── NoUpstream           the caller's: it asked for this agent's upstream, and there is none (FAILED_PRECONDITION)
    │   ├── StreamRejected       a stream frame that cannot be decoded here: out of order, duplicated, changed, evicted (FAILED_PRECONDITION)
    │   ├── ModelNotFound        the caller's: a KServe request names another model or version (NOT_FOUND)
    │   ├── Overloaded           nobody's: the bounded queue is full, retry later (RESOURCE_EXHAUSTED)
    │   └── ShuttingDown         nobody's: the agent is draining after SIGTERM (UNAVAILABLE)
    └── TransportError     talking to a peer failed
        ├── PeerUnavailable
        ├── DeadlineExceeded
        ├── BadReply       the peer's reply failed admission (DATA_LOSS when relayed)
        └── RemoteError    the peer answered with an error status

OS and library errors are translated into these once, at the edge (transport for gRPC).
"""

from __future__ import annotations

__all__ = [
    "EdgeflowError",
    "BadReply",
    "PartitionError",
    "CodecError",
    "ArtifactError",
    "PlanError",
    "ConfigError",
    "ScenarioError",
    "TransportError",
    "PeerUnavailable",
    "DeadlineExceeded",
    "RequestRejected",
    "InvalidRequest",
    "RequestTooLarge",
    "FingerprintMismatch",
    "StreamRejected",
    "NoUpstream",
    "ModelNotFound",
    "Overloaded",
    "ShuttingDown",
    "RemoteError",
]


class EdgeflowError(Exception):
    """Base of every error edgeflow raises on purpose."""


class PartitionError(EdgeflowError):
    """The model cannot be traced or cut as requested."""


class CodecError(EdgeflowError):
    """A tensor payload cannot be encoded or decoded (the payload's fault, not the decoder's)."""


class ArtifactError(EdgeflowError):
    """A model artifact is missing, malformed, or does not match the expected fingerprint."""


class PlanError(EdgeflowError):
    """A plan is malformed, or infeasible for the model and nodes it names."""


class ConfigError(EdgeflowError):
    """A configuration file or object is invalid; the message names the field path."""


class ScenarioError(EdgeflowError):
    """A scenario cannot be run."""


class TransportError(EdgeflowError):
    """Talking to a peer agent failed."""


class PeerUnavailable(TransportError):
    """The peer cannot be reached (down, refusing, or the link is out)."""


class DeadlineExceeded(TransportError):
    """The call did not complete within its deadline."""


class BadReply(TransportError):
    """A peer's reply failed admission (another request's id or model, a position or exit the plan does not allow,
    tensors that are not what the model produces there, payloads that disagree with their declaration, oversized
    breakdowns): the peer's fault. A tier falls back from it; relayed down the chain it is DATA_LOSS."""


class RequestRejected(EdgeflowError):
    """A request this agent refuses to serve; the subclass says why."""


class InvalidRequest(RequestRejected):
    """The request is malformed or does not fit the model (the caller's fault). gRPC: INVALID_ARGUMENT."""


class RequestTooLarge(RequestRejected):
    """A message, payload or decoded tensor exceeds this agent's limits. gRPC: RESOURCE_EXHAUSTED."""


class FingerprintMismatch(RequestRejected):
    """Caller and agent serve different models. gRPC: FAILED_PRECONDITION."""


class NoUpstream(RequestRejected):
    """The request needs this agent's upstream, and it has none. gRPC: FAILED_PRECONDITION."""


class StreamRejected(RequestRejected):
    """A stream frame this agent cannot decode against the stream's state: the message names the stream and the
    frames, and ends with ``send a key frame`` when a key frame resynchronises it (``resync``). gRPC:
    FAILED_PRECONDITION."""

    def __init__(self, message: str, *, resync: bool):
        super().__init__(message)
        self.resync = resync


class Overloaded(RequestRejected):
    """The agent's bounded queue is full; retry later. gRPC: RESOURCE_EXHAUSTED."""


class ModelNotFound(RequestRejected):
    """The request names a model (or version) this agent does not serve (KServe v2). gRPC: NOT_FOUND."""


class ShuttingDown(RequestRejected):
    """The agent is draining and takes no new requests. gRPC: UNAVAILABLE."""


class RemoteError(TransportError):
    """A peer answered with an error status.

    Attributes:
        code: gRPC status name, e.g. ``"INVALID_ARGUMENT"``.
        details: the peer's message.
        peer: the peer's address.
    """

    def __init__(self, code: str, details: str, peer: str = ""):
        self.code = code
        self.details = details
        self.peer = peer
        where = f" from {peer}" if peer else ""
        super().__init__(f"{code}{where}: {details}")
