"""The committed stubs in edgeflow/transport/_gen must match proto/ (regenerated into a temp dir)."""

from __future__ import annotations

import pytest

pytest.importorskip("grpc_tools")

from edgeflow.transport.gen import GEN_DIR, PROTO_DIR, stale_files  # noqa: E402


def test_generated_stubs_are_up_to_date() -> None:
    assert list(PROTO_DIR.glob("*.proto")), f"no .proto files in {PROTO_DIR}"
    stale = stale_files(GEN_DIR)
    assert not stale, f"stale stubs {stale}: run `python -m edgeflow.transport.gen`"


def test_generated_service_matches_the_server() -> None:
    from edgeflow.transport import SERVICE_NAME
    from edgeflow.transport._gen import agent_pb2, agent_pb2_grpc

    service = agent_pb2.DESCRIPTOR.services_by_name["Agent"]
    assert service.full_name == SERVICE_NAME == "edgeflow.v1.Agent"
    assert {m.name for m in service.methods} == {"Describe", "Infer", "InferStream", "Probe"}
    assert hasattr(agent_pb2_grpc, "AgentStub")
