"""Artifacts: exact round trip, content fingerprints, and ArtifactError for every kind of bad file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from edgeflow.core.artifact import fingerprint, load_artifact, save_artifact
from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset
from edgeflow.core.exits import CalibrationRow, CalibrationTable, ExitHead, ExitSpec
from edgeflow.core.registry import build_model, make_config
from edgeflow.errors import ArtifactError

ARCH = "resnet18"
CONFIG = dict(width=4, num_classes=3, image_size=32)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ARCH, **CONFIG)
    # Non-trivial batch-norm statistics, so buffers take part in the round trip too.
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 32, 32))
    return model.eval()


def _heads():
    torch.manual_seed(1)
    return [ExitHead(ExitSpec(20, 4, 3, hidden=6, pool=2, tensor="layer1_1_relu_1")), ExitHead(ExitSpec(36, 8, 3))]


def _table():
    rows = [CalibrationRow(20, "max_prob", 0.5, 0.4, 0.9, 0.8), CalibrationRow(20, "max_prob", 0.9, 0.1, 1.0, 0.85)]
    return CalibrationTable(rows, final_accuracy=0.85, exit_accuracy={20: 0.7}, num_samples=10)


@pytest.fixture
def saved(tmp_path):
    model, heads = _model(), _heads()
    path = tmp_path / "m.safetensors"
    fp = save_artifact(path, model, ARCH, make_config(ARCH, **CONFIG), exits=heads, calibration=_table())
    return path, fp, model, heads


def _rewrite(src, dst, *, tensors=None, metadata=None):
    """Copy an artifact, editing its tensors/metadata, and keep the stored fingerprint consistent or not."""
    with safe_open(str(src), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        m = dict(f.metadata())
    if tensors is not None:
        t = tensors(t)
    if metadata is not None:
        m = metadata(m)
    save_file(t, str(dst), metadata=m)
    return dst


def _refingerprint(m, t):
    specs = [ExitSpec.from_json(d) for d in json.loads(m["edgeflow.exits"])]
    m["edgeflow.fingerprint"] = fingerprint(m["edgeflow.arch"], m["edgeflow.config"], t, specs, m["edgeflow.calibration"])


def test_round_trip_is_exact(saved):
    path, fp, model, heads = saved
    art = load_artifact(path, expect_fingerprint=fp)
    assert art.fingerprint == fp and art.arch == ARCH and art.config == make_config(ARCH, **CONFIG)
    assert not art.model.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(art.model(x), model(x))
        assert art.exit_positions == [20, 36]
        f = torch.rand(2, 4, 16, 16)
        assert torch.equal(art.exit_at(20)(f), heads[0](f))
    assert art.exit_at(20).spec == heads[0].spec
    assert art.calibration == _table()
    assert art.example_input(2).shape == (2, 3, 32, 32)
    # Saving what was loaded gives the same fingerprint.
    assert save_artifact(path.with_name("again.safetensors"), art.model, art.arch, art.config, exits=art.exits, calibration=art.calibration) == fp


def test_fingerprint_is_content_only():
    t = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    fp = fingerprint(ARCH, make_config(ARCH, **CONFIG), t)
    assert fp == fingerprint(ARCH, make_config(ARCH, **CONFIG), dict(reversed(list(t.items()))))
    assert fp == fingerprint(ARCH, make_config(ARCH, **CONFIG), {k: v.clone() for k, v in t.items()})
    assert len(fp) == 64 and int(fp, 16) >= 0
    # Each part counts: dtype, shape, name, bytes, config, arch, exits.
    assert fp != fingerprint(ARCH, make_config(ARCH, **CONFIG), {**t, "a": torch.ones(2, 2, dtype=torch.float64)})
    assert fp != fingerprint(ARCH, make_config(ARCH, **CONFIG), {**t, "a": torch.ones(4)})
    assert fp != fingerprint(ARCH, make_config(ARCH, **CONFIG), {"c": t["b"], "a": t["a"]})
    assert fp != fingerprint(ARCH, make_config(ARCH, **{**CONFIG, "width": 8}), t)
    assert fp != fingerprint("vit", make_config(ARCH, **CONFIG), t)
    assert fp != fingerprint(ARCH, make_config(ARCH, **CONFIG), t, [ExitSpec(20, 4, 3)])
    assert fp != fingerprint(ARCH, make_config(ARCH, **CONFIG), t, calibration=_table())
    assert fp == fingerprint(ARCH, make_config(ARCH, **CONFIG), t, calibration="null")


def test_changed_weight_changes_fingerprint(saved, tmp_path):
    path, fp, model, heads = saved
    with torch.no_grad():
        model.fc.bias[0] += 1e-6
    fp2 = save_artifact(tmp_path / "b.safetensors", model, ARCH, CONFIG, exits=heads, calibration=_table())
    assert fp2 != fp
    with torch.no_grad():
        heads[1].fc.weight[0, 0] += 1.0
    assert save_artifact(tmp_path / "c.safetensors", model, ARCH, CONFIG, exits=heads) not in (fp, fp2)
    with pytest.raises(ArtifactError, match="pinned model.fingerprint"):
        load_artifact(tmp_path / "b.safetensors", expect_fingerprint=fp)


def test_calibration_is_part_of_the_fingerprint(saved, tmp_path):
    # The planner's accuracy floor and the exit thresholds come from the table: it changes behaviour.
    path, fp, model, heads = saved
    assert save_artifact(tmp_path / "n.safetensors", model, ARCH, CONFIG, exits=heads) != fp


def test_tampered_weights_or_metadata_are_caught(saved, tmp_path):
    path, fp, *_ = saved

    def bump(t):
        t["model.fc.bias"] = t["model.fc.bias"] + 1
        return t

    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_artifact(_rewrite(path, tmp_path / "w.safetensors", tensors=bump))
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_artifact(_rewrite(path, tmp_path / "c.safetensors", metadata=lambda m: {**m, "edgeflow.config": m["edgeflow.config"].replace('"width":4', '"width":5')}))


@pytest.mark.parametrize("key", ["format_version", "arch", "config", "exits", "calibration", "fingerprint"])
def test_missing_metadata(saved, tmp_path, key):
    path, *_ = saved
    bad = _rewrite(path, tmp_path / "x.safetensors", metadata=lambda m: {k: v for k, v in m.items() if k != "edgeflow." + key})
    with pytest.raises(ArtifactError, match=f"edgeflow.{key}' is missing"):
        load_artifact(bad)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("format_version", "3", "format version"),
        ("arch", "no-such-arch", "unknown architecture"),
        ("config", "{not json", "bad architecture or config"),
        ("config", "[1, 2]", "JSON object"),
        ("config", '{"widthh": 4}', "widthh"),
        ("exits", '{"a": 1}', "malformed exit specs"),
        ("exits", '[{"position": 1, "bogus": 2}]', "malformed exit specs"),
        ("calibration", "[]", "malformed calibration"),
        ("calibration", '{"rows": [{"x": 1}], "final_accuracy": 1}', "malformed calibration"),
    ],
)
def test_malformed_metadata(saved, tmp_path, key, value, match):
    path, *_ = saved
    bad = _rewrite(path, tmp_path / "x.safetensors", metadata=lambda m: {**m, "edgeflow." + key: value})
    with pytest.raises(ArtifactError, match=match):
        load_artifact(bad)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: {k: v for k, v in t.items() if k != "model.fc.weight"}, "missing \\['fc.weight'\\]"),
        (lambda t: {**t, "model.extra": torch.zeros(1)}, "unexpected \\['extra'\\]"),
        (lambda t: {**t, "stray": torch.zeros(1)}, "unexpected tensors \\['stray'\\]"),
        (lambda t: {**t, "model.fc.weight": t["model.fc.weight"].double()}, "expected torch.float32"),
        (lambda t: {k: v for k, v in t.items() if not k.startswith("exits.1.")}, "exit 1"),
    ],
)
def test_missing_extra_or_wrong_weights(saved, tmp_path, edit, match):
    """Even with a self-consistent fingerprint, weights must fit the architecture exactly."""
    path, *_ = saved

    with safe_open(str(path), framework="pt") as f:
        t = edit({k: f.get_tensor(k) for k in f.keys()})
        m = dict(f.metadata())
    _refingerprint(m, t)
    save_file(t, str(tmp_path / "x.safetensors"), metadata=m)
    with pytest.raises(ArtifactError, match=match):
        load_artifact(tmp_path / "x.safetensors")


def test_unreadable_files(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ArtifactError, match="not a readable safetensors"):
        load_artifact(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(1)}, str(plain))  # a valid safetensors file, but no edgeflow metadata
    with pytest.raises(ArtifactError, match="is missing"):
        load_artifact(plain)


def test_truncated_file(saved, tmp_path):
    path, *_ = saved
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ArtifactError):
        load_artifact(cut)


def test_save_rejects_bad_input(tmp_path):
    model = _model()
    with pytest.raises(ArtifactError, match="unknown architecture"):
        save_artifact(tmp_path / "a.safetensors", model, "nope", {})
    with pytest.raises(ArtifactError, match="'conv1.weight': expected torch.float32 \\(8, 3, 7, 7\\)"):
        save_artifact(tmp_path / "a.safetensors", model, ARCH, {**CONFIG, "width": 8})
    with pytest.raises(ArtifactError, match="weights do not match the architecture: missing"):
        save_artifact(tmp_path / "a.safetensors", model, "vit", {"image_size": 32, "patch_size": 8})
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.skipif(not DEMO_WEIGHTS.exists(), reason="demo artifact not built")
def test_committed_demo_artifact_is_accurate():
    art = load_artifact(DEMO_WEIGHTS)
    assert DEMO_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    x, y = load_demo_dataset("test", art.config.image_size)
    with torch.no_grad():
        acc = (art.model(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.90, acc
    assert art.calibration is not None and len(art.exits) >= 2
