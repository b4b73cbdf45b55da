"""``edgeflow run`` with the user's data: an image folder and a tensor file, checked by ``--check`` and run end to end
(real agent processes); without labels the report says fidelity is agreement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from conftest import REPO, load_report, processes_mentioning, run_cli


def _scenario(tmp_path: Path, workload: dict) -> Path:
    """A small scenario in ``tmp_path`` (the shipped node files, the demo model, two constant-rate links)."""
    data = {
        "name": "user-data",
        "nodes": {t: {"file": str(REPO / "nodes" / f"{t}.yaml")} for t in ("device", "edge", "cloud")},
        "links": {"device_edge": {"rate_mbit": 50}, "edge_cloud": {"rate_mbit": 200}},
        "model": {"artifact": "builtin:demo"},
        "workload": {"arrival": "closed", "timeout_s": 60, **workload},
        "plan": "device[0:20]|int8 > edge[20:]",
    }
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _demo_image_folder(root: Path, per_class: int = 2) -> np.ndarray:
    """``root/<label>/<i>.png``: demo test images (uint8 at heart, so PNG keeps them exactly); returns the labels."""
    from edgeflow.core.data import load_demo_dataset

    images, labels = load_demo_dataset("test")
    kept = []
    for c in range(10):
        for k, i in enumerate(np.flatnonzero(labels.numpy() == c)[:per_class]):
            (root / str(c)).mkdir(parents=True, exist_ok=True)
            rgb = (images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(rgb).save(root / str(c) / f"{k}.png")
            kept.append(c)
    return np.array(kept)


def test_check_names_the_field_of_a_file_that_does_not_fit(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 3, 32, 32), dtype=np.float32))
    proc = run_cli(str(_scenario(tmp_path, {"source": "x.npy"})), "--check", timeout_s=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "workload.source: x.npy: shape (10, 3, 32, 32) does not match the model input (3, 64, 64)" in " ".join(
        proc.stderr.split())  # rich may wrap the line


def test_check_lists_an_image_folder_without_reading_it(tmp_path: Path) -> None:
    _demo_image_folder(tmp_path / "imgs", per_class=1)
    proc = run_cli(str(_scenario(tmp_path, {"source": "imgs", "labels": "folders"})), "--check", timeout_s=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workload: imgs: 10 samples, labels from subfolder names (class indices)" in " ".join(proc.stdout.split())


def test_run_an_image_folder_end_to_end(tmp_path: Path) -> None:
    """A labelled image folder (relative to the scenario file) through real agents: accuracy against the folder
    labels, each request carrying its image's label."""
    labels = _demo_image_folder(tmp_path / "imgs")
    out = tmp_path / "report"
    proc = run_cli(str(_scenario(tmp_path, {"source": "imgs", "labels": "folders", "requests": 6})), "--out", str(out),
                   "--baselines", "cloud-only", "--no-plots", "--no-progress", timeout_s=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert summary["fidelity"]["metric"] == "accuracy" and summary["fidelity"]["labels"] == "subfolder names (class indices)"
    assert summary["full_model_accuracy"] is not None
    for m in [summary, *summary["baselines"].values()]:
        assert m["answered"] == 6 and m["lost"] == 0 and m["accuracy"] is not None and m["agreement"] is not None
    files = sorted(p.relative_to(tmp_path / "imgs").as_posix() for p in (tmp_path / "imgs").rglob("*.png"))
    for r in records:  # the label each request was scored against is its image's subfolder
        assert r["correct"] in (True, False)
        assert r["label"] == int(files[r["sample"]].split("/")[0])
    assert sorted(set(labels.tolist())) == list(range(10))
    assert "accuracy against the labels (subfolder names (class indices))" in (out / "report.md").read_text()
    assert not processes_mentioning(str(out)), "agent processes left behind"


def test_run_an_unlabelled_tensor_file_reports_agreement_and_says_so(tmp_path: Path) -> None:
    from edgeflow.core.data import photo_batch

    np.save(tmp_path / "x.npy", photo_batch(5, 64, seed=1).numpy())
    out = tmp_path / "report"
    proc = run_cli(str(_scenario(tmp_path, {"source": "x.npy", "requests": 4})), "--out", str(out), "--baselines",
                   "none", "--no-plots", "--no-progress", timeout_s=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert summary["answered"] == 4 and summary["accuracy"] is None and summary["agreement"] is not None
    assert summary["fidelity"]["metric"] == "agreement" and summary["full_model_accuracy"] is None
    report = (out / "report.md").read_text()
    assert "the workload (x.npy) has no labels, so accuracy is not measured; fidelity is top-1 agreement" in report
    assert "no labels: accuracy not measured" in " ".join(proc.stdout.split())  # the summary table's caption
    assert all(r["correct"] is None for r in records)
