"""Text admitted at an agent (edgeflow.agent.textin): a BYTES model input tokenized with the artifact's own
tokenizer, the same answer as the tokens sent directly; bad text refused by name, the agent keeps serving."""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from pathlib import Path

import pytest
import torch

from edgeflow.agent import Agent, ModelRuntime
from edgeflow.errors import InvalidRequest, RequestTooLarge
from edgeflow.transport import InferCall, WireTensor
from edgeflow.transport.strings import BYTES, encode_strings

needs_text = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the text extra (transformers, tokenizers) is not installed: pip install 'edgeflow[text]'",
)


def _text(strings: list[str], name: str = "text", rows: int | None = None) -> WireTensor:
    return WireTensor(name, BYTES, (len(strings) if rows is None else rows,), "", encode_strings(strings))


def _call(agent: Agent, *tensors: WireTensor) -> InferCall:
    return InferCall("t", agent.fingerprint, 0, list(tensors))


def test_a_model_without_a_tokenizer_refuses_text_naming_its_inputs(runtime: ModelRuntime, make_node) -> None:  # type: ignore[no-untyped-def]
    agent = Agent(make_node("device", "device[0:]", False), runtime, profile_repeats=0)
    try:
        with pytest.raises(InvalidRequest, match=r"model input 'text' is BYTES \(text\), but this agent cannot tokenize "
                                                 r"text \(its artifact carries no tokenizer\); the model takes \['x'\]"):
            agent.infer(_call(agent, _text(["hello"])), time.monotonic() + 30)
    finally:
        agent.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from edgeflow.cli.export_cmd import load_source
    from edgeflow.core.export import export_model, save_graph_artifact
    from edgeflow.core.inputs import parse_input
    from edgeflow.core.tokenizer import tokenizer_from_folder
    from edgeflow.testing.tinybert import tiny_bert_folder

    root = tmp_path_factory.mktemp("textin")
    folder = tiny_bert_folder(root / "tiny-bert")
    ex = export_model(load_source(f"hf:{folder}"), [parse_input("input_ids:1,10:int64"), parse_input("attention_mask:1,10:int64")])
    ex.tokenizer = tokenizer_from_folder(folder, ex.inputs)
    save_graph_artifact(root / "cut.ef", ex)
    assert ex.tokenizer is not None
    ex.tokenizer = dataclasses.replace(ex.tokenizer, truncation=False)
    save_graph_artifact(root / "strict.ef", ex)
    return {"cut": root / "cut.ef", "strict": root / "strict.ef"}


def _agent(path: Path) -> Agent:
    from edgeflow.agent.loader import load_runtime
    from edgeflow.config import NodeConfig

    cfg = NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "model": {"artifact": str(path)},
                                   "compute": {"max_batch": 4}})  # fmt: skip
    return Agent(cfg, load_runtime(cfg), profile_repeats=0)


@needs_text
def test_text_is_tokenized_here_and_answers_as_its_tokens(artifacts: dict[str, Path]) -> None:
    from edgeflow.core.codecs import decode

    agent = _agent(artifacts["cut"])
    try:
        sentences = ["The device runs the first layers.", "a much longer sentence than ten tokens can hold, cut"]
        reply = agent.infer(_call(agent, _text(sentences)), time.monotonic() + 30)
        ids, mask = agent.runtime.tokenizer.encode(sentences)
        assert ids.shape == (2, 10) and int(mask[1].sum()) == 10  # truncated to max_length
        with torch.inference_mode():
            want = agent.runtime.model(ids, mask)
        got = [decode(t.payload, t.decode_limits()) for t in reply.tensors]
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    finally:
        agent.close()


@needs_text
@pytest.mark.parametrize(
    ("tensors", "error", "words"),
    [
        ([_text(["a"]), _text(["b"])], InvalidRequest, r"a text request carries one BYTES tensor \(model input 'text'\), got 2"),
        ([_text(["a"], name="prompt")], InvalidRequest, r"model input 0 is BYTES \(text\) named 'prompt', expected 'text'"),
        ([_text(["a"] * 5)], RequestTooLarge, r"model input 'text' has 5 rows, above compute.max_batch 4"),
        ([_text(["a"], rows=2)], InvalidRequest, r"model input 'text': declares 2 strings, the payload holds 1"),
        ([_text(["a", "b"], rows=0)], InvalidRequest, r"model input 'text' has shape \[0\]: no rows"),
    ],
)
def test_bad_text_is_refused_by_name(artifacts: dict[str, Path], tensors: list[WireTensor], error: type, words: str) -> None:
    agent = _agent(artifacts["cut"])
    try:
        with pytest.raises(error, match=words):
            agent.infer(_call(agent, *tensors), time.monotonic() + 30)
        agent.infer(_call(agent, _text(["still serving"])), time.monotonic() + 30)
    finally:
        agent.close()


@needs_text
def test_a_tokenizer_that_does_not_truncate_refuses_long_text(artifacts: dict[str, Path]) -> None:
    agent = _agent(artifacts["strict"])
    try:
        with pytest.raises(InvalidRequest, match=r"model input 'text': row 1 has \d+ tokens, more than the tokenizer's "
                                                 r"max_length 10 \(the artifact does not truncate\)"):
            agent.infer(_call(agent, _text(["short one", "a much longer sentence than ten tokens can hold"])),
                        time.monotonic() + 30)  # fmt: skip
    finally:
        agent.close()
