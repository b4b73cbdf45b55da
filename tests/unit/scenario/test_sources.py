"""Workload sources beyond the demo: image folders, .npy and .safetensors files, synthetic inputs for any input
spec; each checked against the model's inputs with the field named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from edgeflow.errors import ConfigError, ScenarioError
from edgeflow.scenario import sources
from edgeflow.scenario.schema import Scenario, WorkloadSpec
from edgeflow.scenario.sources import ExpectedInput, check_inputs
from edgeflow.scenario.workload import build_workload, check_workload

IMAGE = (1, 3, 32, 32)  # a float image model's batch-1 input shape


def _png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def _solid(h: int, w: int, value: int) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def _folder(root: Path, classes: dict[str, int], per_class: int = 3) -> None:
    """``root/<class>/<i>.png``, each image a solid grey of (class value + i): its pixels say which file it is."""
    for name, value in classes.items():
        for i in range(per_class):
            _png(root / name / f"{i}.png", _solid(20 + 7 * i, 30, value + i))


# ------------------------------------------------------------------------------------------------ image folders
def test_image_folder_with_class_index_subfolders(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs", {"0": 10, "1": 100, "7": 200})
    w = build_workload(WorkloadSpec(source="imgs", labels="folders", requests=20, seed=3), IMAGE, base_dir=tmp_path)
    assert w.inputs.shape == (20, 3, 32, 32) and w.inputs.dtype == torch.float32
    assert w.labels is not None and set(w.labels.tolist()) <= {0, 1, 7}
    assert w.labels_from == "subfolder names (class indices)"
    for x, y in zip(w.inputs, w.labels):  # each input is the solid image of its class: value in [class, class + 2]
        value = round(float(x.mean()) * 255)
        base = {0: 10, 1: 100, 7: 200}[int(y)]
        assert base <= value <= base + 2 and float(x.max()) == float(x.min())
    assert sorted(set(w.sample_index.tolist())) == list(range(9))  # 20 requests cycle over all 9 images


def test_image_folder_with_named_subfolders_sorts_them(tmp_path: Path) -> None:
    _folder(tmp_path / "imgs", {"dogs": 100, "cats": 10}, per_class=2)
    w = build_workload(WorkloadSpec(source="imgs", labels="folders", requests=4), IMAGE, base_dir=tmp_path)
    assert w.labels_from == "subfolder names, sorted (cats=0, dogs=1)"
    for x, y in zip(w.inputs, w.labels):  # cats (10..11) are class 0, dogs (100..101) class 1
        assert (round(float(x.mean()) * 255) >= 100) == bool(y)


def test_image_folder_with_a_labels_file(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "a.png", _solid(32, 32, 10))
    _png(tmp_path / "imgs" / "sub" / "b.jpg", _solid(32, 32, 200))
    (tmp_path / "labels.txt").write_text("# path label\na.png 4\nsub/b.jpg 9\n")
    w = build_workload(WorkloadSpec(source="imgs", labels="labels.txt", requests=2), IMAGE, base_dir=tmp_path)
    assert w.labels_from == "labels.txt"
    by_label = {int(y): float(x.mean()) for x, y in zip(w.inputs, w.labels)}
    assert by_label[4] < 0.1 < 0.7 < by_label[9]
    (tmp_path / "labels.txt").write_text("a.png 4\n")
    with pytest.raises(ScenarioError, match=r"workload\.labels: labels\.txt: no label for sub/b\.jpg"):
        build_workload(WorkloadSpec(source="imgs", labels="labels.txt", requests=2), IMAGE, base_dir=tmp_path)
    (tmp_path / "labels.txt").write_text("a.png four\n")
    with pytest.raises(ScenarioError, match=r"workload\.labels: labels\.txt: line 1: expected '<image path> <class index>'"):
        build_workload(WorkloadSpec(source="imgs", labels="labels.txt", requests=2), IMAGE, base_dir=tmp_path)


def test_images_are_scaled_to_cover_then_center_cropped(tmp_path: Path) -> None:
    """A 32x96 image (H x W) for a 32x32 model: no scaling, the middle third kept (red), the sides (green) cut."""
    rgb = np.zeros((32, 96, 3), dtype=np.uint8)
    rgb[:, :32, 1] = rgb[:, 64:, 1] = 255
    rgb[:, 32:64, 0] = 255
    _png(tmp_path / "imgs" / "wide.png", rgb)
    big = np.repeat(np.repeat(rgb, 4, axis=0), 4, axis=1)  # the same at 128x384: scaled down 4x, then cropped
    _png(tmp_path / "imgs" / "wide_big.png", big)
    w = build_workload(WorkloadSpec(source="imgs", requests=2), IMAGE, base_dir=tmp_path)
    for x in w.inputs:  # (the downscaled one blurs its border columns a little)
        assert torch.allclose(x[0, :, 2:-2], torch.ones(32, 28), atol=0.02) and float(x[1, :, 2:-2].max()) < 0.02
    assert w.labels is None and w.labels_from is None


def test_normalize_and_grey_models(tmp_path: Path) -> None:
    _png(tmp_path / "imgs" / "a.png", _solid(16, 16, 255))
    spec = WorkloadSpec(source="imgs", requests=1, normalize={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.5, 1.0]})
    x = build_workload(spec, (1, 3, 16, 16), base_dir=tmp_path).inputs[0]
    assert torch.allclose(x.mean(dim=(1, 2)), torch.tensor([2.0, 1.0, 0.5]))
    grey = build_workload(WorkloadSpec(source="imgs", requests=1), (1, 1, 16, 16), base_dir=tmp_path).inputs
    assert grey.shape == (1, 1, 16, 16) and torch.allclose(grey, torch.ones_like(grey))
    with pytest.raises(ScenarioError, match=r"workload\.normalize: mean and std need 1 values"):
        build_workload(spec, (1, 1, 16, 16), base_dir=tmp_path)


def test_an_image_folder_reads_only_the_images_the_requests_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _folder(tmp_path / "imgs", {str(c): 10 * c for c in range(10)}, per_class=5)  # 50 images
    opened: list[str] = []
    real = sources._ImageFolder._image
    monkeypatch.setattr(sources._ImageFolder, "_image", lambda self, rel: opened.append(rel) or real(self, rel))
    w = build_workload(WorkloadSpec(source="imgs", labels="folders", requests=6), IMAGE, base_dir=tmp_path)
    assert len(w) == 6 and len(opened) == len(set(opened)) == 6  # 6 requests: 6 images decoded, not 50


def test_image_folder_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScenarioError, match=r"workload\.source: empty: no images"):
        check_workload(WorkloadSpec(source="empty"), IMAGE, base_dir=tmp_path)
    _png(tmp_path / "imgs" / "loose.png", _solid(8, 8, 1))
    with pytest.raises(ScenarioError, match=r"workload\.labels: folders: imgs/loose\.png is not inside a class subfolder"):
        check_workload(WorkloadSpec(source="imgs", labels="folders"), IMAGE, base_dir=tmp_path)
    with pytest.raises(ScenarioError, match=r"workload\.source: imgs: a folder of images feeds a model taking one \(C, H, W\)"):
        check_workload(WorkloadSpec(source="imgs"), (1, 16), base_dir=tmp_path)
    (tmp_path / "imgs" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ScenarioError, match=r"workload\.source: imgs/bad\.png: cannot read as an image"):
        build_workload(WorkloadSpec(source="imgs", requests=2), IMAGE, base_dir=tmp_path)
    (tmp_path / "imgs" / "bad.png").unlink()
    monkeypatch.setattr(sources, "MAX_IMAGE_PIXELS", 63)  # 8x8 = 64 pixels: over
    with pytest.raises(ScenarioError, match=r"imgs/loose\.png: 8x8 pixels is over the"):
        build_workload(WorkloadSpec(source="imgs", requests=1), IMAGE, base_dir=tmp_path)


# ------------------------------------------------------------------------------------------------ tensor files
def test_npy_source_with_and_without_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(10) % 4)
    w = build_workload(WorkloadSpec(source="x.npy", labels="y.npy", requests=15, seed=1), IMAGE, base_dir=tmp_path)
    assert torch.equal(w.inputs, torch.from_numpy(x[w.sample_index]))
    assert w.labels is not None and np.array_equal(w.labels, w.sample_index % 4) and w.labels_from == "y.npy"
    w = build_workload(WorkloadSpec(source="x.npy", requests=3), IMAGE, base_dir=tmp_path)
    assert w.labels is None
    np.save(tmp_path / "short.npy", np.arange(9))
    with pytest.raises(ScenarioError, match=r"workload\.labels: short\.npy: labels must be \(10,\) integers"):
        build_workload(WorkloadSpec(source="x.npy", labels="short.npy", requests=3), IMAGE, base_dir=tmp_path)


def test_npy_mismatches_name_the_field(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((10, 3, 32, 32), dtype=np.float32))
    with pytest.raises(ScenarioError, match=r"^workload\.source: x\.npy: shape \(10, 3, 32, 32\) does not match the "
                                            r"model input \(3, 64, 64\)"):  # fmt: skip
        check_workload(WorkloadSpec(source="x.npy"), (1, 3, 64, 64), base_dir=tmp_path)
    np.save(tmp_path / "d.npy", np.zeros((10, 3, 32, 32), dtype=np.float64))
    with pytest.raises(ScenarioError, match=r"^workload\.source: d\.npy: dtype float64 does not match the model input's float32"):
        check_workload(WorkloadSpec(source="d.npy"), IMAGE, base_dir=tmp_path)
    np.save(tmp_path / "one.npy", np.zeros((3, 32, 32), dtype=np.float32))  # no sample dim
    with pytest.raises(ScenarioError, match=r"shape \(3, 32, 32\) does not match the model input \(3, 32, 32\) "
                                            r"\(expected \(N, 3, 32, 32\)\)"):  # fmt: skip
        check_workload(WorkloadSpec(source="one.npy"), IMAGE, base_dir=tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ScenarioError, match=r"workload\.source: obj\.npy: cannot load as a numeric array"):
        check_workload(WorkloadSpec(source="obj.npy"), IMAGE, base_dir=tmp_path)


def test_safetensors_source(tmp_path: Path) -> None:
    x = torch.rand(6, 3, 32, 32)
    save_file({"images": x, "labels": torch.tensor([5, 4, 3, 2, 1, 0])}, str(tmp_path / "d.safetensors"))
    w = build_workload(WorkloadSpec(source="d.safetensors", requests=8, seed=2), IMAGE, base_dir=tmp_path)
    assert torch.equal(w.inputs, x[torch.from_numpy(w.sample_index)])
    assert np.array_equal(w.labels, 5 - w.sample_index) and "'labels' tensor" in w.labels_from
    save_file({"a": x, "b": x.clone()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ScenarioError, match=r"workload\.source: two\.safetensors: holds 2 input tensor\(s\) \(a, b\); "
                                            r"the model takes 1 \(input\)"):  # fmt: skip
        check_workload(WorkloadSpec(source="two.safetensors"), IMAGE, base_dir=tmp_path)
    save_file({"x": torch.rand(6, 3, 16, 16)}, str(tmp_path / "small.safetensors"))
    with pytest.raises(ScenarioError, match=r"workload\.source: small\.safetensors: shape \(6, 3, 16, 16\) does not "
                                            r"match the model input \(3, 32, 32\)"):  # fmt: skip
        check_workload(WorkloadSpec(source="small.safetensors"), IMAGE, base_dir=tmp_path)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ScenarioError, match=r"junk\.safetensors: not a readable safetensors file"):
        check_workload(WorkloadSpec(source="junk.safetensors"), IMAGE, base_dir=tmp_path)


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", np.zeros((100, 3, 32, 32), dtype=np.float32))  # 1.2 MB
    with pytest.raises(ScenarioError, match=r"workload\.source: x\.npy: 1\.2 MiB is larger than the 1 MiB limit "
                                            r"\(workload\.max_file_mb\)"):  # fmt: skip
        check_workload(WorkloadSpec(source="x.npy", max_file_mb=1), IMAGE, base_dir=tmp_path)
    _png(tmp_path / "imgs" / "a.png", np.random.default_rng(0).integers(0, 255, (200, 200, 3)))
    with pytest.raises(ScenarioError, match=r"workload\.source: imgs/a\.png: .* MiB is larger than"):
        build_workload(WorkloadSpec(source="imgs", max_file_mb=0.01, requests=1), IMAGE, base_dir=tmp_path)


def test_workloads_are_bounded_in_memory(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"workload\.requests: 1000000 requests x 602\.1 kB per input .* over the 2 GiB"):
        check_workload(WorkloadSpec(source="synthetic", requests=1_000_000), (1, 3, 224, 224))


def test_missing_and_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"workload\.source: demo_test: no such file or folder .* a source is "
                                            r"demo-test, synthetic, video, frames, a folder of images"):  # fmt: skip
        check_workload(WorkloadSpec(source="demo_test"), IMAGE, base_dir=tmp_path)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ScenarioError, match=r"workload\.source: x\.csv: unsupported file type '\.csv'"):
        check_workload(WorkloadSpec(source="x.csv"), IMAGE, base_dir=tmp_path)
    with pytest.raises(ScenarioError, match=r"workload\.source: demo-test images are \(3, 64, 64\) float32, the model "
                                            r"takes input \(3, 32, 32\) float32; use source: synthetic"):  # fmt: skip
        check_workload(WorkloadSpec(source="demo-test"), IMAGE)


def test_labels_and_normalize_only_for_file_sources() -> None:
    with pytest.raises(ConfigError, match=r"s\.yaml: workload: labels and normalize apply to a folder or file source"):
        Scenario.from_mapping({"name": "x", "workload": {"source": "synthetic", "labels": "folders"}}, source="s.yaml")
    with pytest.raises(ConfigError, match=r"workload\.normalize\.std\.0: Input should be greater than 0"):
        Scenario.from_mapping({"name": "x", "workload": {"source": "d", "normalize": {"mean": [0], "std": [0]}}},
                              source="s.yaml")  # fmt: skip


# ------------------------------------------------------------------------------------------------ any input spec
def test_check_inputs_for_several_inputs() -> None:
    ids = ExpectedInput("input_ids", (16,), torch.int64)
    mask = ExpectedInput("attention_mask", (16,), torch.int64)
    assert check_inputs("t.safetensors", [("attention_mask", (5, 16), torch.int64), ("input_ids", (5, 16), torch.int64)],
                        [ids, mask]) == 5  # fmt: skip
    with pytest.raises(ScenarioError, match=r"workload\.source: t: input 'attention_mask': dtype int32 does not match"):
        check_inputs("t", [("input_ids", (5, 16), torch.int64), ("attention_mask", (5, 16), torch.int32)], [ids, mask])
    with pytest.raises(ScenarioError, match=r"workload\.source: t: holds tensors ids, mask; the model's inputs are named "
                                            r"input_ids, attention_mask"):  # fmt: skip
        check_inputs("t", [("ids", (5, 16), torch.int64), ("mask", (5, 16), torch.int64)], [ids, mask])
    with pytest.raises(ScenarioError, match=r"different numbers of samples \[4, 5\]"):
        check_inputs("t", [("input_ids", (5, 16), torch.int64), ("attention_mask", (4, 16), torch.int64)], [ids, mask])


def test_synthetic_matches_any_single_input_spec() -> None:
    ids = ExpectedInput("input_ids", (12,), torch.int64, example=torch.tensor([[101, 2000, 5000, 102]]))
    w = build_workload(WorkloadSpec(source="synthetic", requests=50), [ids])
    assert w.inputs.shape == (50, 12) and w.inputs.dtype == torch.int64
    assert 101 <= int(w.inputs.min()) and int(w.inputs.max()) <= 5000 and w.labels is None
    feats = build_workload(WorkloadSpec(source="synthetic", requests=4), [ExpectedInput("x", (7,), torch.float32)])
    assert feats.inputs.shape == (4, 7) and feats.inputs.dtype == torch.float32
    rect = build_workload(WorkloadSpec(source="synthetic", requests=2), (1, 3, 24, 40)).inputs
    assert rect.shape == (2, 3, 24, 40) and 0.0 <= float(rect.min()) and float(rect.max()) <= 1.0
    again = build_workload(WorkloadSpec(source="synthetic", requests=50), [ids]).inputs
    assert torch.equal(again, w.inputs)  # seeded
