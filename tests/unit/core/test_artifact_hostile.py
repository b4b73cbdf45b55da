"""Hostile artifacts: each is refused with an ArtifactError before anything is built for real.

Each case is one the issue found: a rewritten calibration table, a config asking for a huge model with the
fingerprint recomputed (refused on a ``meta`` build, measured by peak RSS in a fresh process), malformed
metadata of any depth or size, and an artifact whose fingerprint differs from the one a node file pins.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from edgeflow.core import artifact as artifact_mod
from edgeflow.core.artifact import fingerprint, load_artifact, save_artifact
from edgeflow.core.data import DEMO_WEIGHTS
from edgeflow.core.exits import CalibrationTable, ExitSpec
from edgeflow.core.registry import build_model, config_to_json, make_config
from edgeflow.errors import ArtifactError

ARCH = "resnet18"
CONFIG = dict(width=4, num_classes=3, image_size=32)


@pytest.fixture
def saved(tmp_path):
    from tests.unit.core.test_artifact import _heads, _model, _table

    path = tmp_path / "m.safetensors"
    fp = save_artifact(path, _model(), ARCH, make_config(ARCH, **CONFIG), exits=_heads(), calibration=_table())
    return path, fp


def _edit(src, dst, edit_metadata, *, refingerprint: bool):
    """Copy ``src`` with its metadata edited; with ``refingerprint`` the stored fingerprint is recomputed,
    as an attacker who knows the algorithm would."""
    with safe_open(str(src), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        m = dict(f.metadata())
    m = edit_metadata(m)
    if refingerprint:
        specs = [ExitSpec.from_json(d) for d in json.loads(m["edgeflow.exits"])]
        m["edgeflow.fingerprint"] = fingerprint(m["edgeflow.arch"], m["edgeflow.config"], t, specs, m["edgeflow.calibration"])
    save_file(t, str(dst), metadata=m)
    return dst


def _perfect(m):
    d = json.loads(m["edgeflow.calibration"])
    d["exit_accuracy"] = {k: 1.0 for k in d["exit_accuracy"]}
    d["final_accuracy"] = 1.0
    for row in d["rows"]:
        row["exit_accuracy"] = row["overall_accuracy"] = 1.0
    return {**m, "edgeflow.calibration": json.dumps(d)}


def test_rewritten_calibration_breaks_the_fingerprint(saved, tmp_path):
    path, fp = saved
    bad = _edit(path, tmp_path / "cal.safetensors", _perfect, refingerprint=False)
    with pytest.raises(ArtifactError, match="tampered or corrupt"):
        load_artifact(bad)


def test_rewritten_calibration_with_recomputed_fingerprint_fails_the_pin(saved, tmp_path):
    path, fp = saved
    bad = _edit(path, tmp_path / "cal.safetensors", _perfect, refingerprint=True)
    art = load_artifact(bad)  # self-consistent: only a pin (or the handshake with an honest tier) catches it
    assert art.fingerprint != fp
    assert art.calibration is not None and art.calibration.final_accuracy == 1.0
    with pytest.raises(ArtifactError, match="pinned model.fingerprint"):
        load_artifact(bad, expect_fingerprint=fp)


@pytest.mark.skipif(not DEMO_WEIGHTS.exists(), reason="demo artifact not built")
def test_shipped_demo_fingerprint_covers_its_calibration():
    art = load_artifact(DEMO_WEIGHTS)
    assert isinstance(art.calibration, CalibrationTable)
    with safe_open(str(DEMO_WEIGHTS), framework="pt") as f:
        m = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    specs = [ExitSpec.from_json(d) for d in json.loads(m["edgeflow.exits"])]
    assert art.fingerprint == fingerprint(m["edgeflow.arch"], m["edgeflow.config"], t, specs, m["edgeflow.calibration"])
    assert art.fingerprint != fingerprint(m["edgeflow.arch"], m["edgeflow.config"], t, specs, None)


def _widen(width: int):
    def edit(m):
        c = json.loads(m["edgeflow.config"])
        c["width"] = width
        return {**m, "edgeflow.config": config_to_json(make_config(ARCH, **c))}  # canonical, as a loader hashes it

    return edit


def test_hostile_width_is_refused_on_meta_naming_the_mismatch(saved, tmp_path):
    path, _ = saved
    bad = _edit(path, tmp_path / "w.safetensors", _widen(4096), refingerprint=True)
    with pytest.raises(ArtifactError, match=r"model config asks for \d+ parameters .* at most 1000000000"):
        load_artifact(bad)  # resnet18 at width 4096: ~46e9 parameters, refused by the bound
    bad = _edit(path, tmp_path / "w16.safetensors", _widen(16), refingerprint=True)
    with pytest.raises(ArtifactError, match=r"model weight 'conv1.weight': expected torch.float32 \(16, 3, 7, 7\), got torch.float32 \(4, 3, 7, 7\)"):
        load_artifact(bad)  # within the bound: the shapes on the meta build name the mismatch


def test_config_asking_for_too_many_parameters_is_refused(saved, tmp_path, monkeypatch):
    path, _ = saved
    n = sum(p.numel() for p in build_model(ARCH, **CONFIG).state_dict().values())
    monkeypatch.setattr(artifact_mod, "MAX_PARAMS", n - 1)
    with pytest.raises(ArtifactError, match=rf"model config asks for {n} parameters"):
        load_artifact(path)


def test_hostile_width_uses_almost_no_memory(saved, tmp_path):
    """Peak RSS of a fresh process loading the width-4096 artifact, against the same process loading the
    honest one. Building that model for real takes GBs (3.7 GB measured before the fix)."""
    path, _ = saved
    bad = _edit(path, tmp_path / "w.safetensors", _widen(4096), refingerprint=True)
    probe = textwrap.dedent(
        """
        import resource, sys
        from edgeflow.core.artifact import load_artifact
        from edgeflow.errors import ArtifactError
        load_artifact(sys.argv[1])          # warm: imports, allocator, the honest model
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_artifact(sys.argv[2])
            print("LOADED")
        except ArtifactError as e:
            print("REFUSED", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
        """
    )
    r = subprocess.run([sys.executable, "-c", probe, str(path), str(bad)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    verdict, *rest = r.stdout.split()
    assert verdict == "REFUSED"
    assert int(rest[0]) < 32, f"peak RSS grew by {rest[0]} MB while refusing"


@pytest.mark.parametrize(
    "key, value",
    [
        ("calibration", "[" * 100_000 + "]" * 100_000),
        ("calibration", '{"rows":' * 100_000 + "1" + "}" * 100_000),
        ("config", "[" * 100_000 + "]" * 100_000),
        ("config", '{"a":' * 50_000 + "1" + "}" * 50_000),
        ("exits", "[" * 100_000 + "]" * 100_000),
        ("calibration", '{"rows": [], "final_accuracy": 1e999999, "exit_accuracy": {}, "num_samples": 1}'),
        ("calibration", '{"rows": [], "final_accuracy": 1, "exit_accuracy": [], "num_samples": "x"}'),
        ("exits", '[[1, 2]]'),
        ("exits", '["x"]'),
        ("config", '{"width": 1e400}'),
        ("config", '{"width": -4}'),
        ("config", '{"width": "4"}'),
    ],
)
def test_malformed_metadata_of_any_depth_is_an_artifact_error(saved, tmp_path, key, value):
    path, _ = saved
    bad = _edit(path, tmp_path / "x.safetensors", lambda m: {**m, "edgeflow." + key: value}, refingerprint=False)
    with pytest.raises(ArtifactError):
        load_artifact(bad)


def test_oversized_metadata_is_refused_before_parsing(saved, tmp_path, monkeypatch):
    path, _ = saved
    monkeypatch.setattr(artifact_mod, "MAX_METADATA_CHARS", 100)
    with pytest.raises(ArtifactError, match="more than the 100 allowed"):
        load_artifact(path)


def test_declared_tensor_bytes_are_bounded_from_the_header(saved, monkeypatch):
    path, _ = saved
    monkeypatch.setattr(artifact_mod, "MAX_PARAM_BYTES", 1000)
    with pytest.raises(ArtifactError, match=r"declares \d+ bytes of tensors; at most 1000 are allowed"):
        load_artifact(path)
