"""Bearer-token authentication between agents: a shared secret checked by a server interceptor.

The server refuses every call to ``edgeflow.v1.Agent`` that lacks ``authorization: Bearer <token>``
metadata with UNAUTHENTICATED, before the request reaches a worker thread; the standard health service
and server reflection stay open, so probes and ``grpcurl list`` work without the secret. Tokens are compared
with :func:`hmac.compare_digest` (time independent of where they differ).

The client sends the token as per-call metadata, not as gRPC call credentials: gRPC refuses call credentials
on plaintext channels (other than its ``local_channel_credentials``), and the same code path must serve a TLS
chain and a plaintext chain on one host; per-call metadata also skips the credential plugin's extra thread hop.
Over plaintext the token crosses the wire in the clear, so use TLS (``tls``/``upstream.tls``) wherever the
network is not trusted. A token is authentication only: it does not identify which peer called (mTLS does).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path
from typing import Callable, Mapping

import grpc

from edgeflow.errors import ConfigError

__all__ = ["OPEN_SERVICES", "load_token", "bearer_metadata", "TokenInterceptor"]

# Services reachable without a token: liveness probes and tooling must not need the secret.
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
_MAX_TOKEN_CHARS = 4096
_SCHEME = "bearer "


def load_token(
    token_file: Path | None = None, token_env: str | None = None, *, environ: Mapping[str, str] | None = None
) -> str:
    """Read a token from a file (surrounding whitespace stripped) or an environment variable.

    Args:
        token_file: a file holding the token.
        token_env: the name of an environment variable holding it (exactly one of the two).
        environ: the environment to read (default ``os.environ``).

    Raises:
        ConfigError: no source or both, unreadable file, unset variable, or an empty or unusable token
            (gRPC metadata allows visible ASCII only). The message never contains the token.
    """
    if (token_file is None) == (token_env is None):
        raise ConfigError("auth: set exactly one of token_file or token_env")
    if token_file is not None:
        where = f"auth.token_file {token_file}"
        try:
            token = Path(token_file).read_text(encoding="ascii").strip()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{where}: not ASCII; a token is visible ASCII characters only") from None
    else:
        where = f"auth.token_env ${token_env}"
        value = (os.environ if environ is None else environ).get(str(token_env))
        if value is None:
            raise ConfigError(f"{where}: the environment variable is not set")
        token = value.strip()
    if not token:
        raise ConfigError(f"{where}: the token is empty")
    if len(token) > _MAX_TOKEN_CHARS or not all(33 <= ord(c) < 127 for c in token):
        raise ConfigError(f"{where}: a token is 1..{_MAX_TOKEN_CHARS} visible ASCII characters (no spaces)")
    return token


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...] | None:
    """The call metadata that carries ``token`` (``None`` without one)."""
    return (("authorization", f"Bearer {token}"),) if token else None


def _presented(metadata: object) -> str | None:
    """The bearer token in ``metadata``, or None when there is no ``authorization`` entry."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "authorization":
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            return text[len(_SCHEME) :].strip() if text[: len(_SCHEME)].lower() == _SCHEME else ""
    return None


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED without reading the request."""

    def abort(_request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    make: Callable[..., grpc.RpcMethodHandler]
    if handler.request_streaming and handler.response_streaming:
        make = grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        make = grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        make = grpc.unary_stream_rpc_method_handler
    else:
        make = grpc.unary_unary_rpc_method_handler
    return make(abort)  # no deserializer: the request bytes are never parsed


class TokenInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every method outside :data:`OPEN_SERVICES`.

    Args:
        token: the shared secret.
    """

    def __init__(self, token: str):
        if not token:
            raise ConfigError("auth: empty token")
        self._token = token.encode("ascii")

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        handler = continuation(handler_call_details)
        if handler is None or method.lstrip("/").split("/", 1)[0] in OPEN_SERVICES:
            return handler  # unknown methods stay UNIMPLEMENTED; open services need no token
        presented = _presented(handler_call_details.invocation_metadata)
        if presented is None:
            return _refusal(handler, f"{method}: missing bearer token: send 'authorization: Bearer <token>' "
                                     f"metadata (upstream.auth in the caller's node file)")  # fmt: skip
        if not hmac.compare_digest(presented.encode("latin-1", "replace"), self._token):
            return _refusal(handler, f"{method}: invalid bearer token (compare upstream.auth.token_file with this "
                                     f"agent's auth.token_file)")  # fmt: skip
        return handler
