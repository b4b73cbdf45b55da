"""Bearer-token auth: token loading, and the server interceptor against an in-process AgentServer."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgeflow.errors import ConfigError, RemoteError
from edgeflow.transport import SERVICE_NAME, AgentServer, Breakdown, Description, InferCall, InferReply, PeerClient
from edgeflow.transport.auth import bearer_metadata, load_token

TOKEN = "s3cret-token_0123456789abcdef"


class _Handler:
    def describe(self, caller_fingerprint: str, caller_role: str) -> Description:
        return Description("cloud", "fp", 1, [], [], "cloud[0:]")

    def infer(self, call: InferCall, deadline: float) -> InferReply:
        return InferReply(call.request_id, "fp", 1, [], Breakdown())


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    s = AgentServer(_Handler(), address="127.0.0.1:0", auth_token=TOKEN)
    s.start()
    yield s
    s.stop(0).wait(5)


def test_load_token_from_file_and_env(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text(f"  {TOKEN}\n")
    assert load_token(f) == TOKEN
    assert load_token(token_env="EF_TOKEN", environ={"EF_TOKEN": TOKEN}) == TOKEN


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({}, "exactly one of token_file or token_env"),
        ({"token_file": Path("/nonexistent/token")}, "cannot read"),
        ({"token_env": "EF_UNSET"}, "is not set"),
        ({"token_env": "EF_EMPTY"}, "token is empty"),
        ({"token_env": "EF_SPACES"}, "visible ASCII"),
    ],
)
def test_load_token_refuses_bad_sources(kwargs: dict, words: str) -> None:
    env = {"EF_EMPTY": " \n", "EF_SPACES": "two words"}
    with pytest.raises(ConfigError) as err:
        load_token(**kwargs, environ=env)
    assert words in str(err.value) and "two words" not in str(err.value)


def test_right_token_is_served(server) -> None:  # type: ignore[no-untyped-def]
    with PeerClient(server.address, token=TOKEN) as c:
        assert c.describe(timeout_s=10).role == "cloud"
        assert c.infer(InferCall("r", "fp", 0, []), timeout_s=10).request_id == "r"
        assert c.probe(timeout_s=10) >= 0


@pytest.mark.parametrize("token, words", [(None, "missing bearer token"), ("wrong", "invalid bearer token")])
def test_missing_or_bad_token_is_unauthenticated(server, token: str | None, words: str) -> None:  # type: ignore[no-untyped-def]
    with PeerClient(server.address, token=token) as c:
        for call in (lambda: c.describe(timeout_s=10), lambda: c.infer(InferCall("r", "fp", 0, []), timeout_s=10),
                     lambda: list(c.infer_stream([InferCall("r", "fp", 0, [])], timeout_s=10))):  # fmt: skip
            with pytest.raises(RemoteError) as err:
                call()
            assert err.value.code == "UNAUTHENTICATED" and words in err.value.details
            assert TOKEN not in err.value.details


def test_other_schemes_and_case(server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.address) as ch:
        describe = ch.unary_unary(f"/{SERVICE_NAME}/Describe")
        assert describe(b"", metadata=(("authorization", f"bearer {TOKEN}"),), timeout=10)  # scheme is case-blind
        with pytest.raises(grpc.RpcError) as err:
            describe(b"", metadata=(("authorization", f"Basic {TOKEN}"),), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert bearer_metadata(None) is None


def test_health_and_reflection_need_no_token(server) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert SERVICE_NAME in ProtoReflectionDescriptorDatabase(ch).get_services()
