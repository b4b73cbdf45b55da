"""Text in, embeddings out, across real agent processes: a Hugging Face BERT folder (made here, seeded random
weights, a WordPiece tokenizer.json built with the ``tokenizers`` library) exported with ``edgeflow export hf:DIR``
carries its tokenizer; a device agent process takes sentences (a BYTES input), tokenizes them itself, runs the
first layers and sends hidden states to a cloud agent process. Lossless, the answer equals transformers' own
model on transformers' own tokenization bit-exactly; bad text is refused by name and the chain keeps serving.

Needs the text extra (transformers, tokenizers); skipped with that reason where it is absent."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

from edgeflow.agent import AgentClient
from edgeflow.core.artifact import load_artifact
from edgeflow.core.partition import partition
from edgeflow.errors import RemoteError
from edgeflow.transport import InferCall, WireTensor
from edgeflow.transport.strings import BYTES, MAX_STRING_BYTES, encode_strings

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the text extra (transformers, tokenizers) is not installed: pip install 'edgeflow[text]'",
)
LENGTH = 16


@pytest.fixture(scope="module")
def bert(tools: Any, tmp_path_factory: Any) -> Iterator[dict[str, Any]]:
    from edgeflow.testing.tinybert import tiny_bert_folder

    root = tmp_path_factory.mktemp("hfbert")
    folder = tiny_bert_folder(root / "tiny-bert")
    out = root / "bert.ef"
    cmd = tools.edgeflow_cmd("export", f"hf:{folder}", "--input", f"input_ids:1,{LENGTH}:int64",
                             "--input", f"attention_mask:1,{LENGTH}:int64", "--out", str(out))  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=tools.env(), cwd=str(root))
    assert r.returncode == 0, r.stderr
    assert "tokenizer: tokenizer.json, fills input_ids attention_mask" in " ".join(r.stdout.split()), r.stdout
    art = load_artifact(out)
    p = partition(art.model, tuple(art.example_inputs(1).values()))
    cut = p.cuts[len(p.cuts) // 2]
    plan = f"device[0:{cut}]|lossless > cloud[{cut}:]"
    cloud = tools.AgentProcess("cloud", plan=plan, artifact=str(out))
    try:
        device = tools.AgentProcess("device", upstream=cloud.address, plan=plan, artifact=str(out))
    except BaseException:
        cloud.stop()
        raise
    try:
        yield {"folder": folder, "artifact": out, "cut": cut, "device": device}
    finally:
        assert device.stop() == 0, device.log
        assert cloud.stop() == 0, cloud.log


def _reference(folder: Path, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' model on transformers' tokenization of the same folder: the unsplit model."""
    import transformers

    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="[PAD]")
    enc = tok(sentences, padding="max_length", truncation=True, max_length=LENGTH, return_tensors="pt")
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    for t in [*model.parameters(), *model.buffers()]:
        t.data = t.data.clone()  # aligned copies, as an agent's (see edgeflow.cli.export_cmd.load_source)
    with torch.no_grad():
        hidden, pooled = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], return_dict=False)
    return hidden, pooled


def test_device_process_tokenizes_text_and_matches_the_unsplit_model(bert: dict[str, Any]) -> None:
    from edgeflow.testing.tinybert import SENTENCES

    sentences = list(SENTENCES)
    with AgentClient(bert["device"].address) as client:
        for i in range(2):  # one sentence per request (the reference at the same batch: a GEMM's rounding may
            hidden, pooled = _reference(bert["folder"], sentences[i : i + 1])  # differ with the batch size)
            r = client.infer([sentences[i]], timeout_s=60)
            assert r.answered_by == "cloud" and not r.breakdown.fallback
            assert torch.equal(r.output[0], hidden) and torch.equal(r.output[1], pooled)
        hidden, pooled = _reference(bert["folder"], sentences)
        r = client.infer(sentences, timeout_s=60)  # a batch, one row each
        assert torch.equal(r.output[0], hidden) and torch.equal(r.output[1], pooled)
        tiers = {t.tier: t for t in r.breakdown.tiers}
        # the device ran the embeddings and the first layers: what left it are the values at the cut
        assert (tiers["device"].start, tiers["device"].stop) == (0, bert["cut"]) and tiers["cloud"].start == bert["cut"]


def _text_call(client: AgentClient, payload: bytes, rows: int, name: str = "text") -> InferCall:
    d = client.describe()
    return InferCall("bad-text", d.fingerprint, 0, [WireTensor(name, BYTES, (rows,), "", payload)])


@pytest.mark.parametrize(
    ("payload", "rows", "words"),
    [
        (encode_strings(["ok", "two"]), 3, r"model input 'text': declares 3 strings, the payload holds 2"),
        (encode_strings(["ok", "two"]), 1, r"model input 'text': declares 1 strings, the payload holds more"),
        (b"\x03\x00\x00\x00a\xffb", 1, r"model input 'text': row 0 is not UTF-8"),
        (encode_strings(["x" * (MAX_STRING_BYTES + 1)]), 1, rf"model input 'text': row 0 is {MAX_STRING_BYTES + 1} bytes long"),
        (b"\x09\x00\x00\x00abc", 1, r"model input 'text': row 0 declares 9 bytes, 3 are left"),
    ],
)
def test_bad_text_is_refused_by_name_and_the_device_keeps_serving(bert: dict[str, Any], payload: bytes, rows: int,
                                                                   words: str) -> None:  # fmt: skip
    with AgentClient(bert["device"].address) as client:
        with pytest.raises(RemoteError, match="INVALID_ARGUMENT.*" + words):
            client.peer.infer(_text_call(client, payload, rows), timeout_s=60)
        with pytest.raises(RemoteError, match=r"INVALID_ARGUMENT.*BYTES \(text\) named 'prompt', expected 'text'"):
            client.peer.infer(_text_call(client, encode_strings(["a"]), 1, name="prompt"), timeout_s=60)
        hidden, _ = _reference(bert["folder"], ["still serving"])
        assert torch.equal(client.infer(["still serving"], timeout_s=60).output[0], hidden)


def test_edgeflow_infer_sends_a_sentence_file_as_text(bert: dict[str, Any], tools: Any, tmp_path: Path) -> None:
    import json

    (tmp_path / "s.txt").write_text("# two sentences\nText never leaves the device.\nThe cloud runs the rest.\n")
    cmd = tools.edgeflow_cmd("infer", "--via", bert["device"].address, "--input", str(tmp_path / "s.txt"), "--json")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=tools.env(), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["output_shape"] == [2, LENGTH, 16] and data["answered_by"] == "cloud"
    assert [t["tier"] for t in data["tiers"]] == ["device", "cloud"] and data["tiers"][1]["start"] == bert["cut"]
