"""A sentence workload for a Hugging Face model exported with ``edgeflow export hf:DIR``: tokenized with the
artifact's own tokenizer; with ``--device-process`` the device agent process is sent the sentences and tokenizes
them itself. A tampered tokenizer fails the scenario check naming model.artifact.

Needs the text extra (transformers, tokenizers); skipped with that reason where it is absent."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, load_report, processes_mentioning, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None or importlib.util.find_spec("tokenizers") is None,
    reason="the text extra (transformers, tokenizers) is not installed: pip install 'edgeflow[text]'",
)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeflow.cli.export_cmd import load_source
    from edgeflow.core.export import export_model, save_graph_artifact
    from edgeflow.core.inputs import parse_input
    from edgeflow.core.tokenizer import tokenizer_from_folder
    from edgeflow.testing.tinybert import SENTENCES, tiny_bert_folder

    root = tmp_path_factory.mktemp("hftext")
    folder = tiny_bert_folder(root / "tiny-bert")
    exported = export_model(load_source(f"hf:{folder}"), [parse_input("input_ids:1,16:int64"),
                                                         parse_input("attention_mask:1,16:int64")])  # fmt: skip
    exported.tokenizer = tokenizer_from_folder(folder, exported.inputs)
    save_graph_artifact(root / "bert.ef", exported)
    (root / "sentences.txt").write_text("# one a line\n" + "\n".join(SENTENCES) + "\n")
    path = root / "hf-text.yaml"
    path.write_text(textwrap.dedent(f"""
        name: hf-text
        nodes:
          device: {{file: {REPO / 'nodes' / 'device.yaml'}, slowdown_factor: 2.0}}
          edge: {{file: {REPO / 'nodes' / 'edge.yaml'}}}
          cloud: {{file: {REPO / 'nodes' / 'cloud.yaml'}}}
        links:
          device_edge: {{rate_mbit: 20, delay_ms: 2}}
          edge_cloud: {{rate_mbit: 50, delay_ms: 5}}
        model: {{artifact: bert.ef}}
        workload: {{source: sentences.txt, arrival: closed, requests: 6, seed: 0, timeout_s: 30}}
        objective: latency
        accuracy_floor_pts: 0.5
        plan: auto
        baselines: [device-only]
        """))  # fmt: skip
    return path


def test_check_accepts_it_and_refuses_a_tampered_tokenizer(scenario: Path, tmp_path: Path) -> None:
    proc = run_cli(str(scenario), "--check", timeout_s=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(scenario.parent / "bert.ef"), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["edgeflow.tokenizer"] = meta["edgeflow.tokenizer"].replace('"truncation":true', '"truncation":false')
    save_file(tensors, str(tmp_path / "bert.ef"), metadata=meta)
    (tmp_path / "sentences.txt").write_text("a sentence\n")
    (tmp_path / "s.yaml").write_text(scenario.read_text())
    proc = run_cli(str(tmp_path / "s.yaml"), "--check", timeout_s=120)
    assert proc.returncode == 2, proc.stdout
    assert "model.artifact" in proc.stderr and "tampered or corrupt" in " ".join(proc.stderr.split()), proc.stderr


def test_device_process_is_sent_text_and_answers_like_the_unsplit_model(scenario: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(str(scenario), "--out", str(out), "--no-plots", "--no-progress", "--device-process", timeout_s=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    for m in [summary, *summary["baselines"].values()]:
        assert m["answered"] == 6 and m["lost"] == 0 and m["duplicated"] == 0
        assert m["accuracy"] is None and 0.99 <= m["cosine"]["min"], m.get("cosine")
    assert summary["baselines"]["device-only"]["bit_exact"] == 1.0  # text in, the unsplit model's answer out
    assert summary["planner"]["device"].startswith("agent process")
    from edgeflow.testing.tinybert import SENTENCES

    for run in ("edgeflow", "device-only"):  # the device got the text: its request's size follows the sentence's
        mine = [r for r in records if r["run"] == run]
        extra = {r["stages"][0]["bytes_in"] - len(SENTENCES[r["sample"]].encode()) for r in mine}
        assert len(mine) == 6 and len(extra) == 1, (run, extra)
    assert not processes_mentioning(str(out)), "agent processes left behind"
