"""A user's own models, exported with ``edgeflow export``, served by real device and cloud agent processes.

The models live in ``user_models.py`` (a test module edgeflow knows nothing of); the agents load only the
exported artifact. Lossless splits must reproduce the unsplit model bit-exactly, for a one-input image model
and a two-input text model with int64 token ids and mask; a request whose inputs do not match the
artifact's input spec is refused with INVALID_ARGUMENT naming the input, and the agent keeps serving.
"""

from __future__ import annotations

import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from user_models import small_net, text_batch, tiny_encoder

from edgeflow.agent import AgentClient
from edgeflow.core.artifact import load_artifact
from edgeflow.core.partition import partition
from edgeflow.core.codecs import get_codec
from edgeflow.errors import RemoteError
from edgeflow.transport import InferCall, WireTensor

HERE = Path(__file__).resolve().parent
MODELS = {
    "image": ("small_net", ["--input-shape", "1,3,16,16"]),
    "text": ("tiny_encoder", ["--input", "input_ids:1,8:int64", "--input", "attention_mask:1,8:int64"]),
}


def _export(tools: Any, out: Path, factory: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    cmd = tools.edgeflow_cmd("export", f"{HERE / 'user_models.py'}:{factory}", *args, "--out", str(out))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tools.env(), cwd=str(out.parent))


@contextmanager
def _serve(kind: str, tools: Any, tmp_path_factory: Any) -> Iterator[tuple[str, Path, Any]]:
    """(kind, artifact, AgentClient of the device agent) with device -> cloud split mid-model, lossless."""
    factory, args = MODELS[kind]
    out = tmp_path_factory.mktemp(kind) / f"{kind}.ef"
    r = _export(tools, out, factory, args)
    assert r.returncode == 0, r.stderr
    assert "fingerprint:" in r.stdout and "batch dim dynamic" in r.stdout, r.stdout
    art = load_artifact(out)
    p = partition(art.model, tuple(art.example_inputs(1).values()))
    cut = p.cuts[len(p.cuts) // 2]
    plan = f"device[0:{cut}]|lossless > cloud[{cut}:]"
    cloud = tools.AgentProcess("cloud", plan=plan, artifact=str(out))
    try:
        device = tools.AgentProcess("device", upstream=cloud.address, plan=plan, artifact=str(out))
        try:
            with AgentClient(device.address) as client:
                yield kind, out, client
        finally:
            assert device.stop() == 0, device.log
    finally:
        assert cloud.stop() == 0, cloud.log


@pytest.fixture(scope="module")
def served_image(tools: Any, tmp_path_factory: Any) -> Iterator[tuple[str, Path, Any]]:
    with _serve("image", tools, tmp_path_factory) as s:
        yield s


@pytest.fixture(scope="module")
def served_text(tools: Any, tmp_path_factory: Any) -> Iterator[tuple[str, Path, Any]]:
    with _serve("text", tools, tmp_path_factory) as s:
        yield s


def _inputs(kind: str, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    if kind == "image":
        return (torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed)),)
    return text_batch(batch, seed)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_split_across_processes_is_bit_exact_with_the_unsplit_model(kind: str, request: Any) -> None:
    _, _, client = request.getfixturevalue(f"served_{kind}")
    model = small_net() if kind == "image" else tiny_encoder()  # built here, as the user has it
    d = client.describe()
    want_inputs = [("image", "FP32")] if kind == "image" else [("input_ids", "INT64"), ("attention_mask", "INT64")]
    assert [(n, dt) for n, dt, _ in d.inputs] == want_inputs
    for seed, batch in enumerate((1, 3, 2)):
        x = _inputs(kind, batch, seed)
        with torch.no_grad():
            want = model(*x)
        result = client.infer(x, timeout_s=60)
        assert result.answered_by == "cloud" and not result.breakdown.fallback
        assert [t.tier for t in result.breakdown.tiers] == ["device", "cloud"]
        assert result.breakdown.tiers[0].stop > 0, "the device ran the first slice"
        assert isinstance(result.output, torch.Tensor)
        assert result.output.dtype == want.dtype and torch.equal(result.output, want), (kind, batch)


def _call(client: Any, tensors: list[tuple[str, torch.Tensor]]) -> InferCall:
    codec = get_codec("lossless")
    wire = [WireTensor(name, {torch.int64: "INT64", torch.float32: "FP32"}[v.dtype], tuple(v.shape), "lossless",
                       codec.encode(v)) for name, v in tensors]  # fmt: skip
    return InferCall("wrong-input", client.describe().fingerprint, 0, wire)


def test_requests_that_do_not_match_the_input_spec_are_refused_naming_the_input(served_text: tuple[str, Path, Any]) -> None:
    _, _, client = served_text
    ids, mask = text_batch(2)
    cases = [
        ([("input_ids", ids)], "missing ['attention_mask']"),
        ([("input_ids", ids), ("attention_mask", mask.float())], "model input 'attention_mask' has datatype FP32, expected INT64"),
        ([("input_ids", ids), ("mask", mask)], "is named 'mask', expected 'attention_mask'"),
        ([("input_ids", ids), ("attention_mask", mask[:, :5])], "model input 'attention_mask' has shape [2, 5], expected [B, 8]"),
        ([("input_ids", ids.float()), ("attention_mask", mask)], "model input 'input_ids' has datatype FP32"),
    ]
    for tensors, words in cases:
        with pytest.raises(RemoteError) as e:
            client.peer.infer(_call(client, tensors), timeout_s=30)
        assert e.value.code == "INVALID_ARGUMENT" and words in e.value.details, (words, e.value.details)
    result = client.infer((ids, mask), timeout_s=60)  # still serving
    with torch.no_grad():
        assert torch.equal(result.output, tiny_encoder()(ids, mask))


def test_an_agent_refuses_a_tampered_exported_artifact(served_image: tuple[str, Path, Any], tools: Any, tmp_path: Path) -> None:
    _, artifact, _ = served_image  # one process start is enough; unit tests cover each way of tampering
    data = bytearray(artifact.read_bytes())
    data[-3] ^= 0x01  # a weight's last bytes
    bad = tmp_path / "tampered.ef"
    bad.write_bytes(bytes(data))
    r = subprocess.run(tools.edgeflow_cmd("agent", "--node", str(tools.NODES / "cloud.yaml"), "--port", "0",
                                          "--plan", "cloud[0:]", "--artifact", str(bad)),
                       capture_output=True, text=True, timeout=120, env=tools.env())  # fmt: skip
    err = " ".join(r.stderr.split())
    assert r.returncode != 0 and "tampered or corrupt" in err and "Traceback" not in r.stderr, r.stderr


def test_infer_cli_sends_a_file_of_named_inputs(served_text: tuple[str, Path, Any], tools: Any, tmp_path: Path) -> None:
    import json

    from safetensors.torch import save_file

    _, _, client = served_text
    ids, mask = text_batch(3, seed=9)
    save_file({"input_ids": ids, "attention_mask": mask}, str(tmp_path / "in.safetensors"))
    save_file({"input_ids": ids}, str(tmp_path / "short.safetensors"))
    address = client.peer.address

    def infer(name: str) -> subprocess.CompletedProcess[str]:
        cmd = tools.edgeflow_cmd("infer", "--via", address, "--input", str(tmp_path / name), "--json")
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=tools.env())

    r = infer("in.safetensors")
    assert r.returncode == 0, r.stderr
    with torch.no_grad():
        want = tiny_encoder()(ids, mask)
    data = json.loads(r.stdout)
    assert data["output_shape"] == [3, 4] and data["prediction"] == want.argmax(-1).tolist()
    r = infer("short.safetensors")
    err = " ".join(r.stderr.split())
    assert r.returncode == 2 and "missing ['attention_mask']" in err, r.stderr
