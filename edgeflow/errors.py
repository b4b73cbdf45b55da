"""The edgeflow error tree: small and flat, each error says whose fault it is.

    EdgeflowError
    ├── PartitionError     the model cannot be cut as asked (untraceable, bad cut id)
    ├── CodecError         a payload cannot be encoded/decoded (corrupt, truncated, oversized, lying)
    ├── ArtifactError      a model artifact is missing, malformed or has the wrong fingerprint
    ├── PlanError          a plan is malformed or infeasible
    ├── ConfigError        a config file is invalid (message names the field path)
    ├── ScenarioError      a scenario cannot run
    └── TransportError     talking to a peer failed
        ├── PeerUnavailable
        └── DeadlineExceeded

OS and library errors are translated into these once, at the edge (transport for gRPC).
"""

from __future__ import annotations

__all__ = [
    "EdgeflowError",
    "PartitionError",
    "CodecError",
    "ArtifactError",
    "PlanError",
    "ConfigError",
    "ScenarioError",
    "TransportError",
    "PeerUnavailable",
    "DeadlineExceeded",
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
