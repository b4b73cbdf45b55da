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


def test_stubs_load_on_protobuf_6_and_7() -> None:
    """The gencode version in the stubs is at most 6.30.0: protobuf 6.30+ (tritonclient's) and 7 both load it."""
    import re

    text = (GEN_DIR / "agent_pb2.py").read_text()
    m = re.search(r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", text)
    assert m, "no runtime version check in agent_pb2.py"
    assert tuple(int(g) for g in m.groups()) <= (6, 30, 0), m.groups()
    grpc_text = (GEN_DIR / "agent_pb2_grpc.py").read_text()
    generated = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_text)
    assert generated and tuple(map(int, generated.group(1).split("."))) <= (1, 72, 2)


def test_kserve_messages_match_tritonclients_field_for_field() -> None:
    """Wire compatibility with a real KServe client: every message and field of ours has tritonclient's name and
    number (tritonclient's copy lives in protobuf's default pool, ours in a private one: both load in one process)."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="needs tritonclient[grpc] (test extra)")
    from edgeflow.transport import kserve_pb

    def fields(desc):  # type: ignore[no-untyped-def]
        out = {f.name: (f.number, f.type, f.is_repeated) for f in desc.fields}
        for nested in desc.nested_types:
            if not nested.GetOptions().map_entry:
                out.update({f"{nested.name}.{k}": v for k, v in fields(nested).items()})
        return out

    ours = kserve_pb.POOL.FindFileByName("grpc_predict_v2.proto")
    assert set(ours.services_by_name) == {"GRPCInferenceService"}
    theirs_service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in ours.services_by_name["GRPCInferenceService"].methods:
        t = theirs_service.methods_by_name[method.name]
        assert (method.input_type.name, method.output_type.name) == (t.input_type.name, t.output_type.name)
    for name, desc in ours.message_types_by_name.items():
        theirs = fields(service_pb2.DESCRIPTOR.message_types_by_name[name])
        for field, spec in fields(desc).items():
            assert theirs.get(field) == spec, f"{name}.{field}: ours {spec}, tritonclient's {theirs.get(field)}"
