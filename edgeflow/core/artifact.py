"""Model artifacts: one ``.safetensors`` file holding weights, exit heads and metadata.

Layout:
    tensors   ``model.<state-dict key>`` (backbone) and ``exits.<i>.<key>`` (exit head i)
    metadata  ``edgeflow.format_version``  "1"
              ``edgeflow.arch``            registered architecture name
              ``edgeflow.config``          canonical JSON of the architecture's config dataclass
              ``edgeflow.exits``           JSON list of :class:`~edgeflow.core.exits.ExitSpec`
              ``edgeflow.calibration``     JSON :class:`~edgeflow.core.exits.CalibrationTable`, or "null"
              ``edgeflow.fingerprint``     the content fingerprint, re-checked on load

The *fingerprint* is a sha256 over a canonical encoding of the architecture name, the config, the exit
specs and every tensor's name, dtype, shape and bytes in sorted name order. It depends on content only (not
on the file's layout or header order), so two tiers that load the same weights agree on it. The
calibration table is left out: it describes the model, it does not change what the model computes.

Files are only ever parsed by safetensors — never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import ArtifactError, ConfigError
from .exits import CalibrationTable, ExitHead, ExitSpec
from .registry import config_to_json, get_architecture, make_config

__all__ = ["FORMAT_VERSION", "Artifact", "save_artifact", "load_artifact", "fingerprint"]

FORMAT_VERSION = "1"
_META = "edgeflow."


@dataclass
class Artifact:
    """A loaded artifact. The model and heads are in eval mode.

    Attributes:
        model: the backbone.
        arch: registered architecture name.
        config: the architecture's config dataclass instance.
        exits: exit heads (``head.spec.position`` says where each attaches), sorted by position.
        calibration: the calibration table, or None.
        fingerprint: content fingerprint (sha256 hex).
        path: file it was read from.
    """

    model: nn.Module
    arch: str
    config: Any
    exits: nn.ModuleList
    calibration: CalibrationTable | None
    fingerprint: str
    path: Path | None = None

    @property
    def exit_positions(self) -> list[int]:
        return [h.spec.position for h in self.exits]

    def exit_at(self, position: int) -> ExitHead:
        """Raises: KeyError: no exit head at that position."""
        for h in self.exits:
            if h.spec.position == position:
                return h
        raise KeyError(f"no exit head at position {position}; exits at {self.exit_positions}")

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A zero image batch (B, 3, S, S) at the config's ``image_size`` (224 when it has none)."""
        side = int(getattr(self.config, "image_size", 224))
        return torch.zeros(batch_size, 3, side, side)


def _tensors_of(model: nn.Module, exits: Sequence[ExitHead]) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, h in enumerate(exits):
        tensors.update({f"exits.{i}.{k}": v for k, v in h.state_dict().items()})
    return tensors


def fingerprint(
    arch: str, config: Any, tensors: Mapping[str, torch.Tensor], exit_specs: Sequence[ExitSpec] = ()
) -> str:
    """Content fingerprint: sha256 hex over arch, config, exit specs and all tensors (sorted by name).

    Every field is length-prefixed, so no two different contents encode to the same byte stream.

    Args:
        arch: architecture name.
        config: config dataclass instance, or its canonical JSON string.
        tensors: name -> tensor (artifact names, e.g. ``model.fc.weight``).
        exit_specs: exit head specs, in artifact order.
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(struct.pack("<Q", len(b)))
        h.update(b)

    put(b"edgeflow-artifact-v" + FORMAT_VERSION.encode())
    put(arch.encode())
    put((config if isinstance(config, str) else config_to_json(config)).encode())
    put(_exits_json(exit_specs).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        put(name.encode())
        put(str(t.dtype).removeprefix("torch.").encode())
        put(json.dumps(list(t.shape)).encode())
        put(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # little-endian host bytes, as safetensors
    return h.hexdigest()


def _exits_json(specs: Sequence[ExitSpec]) -> str:
    return json.dumps([s.to_json() for s in specs], sort_keys=True, separators=(",", ":"))


def save_artifact(
    path: str | os.PathLike[str],
    model: nn.Module,
    arch: str,
    config: Any,
    exits: Sequence[ExitHead] = (),
    calibration: CalibrationTable | None = None,
) -> str:
    """Write ``model`` (+ exit heads, calibration) as one safetensors file, atomically.

    Args:
        path: destination file.
        model: the backbone, built from ``arch`` and ``config``.
        arch: a registered architecture name.
        config: its config dataclass instance, or a dict of config fields.
        exits: exit heads to store with it.
        calibration: the calibration table for those exits.

    Returns:
        The fingerprint.

    Raises:
        ArtifactError: unknown architecture, invalid config, or the model's weights do not match what
            the architecture builds (the artifact could not be loaded back).
    """
    try:
        get_architecture(arch)
        if isinstance(config, Mapping):
            config = make_config(arch, **config)
        config_json = config_to_json(config)
    except ConfigError as e:
        raise ArtifactError(f"cannot save artifact: {e}") from e
    exits = sorted(exits, key=lambda h: h.spec.position)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in _tensors_of(model, exits).items()}
    # Fail at save time, not at the far end's load time, if the weights don't fit the architecture.
    expected = get_architecture(arch).build(config).state_dict()
    _check_weights(expected, {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    specs = [h.spec for h in exits]
    fp = fingerprint(arch, config_json, tensors, specs)
    metadata = {
        _META + "format_version": FORMAT_VERSION,
        _META + "arch": arch,
        _META + "config": config_json,
        _META + "exits": _exits_json(specs),
        _META + "calibration": calibration.to_json() if calibration is not None else "null",
        _META + "fingerprint": fp,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an artifact is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return fp


def _check_weights(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], what: str = "model") -> None:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ArtifactError(f"{what} weights do not match the architecture: missing {missing[:8]}, unexpected {extra[:8]}")
    for k, v in expected.items():
        g = got[k]
        if g.shape != v.shape or g.dtype != v.dtype:
            raise ArtifactError(
                f"{what} weight {k!r}: expected {v.dtype} {tuple(v.shape)}, got {g.dtype} {tuple(g.shape)}"
            )


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise ArtifactError(f"artifact {str(path)!r} does not exist") from None
    except Exception as e:  # safetensors raises SafetensorError and others on a malformed file
        raise ArtifactError(f"artifact {str(path)!r} is not a readable safetensors file: {type(e).__name__}: {e}") from e
    return metadata, tensors


def load_artifact(path: str | os.PathLike[str], expect_fingerprint: str | None = None) -> Artifact:
    """Load an artifact written by :func:`save_artifact`.

    Args:
        path: the ``.safetensors`` file.
        expect_fingerprint: when given, the artifact's content fingerprint must equal it.

    Returns:
        The :class:`Artifact`, model and heads in eval mode.

    Raises:
        ArtifactError: missing or unreadable file, unknown format version or architecture, malformed
            metadata, missing/extra/mis-shaped weights, stored fingerprint not matching the content, or
            content not matching ``expect_fingerprint``.
    """
    path = Path(path)
    metadata, tensors = _read(path)
    where = f"artifact {str(path)!r}"

    def meta(key: str) -> str:
        try:
            return metadata[_META + key]
        except KeyError:
            raise ArtifactError(f"{where}: metadata {_META + key!r} is missing") from None

    version = meta("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{where}: format version {version!r} is not supported (expected {FORMAT_VERSION!r})")
    arch = meta("arch")
    try:
        config_fields = json.loads(meta("config"))
        if not isinstance(config_fields, dict):
            raise ValueError(f"config must be a JSON object, got {type(config_fields).__name__}")
        config = make_config(arch, **config_fields)
    except (ValueError, ConfigError) as e:
        raise ArtifactError(f"{where}: bad architecture or config: {e}") from e
    try:
        spec_list = json.loads(meta("exits"))
        if not isinstance(spec_list, list):
            raise ValueError(f"exits must be a JSON list, got {type(spec_list).__name__}")
        specs = [ExitSpec.from_json(d) for d in spec_list]
    except (ValueError, TypeError) as e:
        raise ArtifactError(f"{where}: malformed exit specs: {e}") from e
    try:
        cal_text = meta("calibration")
        calibration = None if cal_text == "null" else CalibrationTable.from_json(cal_text)
    except (ValueError, TypeError, KeyError) as e:
        raise ArtifactError(f"{where}: malformed calibration table: {e}") from e

    fp = fingerprint(arch, config, tensors, specs)
    stored = meta("fingerprint")
    if stored != fp:
        raise ArtifactError(f"{where}: content fingerprint {fp[:16]}… does not match the stored {stored[:16]}… (tampered or corrupt)")
    if expect_fingerprint is not None and expect_fingerprint != fp:
        raise ArtifactError(f"{where}: fingerprint {fp[:16]}… is not the expected {expect_fingerprint[:16]}…")

    model = get_architecture(arch).build(config)
    _load_into(model, {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}, "model")
    heads = nn.ModuleList()
    for i, spec in enumerate(specs):
        try:
            head = ExitHead(spec)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{where}: exit {i}: {e}") from e
        prefix = f"exits.{i}."
        _load_into(head, {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}, f"exit {i}")
        heads.append(head)
    unknown = sorted(k for k in tensors if not k.startswith("model.") and not _is_exit_key(k, len(specs)))
    if unknown:
        raise ArtifactError(f"{where}: unexpected tensors {unknown[:8]}")
    model.eval()
    heads.eval()
    return Artifact(model, arch, config, heads, calibration, fp, path)


def _is_exit_key(key: str, num_exits: int) -> bool:
    parts = key.split(".", 2)
    return len(parts) == 3 and parts[0] == "exits" and parts[1].isdigit() and int(parts[1]) < num_exits


def _load_into(module: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    _check_weights(module.state_dict(), weights, what)
    module.load_state_dict(weights, strict=True)
