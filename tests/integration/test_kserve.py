"""A real tritonclient.grpc client against real agents (KServe v2 / Open Inference Protocol, docs/KSERVE.md).

The whole model through the edge (and so the cloud), a range chosen by request parameters, typed contents, codec
frames on request, and bad input answered with the status the protocol prescribes, the agent serving on.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch

tg = pytest.importorskip("tritonclient.grpc", reason="the KServe tests need tritonclient[grpc] (the test extra)")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

from edgeflow.agent.endpoints import model_name  # noqa: E402
from edgeflow.core.codecs import get_codec  # noqa: E402

from edgeflow.agent.loader import builtin_artifact_path  # noqa: E402

ARTIFACT = "builtin:demo" if builtin_artifact_path("demo").exists() else "zoo:resnet18"

MODEL = model_name(ARTIFACT)


def _input(name: str, x: np.ndarray) -> "tg.InferInput":
    i = tg.InferInput(name, list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


def _expected(runtime, x: torch.Tensor) -> np.ndarray:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return runtime.model(x).numpy()


def test_the_whole_model_through_the_edge_equals_the_unsplit_model(edge, runtime, images) -> None:  # type: ignore[no-untyped-def]
    client = tg.InferenceServerClient(edge.address)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta.name == MODEL and meta.platform == "edgeflow_pytorch"
    (inp,) = meta.inputs
    assert inp.datatype == "FP32" and list(inp.shape) == [-1, 3, 64, 64]
    assert [o.name for o in meta.outputs] == ["output"]
    x = images[4].numpy()  # a batch of 3
    result = client.infer(MODEL, [_input(inp.name, x)], request_id="kserve-whole")
    out = result.as_numpy("output")
    np.testing.assert_allclose(out, _expected(runtime, images[4]), rtol=0, atol=1e-5)
    resp = result.get_response()
    assert resp.id == "kserve-whole"
    assert resp.parameters["answered_by"].string_param == "cloud"  # the edge ran its range and forwarded the rest
    assert client.get_server_metadata().name == "edgeflow"
    client.close()


def test_a_range_chosen_by_parameters_then_the_rest(cloud, runtime, images) -> None:  # type: ignore[no-untyped-def]
    client = tg.InferenceServerClient(cloud.address)
    name = runtime.cut_info(0).tensors[0].name
    cut = runtime.cuts[len(runtime.cuts) // 2]
    first = client.infer(MODEL, [_input(name, images[0].numpy())], parameters={"stop": cut})
    outputs = first.get_response().outputs
    assert first.get_response().parameters["position"].int64_param == cut
    inputs = []
    for o in outputs:  # the values live at the cut, named as the range call named them
        i = tg.InferInput(o.name, list(o.shape), o.datatype)
        i.set_data_from_numpy(first.as_numpy(o.name))
        inputs.append(i)
    rest = client.infer(MODEL, inputs, parameters={"start": cut})
    np.testing.assert_allclose(rest.as_numpy("output"), _expected(runtime, images[0]), rtol=0, atol=1e-5)
    client.close()


def test_typed_contents_and_codec_frames_on_request(cloud, runtime, images) -> None:  # type: ignore[no-untyped-def]
    name = runtime.cut_info(0).tensors[0].name
    x = images[1]
    with grpc.insecure_channel(cloud.address) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name=MODEL, id="typed")
        t = req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
        t.contents.fp32_contents.extend(x.reshape(-1).tolist())
        resp = stub.ModelInfer(req, timeout=30)
        out = np.frombuffer(resp.raw_output_contents[0], dtype=np.float32).reshape(list(resp.outputs[0].shape))
        np.testing.assert_allclose(out, _expected(runtime, x), rtol=0, atol=1e-5)
        # edgeflow's frames only when asked: an int8 payload in, codec payloads out
        req = service_pb2.ModelInferRequest(model_name=MODEL, id="framed")
        req.parameters["output_codec"].string_param = "lossless"
        t = req.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
        t.parameters["codec"].string_param = "int8"
        req.raw_input_contents.append(get_codec("int8").encode(x))
        resp = stub.ModelInfer(req, timeout=30)
        assert resp.outputs[0].parameters["codec"].string_param.startswith("lossless")
        from edgeflow.core.codecs import decode

        logits = decode(resp.raw_output_contents[0])
        assert logits.shape == (1, 10)


@pytest.mark.parametrize(
    "case, code, words",
    [
        ("unknown model", grpc.StatusCode.NOT_FOUND, ["unknown model 'nope'"]),
        ("wrong datatype", grpc.StatusCode.INVALID_ARGUMENT, ["datatype FP64", "expected FP32"]),
        ("mismatched shape", grpc.StatusCode.INVALID_ARGUMENT, ["shape [1, 3, 60, 64]"]),
        ("byte count", grpc.StatusCode.INVALID_ARGUMENT, ["1000 bytes of contents", "holds 49152"]),
        ("unsupported datatype", grpc.StatusCode.INVALID_ARGUMENT, ["datatype 'BYTES' is not supported"]),
    ],
)
def test_bad_input_gets_the_prescribed_status_naming_the_tensor(cloud, runtime, case, code, words) -> None:  # type: ignore[no-untyped-def]
    name = runtime.cut_info(0).tensors[0].name
    req = service_pb2.ModelInferRequest(model_name="nope" if case == "unknown model" else MODEL)
    shape = [1, 3, 60, 64] if case == "mismatched shape" else [1, 3, 64, 64]
    datatype = {"wrong datatype": "FP64", "unsupported datatype": "BYTES"}.get(case, "FP32")
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    itemsize = 8 if datatype == "FP64" else 4
    req.raw_input_contents.append(b"\0" * (1000 if case == "byte count" else int(np.prod(shape)) * itemsize))
    with grpc.insecure_channel(cloud.address) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=30)
        assert e.value.code() == code, e.value.details()
        for w in words:
            assert w in e.value.details()
        if case != "unknown model":
            assert repr(name) in e.value.details()  # the message names the tensor
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready  # still serving


def test_unknown_model_readiness_and_metadata_are_not_found(cloud) -> None:  # type: ignore[no-untyped-def]
    client = tg.InferenceServerClient(cloud.address)
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    with pytest.raises(InferenceServerException, match="StatusCode.NOT_FOUND"):
        client.is_model_ready("nope")
    client.close()
