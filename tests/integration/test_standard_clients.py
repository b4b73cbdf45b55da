"""Health and reflection answer standard clients (grpcio-health-checking's stub, grpc reflection)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from edgeflow.transport import SERVICE_NAME


def test_health_reports_serving(cloud, edge) -> None:  # type: ignore[no-untyped-def]
    for agent in (cloud, edge):
        with grpc.insecure_channel(agent.address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", SERVICE_NAME):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=10)
            assert next(iter(watch)).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()


def test_reflection_describes_the_agent_service(cloud) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(cloud.address) as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= services
        from google.protobuf.descriptor_pool import DescriptorPool

        pool = DescriptorPool(db)
        service = pool.FindServiceByName(SERVICE_NAME)
        methods = {m.name: (m.input_type.full_name, m.output_type.full_name) for m in service.methods}
        assert methods["Infer"] == ("edgeflow.v1.InferRequest", "edgeflow.v1.InferResponse")
        assert methods["InferStream"] == ("edgeflow.v1.InferRequest", "edgeflow.v1.InferResponse")
        request = pool.FindMessageTypeByName("edgeflow.v1.InferRequest")
        assert request.fields_by_name["raw_input_contents"].number == 15
