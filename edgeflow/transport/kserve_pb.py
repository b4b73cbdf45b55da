"""The KServe v2 messages (``proto/kserve/grpc_predict_v2.proto``, package ``inference``) as protobuf classes.

They live in a private :class:`~google.protobuf.descriptor_pool.DescriptorPool`, built from the generated descriptor
set (``_gen/kserve_v2_descriptor.py``), not in protobuf's default pool: tritonclient registers its own copy of
``inference.*`` there, and two files defining one message name in one pool cannot both load. Message names never
travel on the wire (field numbers and the rpc path do), so a client built on either copy talks to the other.

    req = ModelInferRequest.FromString(data)
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from edgeflow.transport._gen.kserve_v2_descriptor import FILE_DESCRIPTOR_SET

__all__ = [
    "KSERVE_SERVICE",
    "KSERVE_METHODS",
    "ServerLiveRequest",
    "ServerLiveResponse",
    "ServerReadyRequest",
    "ServerReadyResponse",
    "ModelReadyRequest",
    "ModelReadyResponse",
    "ServerMetadataRequest",
    "ServerMetadataResponse",
    "ModelMetadataRequest",
    "ModelMetadataResponse",
    "ModelInferRequest",
    "ModelInferResponse",
    "InferParameter",
    "InferTensorContents",
]

POOL = descriptor_pool.DescriptorPool()
for _file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
    POOL.Add(_file)

_SERVICE = POOL.FindServiceByName("inference.GRPCInferenceService")
KSERVE_SERVICE: str = _SERVICE.full_name  # "inference.GRPCInferenceService"
KSERVE_METHODS: tuple[str, ...] = tuple(m.name for m in _SERVICE.methods)


def _cls(name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"inference.{name}"))


ServerLiveRequest = _cls("ServerLiveRequest")
ServerLiveResponse = _cls("ServerLiveResponse")
ServerReadyRequest = _cls("ServerReadyRequest")
ServerReadyResponse = _cls("ServerReadyResponse")
ModelReadyRequest = _cls("ModelReadyRequest")
ModelReadyResponse = _cls("ModelReadyResponse")
ServerMetadataRequest = _cls("ServerMetadataRequest")
ServerMetadataResponse = _cls("ServerMetadataResponse")
ModelMetadataRequest = _cls("ModelMetadataRequest")
ModelMetadataResponse = _cls("ModelMetadataResponse")
ModelInferRequest = _cls("ModelInferRequest")
ModelInferResponse = _cls("ModelInferResponse")
InferParameter = _cls("InferParameter")
InferTensorContents = _cls("InferTensorContents")
