"""gRPC status codes <-> edgeflow errors: the only place the two meet.

Server side, :func:`status_of` turns what a handler raised into a status code and message. Client side,
:func:`error_of` turns a failed call's status back into an edgeflow error, so an edge agent relays a cloud's
INVALID_ARGUMENT to the device as INVALID_ARGUMENT, and UNAVAILABLE anywhere becomes ``PeerUnavailable``.
"""

from __future__ import annotations

import grpc

from edgeflow.errors import (
    BadReply,
    CodecError,
    DeadlineExceeded,
    EdgeflowError,
    PartitionError,
    PeerUnavailable,
    PlanError,
    TransportError,
    FingerprintMismatch,
    NoUpstream,
    InvalidRequest,
    StreamRejected,
    ModelNotFound,
    Overloaded,
    RemoteError,
    RequestTooLarge,
    ShuttingDown,
)

__all__ = ["status_of", "error_of", "code_number", "code_from_number"]

# Checked in order: the first class that matches wins.
_TO_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (CodecError, grpc.StatusCode.INVALID_ARGUMENT),
    (PartitionError, grpc.StatusCode.INVALID_ARGUMENT),  # a request naming a range the model lacks
    (PlanError, grpc.StatusCode.INVALID_ARGUMENT),
    (RequestTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FingerprintMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (NoUpstream, grpc.StatusCode.FAILED_PRECONDITION),
    (StreamRejected, grpc.StatusCode.FAILED_PRECONDITION),
    (ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (ShuttingDown, grpc.StatusCode.UNAVAILABLE),
    (PeerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BadReply, grpc.StatusCode.DATA_LOSS),  # an upstream's reply failed admission (no fallback here)
    (TransportError, grpc.StatusCode.UNAVAILABLE),
)
_BY_NAME = {c.name: c for c in grpc.StatusCode}
_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a server answers for ``exc``.

    A :class:`RemoteError` (an upstream peer's answer) keeps its code, so errors relay down the chain.
    Anything not an :class:`EdgeflowError` is a bug here: INTERNAL, with the exception type named.
    """
    if isinstance(exc, RemoteError):
        return _BY_NAME.get(exc.code, grpc.StatusCode.UNKNOWN), str(exc)
    for cls, code in _TO_STATUS:
        if isinstance(exc, cls):
            return code, str(exc)
    if isinstance(exc, EdgeflowError):
        return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def error_of(code: grpc.StatusCode | None, details: str, peer: str) -> TransportError:
    """The edgeflow error for a call to ``peer`` that ended with ``code``."""
    where = f"peer {peer}: " if peer else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(f"{where}{details or 'unavailable'}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{where}{details or 'deadline exceeded'}")
    return RemoteError(code.name if code is not None else "UNKNOWN", details, peer)


def code_number(code: grpc.StatusCode) -> int:
    """The numeric status code (as carried in a stream item's ``error_code``)."""
    return int(code.value[0])


def code_from_number(number: int) -> grpc.StatusCode:
    """Inverse of :func:`code_number`; unknown numbers give UNKNOWN."""
    return _BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)
