"""Model artifacts: one ``.safetensors`` file holding weights, exit heads and metadata.

Layout:
    tensors   ``model.<state-dict key>`` (backbone) and ``exits.<i>.<key>`` (exit head i); optionally
              ``bottleneck.b<cut>.<key>`` (a learned codec's weights, ``core/codecs/learned.py``), built and
              shape-checked on load (``Artifact.bottlenecks``) and covered by the fingerprint like every tensor
    metadata  ``edgeflow.format_version``  "1"
              ``edgeflow.arch``            registered architecture name
              ``edgeflow.config``          canonical JSON of the architecture's config dataclass
              ``edgeflow.exits``           JSON list of :class:`~edgeflow.core.exits.ExitSpec`
              ``edgeflow.calibration``     JSON :class:`~edgeflow.core.exits.CalibrationTable`, or "null"
              ``edgeflow.fingerprint``     the content fingerprint, re-checked on load

The *fingerprint* is a sha256 over a canonical encoding of the architecture name, the config, the exit
specs, the calibration table and every tensor's name, dtype, shape and bytes in sorted name order. It is
recomputed from the content on every load (never trusted from the header) and depends on content only (not
on the file's layout or header order), so two tiers that load the same weights agree on it. The calibration
table is covered because it changes behaviour: the planner's accuracy floor and the exit thresholds come
from it, so a rewritten table ("every exit 100% accurate") is a different artifact.

An artifact is untrusted input. Loading it never builds anything real before it is checked: metadata JSON
is bounded in size and parsed with every failure (any depth, any size) turned into :class:`ArtifactError`;
the architecture is first built on the ``meta`` device (no storage), its parameter count and bytes bounded,
and every weight's shape and dtype compared with the file's; only then is the real model allocated.

Files are only ever parsed by safetensors — never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import ArtifactError, ConfigError
from .exits import CalibrationTable, ExitHead, ExitSpec
from .inputs import InputSpec, example_inputs
from .registry import config_to_json, get_architecture, make_config

GRAPH_FORMAT_VERSION = "2"  # edgeflow.core.export writes it; kept here so loading format "1" imports no export code

__all__ = ["FORMAT_VERSION", "Artifact", "save_artifact", "load_artifact", "fingerprint"]

FORMAT_VERSION = "1"
_META = "edgeflow."
# Domain tag of the fingerprint; "fp2" added the calibration table (fp1 left it out).
_FP_TAG = b"edgeflow-artifact-v" + FORMAT_VERSION.encode() + b"-fp2"
MAX_METADATA_CHARS = 16 * 1024 * 1024  # one metadata value; the shipped demo's largest is ~35 KB
MAX_PARAMS = 1_000_000_000  # a config may not ask for more (4 GB of float32): refused before allocation
MAX_PARAM_BYTES = 4 * 1024**3
_EXTRA_PREFIX = "bottleneck."  # tensors besides model/exits an artifact may hold (codecs/learned.py checks them)


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
        inputs: the model's inputs (names, shapes at batch 1, dtypes), in ``forward``'s order. A registered
            architecture takes one float32 image batch (1, 3, S, S) at the config's ``image_size``.
        max_batch: the only batch the model runs at, for an exported model whose batch dim is fixed; else None.

    An exported model (``edgeflow export``, format "2") has ``arch == "edgeflow.graph"``, its ``model`` is an
    ``fx.GraphModule`` rebuilt from the stored graph, and ``config`` is a dict (source, batch, num_outputs).
    """

    model: nn.Module
    arch: str
    config: Any
    exits: nn.ModuleList
    calibration: CalibrationTable | None
    fingerprint: str
    path: Path | None = None
    inputs: list[InputSpec] = field(default_factory=list)
    max_batch: int | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # bottleneck.* tensors (codecs/learned.py)
    bottlenecks: dict[int, nn.Module] = field(default_factory=dict)  # cut -> learned bottleneck, built from extra
    tokenizer: Any = None  # an exported text model's TokenizerSpec (edgeflow.core.tokenizer), covered by the fingerprint

    def __post_init__(self) -> None:
        if not self.inputs:
            side = int(getattr(self.config, "image_size", 224))
            self.inputs = [InputSpec(_first_arg_name(self.model), (1, 3, side, side), torch.float32)]

    def example_inputs(self, batch_size: int = 1) -> dict[str, torch.Tensor]:
        """name -> an example input at ``batch_size`` for every model input, in ``forward``'s order
        (floats zeros, integers ones; see :meth:`~edgeflow.core.inputs.InputSpec.example`)."""
        return example_inputs(self.inputs, batch_size)

    @property
    def exit_positions(self) -> list[int]:
        return [h.spec.position for h in self.exits]

    def exit_at(self, position: int) -> ExitHead:
        """Raises: KeyError: no exit head at that position."""
        for h in self.exits:
            if h.spec.position == position:
                return h
        raise KeyError(f"no exit head at position {position}; exits at {self.exit_positions}")

    def example_input(self, batch_size: int = 1) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The example inputs as ``model(*args)`` takes them: one tensor bare (a zero image batch (B, 3, S, S)
        for a registered architecture), several as a tuple."""
        values = tuple(self.example_inputs(batch_size).values())
        return values[0] if len(values) == 1 else values


def _first_arg_name(model: nn.Module) -> str:
    """Name of ``model.forward``'s first parameter: what a traced graph calls the input."""
    try:
        params = list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    return params[0] if params and params[0].isidentifier() else "x"


def _tensors_of(model: nn.Module, exits: Sequence[ExitHead]) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, h in enumerate(exits):
        tensors.update({f"exits.{i}.{k}": v for k, v in h.state_dict().items()})
    return tensors


def fingerprint(
    arch: str,
    config: Any,
    tensors: Mapping[str, torch.Tensor],
    exit_specs: Sequence[ExitSpec] = (),
    calibration: CalibrationTable | str | None = None,
) -> str:
    """Content fingerprint: sha256 hex over arch, config, exit specs, calibration and all tensors (by name).

    Every field is length-prefixed, so no two different contents encode to the same byte stream.

    Args:
        arch: architecture name.
        config: config dataclass instance, or its canonical JSON string.
        tensors: name -> tensor (artifact names, e.g. ``model.fc.weight``).
        exit_specs: exit head specs, in artifact order.
        calibration: the calibration table, its stored JSON text, or None (stored as ``"null"``).
    """
    h = hashlib.sha256()

    def put(b: bytes) -> None:
        h.update(struct.pack("<Q", len(b)))
        h.update(b)

    put(_FP_TAG)
    put(arch.encode())
    put((config if isinstance(config, str) else config_to_json(config)).encode())
    put(_exits_json(exit_specs).encode())
    cal_text = "null" if calibration is None else calibration if isinstance(calibration, str) else calibration.to_json()
    put(cal_text.encode())
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
    extra: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Write ``model`` (+ exit heads, calibration) as one safetensors file, atomically.

    Args:
        path: destination file.
        model: the backbone, built from ``arch`` and ``config``.
        arch: a registered architecture name.
        config: its config dataclass instance, or a dict of config fields.
        exits: exit heads to store with it.
        calibration: the calibration table for those exits.
        extra: more tensors, every name starting with ``bottleneck.`` (a learned codec's weights); covered by the
            fingerprint like the model's.

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
    for k, v in (extra or {}).items():
        if not k.startswith(_EXTRA_PREFIX):
            raise ArtifactError(f"cannot save artifact: extra tensor {k!r} does not start with {_EXTRA_PREFIX!r}")
        tensors[k] = v.detach().cpu().contiguous().clone()
    # Fail at save time, not at the far end's load time, if the weights don't fit the architecture.
    expected = get_architecture(arch).build(config).state_dict()
    _check_weights(expected, {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    specs = [h.spec for h in exits]
    cal_text = calibration.to_json() if calibration is not None else "null"
    fp = fingerprint(arch, config_json, tensors, specs, cal_text)
    metadata = {
        _META + "format_version": FORMAT_VERSION,
        _META + "arch": arch,
        _META + "config": config_json,
        _META + "exits": _exits_json(specs),
        _META + "calibration": cal_text,
        _META + "fingerprint": fp,
    }
    write_atomically(path, tensors, metadata)
    return fp


def write_atomically(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file through a temporary file in the same folder and a rename: a reader never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(dict(tensors), tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; an artifact is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def _declared_nbytes(sl: Any) -> int:
    numel = 1
    for d in sl.get_shape():
        numel *= int(d)
    bits = "".join(c for c in str(sl.get_dtype()) if c.isdigit())
    return numel * max(1, int(bits or 64) // 8)


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            declared = sum(_declared_nbytes(f.get_slice(k)) for k in f.keys())
            if declared > MAX_PARAM_BYTES:  # checked from the header, before any tensor is read
                raise ArtifactError(
                    f"artifact {str(path)!r} declares {declared} bytes of tensors; at most {MAX_PARAM_BYTES} are allowed"
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except ArtifactError:
        raise
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
    if version == GRAPH_FORMAT_VERSION:  # an exported graph (edgeflow export), no registered architecture
        from .export import GRAPH_ARCH, load_graph_artifact

        gm, inputs, model_fields, specs, calibration, fp, tok = load_graph_artifact(where, metadata, tensors,
                                                                                    expect_fingerprint)  # fmt: skip
        heads = _load_heads(where, specs, tensors)
        unknown = sorted(k for k in tensors if not k.startswith("model.") and not _is_exit_key(k, len(specs)))
        if unknown:
            raise ArtifactError(f"{where}: unexpected tensors {unknown[:8]}")
        max_batch = inputs[0].shape[0] if model_fields["batch"] == "fixed" else None
        return Artifact(gm.eval(), GRAPH_ARCH, model_fields, heads, calibration, fp, path, inputs, max_batch,
                        tokenizer=tok)  # fmt: skip
    if version != FORMAT_VERSION:
        raise ArtifactError(
            f"{where}: format version {version!r} is not supported (expected {FORMAT_VERSION!r} or {GRAPH_FORMAT_VERSION!r})"
        )
    arch = meta("arch")
    with _untrusted(where, "bad architecture or config"):
        config_fields = _parse_json(meta("config"))
        if not isinstance(config_fields, dict):
            raise ValueError(f"config must be a JSON object, got {type(config_fields).__name__}")
        config = make_config(arch, **config_fields)
        config_json = config_to_json(config)  # refuses what JSON cannot carry back (inf, nan)
    specs, cal_text, calibration = read_exits(where, meta)

    fp = fingerprint(arch, config_json, tensors, specs, cal_text)
    check_fingerprint(where, fp, meta("fingerprint"), expect_fingerprint)

    # Shapes first, on a build that allocates no storage: a config that asks for a huge model is refused here.
    _check_on_meta(
        where, "model", lambda: get_architecture(arch).build(config),
        {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")},
    )
    model = get_architecture(arch).build(config)
    _load_into(model, {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}, "model")
    heads = _load_heads(where, specs, tensors)
    unknown = sorted(k for k in tensors if not k.startswith(("model.", _EXTRA_PREFIX)) and not _is_exit_key(k, len(specs)))
    if unknown:
        raise ArtifactError(f"{where}: unexpected tensors {unknown[:8]}")
    model.eval()
    extra = {k: v for k, v in tensors.items() if k.startswith(_EXTRA_PREFIX)}
    bottlenecks: dict[int, nn.Module] = {}
    if extra:
        from .codecs.learned import bottlenecks_from_tensors

        with _untrusted(where, "malformed bottleneck"):
            bottlenecks = dict(bottlenecks_from_tensors(extra))
    return Artifact(model, arch, config, heads, calibration, fp, path, extra=extra, bottlenecks=bottlenecks)


def _load_heads(where: str, specs: Sequence[ExitSpec], tensors: Mapping[str, torch.Tensor]) -> nn.ModuleList:
    """Exit heads: shapes checked on a storage-less build first, then built and loaded (eval mode)."""
    for i, spec in enumerate(specs):
        prefix = f"exits.{i}."
        _check_on_meta(
            where, f"exit {i}", lambda spec=spec: ExitHead(spec),
            {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)},
        )
    heads = nn.ModuleList()
    for i, spec in enumerate(specs):
        try:
            head = ExitHead(spec)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"{where}: exit {i}: {e}") from e
        prefix = f"exits.{i}."
        _load_into(head, {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}, f"exit {i}")
        heads.append(head)
    return heads.eval()


def read_exits(where: str, meta: Callable[[str], str]) -> tuple[list[ExitSpec], str, CalibrationTable | None]:
    """The exit specs and the calibration table (with its text, which the fingerprint covers) of an artifact's
    metadata (``meta``: key -> value, raising ArtifactError when missing)."""
    with _untrusted(where, "malformed exit specs"):
        spec_list = _parse_json(meta("exits"))
        if not isinstance(spec_list, list):
            raise ValueError(f"exits must be a JSON list, got {type(spec_list).__name__}")
        specs = [ExitSpec.from_json(d) for d in spec_list]
    cal_text = meta("calibration")
    with _untrusted(where, "malformed calibration table"):
        _check_size(cal_text)
        calibration = None if cal_text == "null" else CalibrationTable.from_json(cal_text)
    return specs, cal_text, calibration


def check_fingerprint(where: str, fp: str, stored: str, expect: str | None) -> None:
    """The content's fingerprint ``fp`` must equal the one stored in the file and the pinned one (if any)."""
    if stored != fp:
        raise ArtifactError(f"{where}: content fingerprint {fp[:16]}… does not match the stored {stored[:16]}… (tampered or corrupt)")
    if expect is not None and expect != fp:
        raise ArtifactError(
            f"{where}: fingerprint {fp} differs from the pinned model.fingerprint {expect} "
            "(another or a modified artifact)"
        )


class _untrusted:
    """Turn any failure while parsing untrusted metadata into an :class:`ArtifactError`.

    A hostile header can raise more than ValueError: RecursionError (deep JSON), MemoryError, TypeError,
    KeyError, AttributeError (a list where an object was expected), OverflowError (huge numbers)...
    Whatever it raises, it is the artifact's fault, so it is reported as such, never as a traceback.
    """

    def __init__(self, where: str, what: str) -> None:
        self.where, self.what = where, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: Any) -> bool:
        if e is None or isinstance(e, ArtifactError) or not isinstance(e, Exception):
            return False
        if isinstance(e, RecursionError):
            detail = "nested too deeply"
        else:
            detail = f"{type(e).__name__}: {str(e)[:200]}"
        raise ArtifactError(f"{self.where}: {self.what}: {detail}") from None


def _check_size(text: str) -> None:
    if len(text) > MAX_METADATA_CHARS:
        raise ValueError(f"{len(text)} characters, more than the {MAX_METADATA_CHARS} allowed")


def _parse_json(text: str) -> Any:
    _check_size(text)
    return json.loads(text)


def _check_on_meta(
    where: str, what: str, build: Callable[[], nn.Module], weights: Mapping[str, torch.Tensor]
) -> None:
    """Run ``build`` on the meta device (no storage) and check its size and every weight against the file's."""
    try:
        with torch.device("meta"):
            expected = build().state_dict()
    except Exception as e:  # the config reached code we do not control; whatever it raised is the config's fault
        raise ArtifactError(f"{where}: {what} config cannot be built: {type(e).__name__}: {str(e)[:200]}") from None
    num_params = sum(v.numel() for v in expected.values())
    num_bytes = sum(v.numel() * v.element_size() for v in expected.values())
    if num_params > MAX_PARAMS or num_bytes > MAX_PARAM_BYTES:
        raise ArtifactError(
            f"{where}: {what} config asks for {num_params} parameters ({num_bytes} bytes); at most {MAX_PARAMS} "
            f"({MAX_PARAM_BYTES} bytes) are allowed"
        )
    try:
        _check_weights(expected, weights, what)
    except ArtifactError as e:
        raise ArtifactError(f"{where}: {e} (the config does not describe these weights)") from None


def _is_exit_key(key: str, num_exits: int) -> bool:
    parts = key.split(".", 2)
    return len(parts) == 3 and parts[0] == "exits" and parts[1].isdigit() and int(parts[1]) < num_exits


def _load_into(module: nn.Module, weights: dict[str, torch.Tensor], what: str) -> None:
    _check_weights(module.state_dict(), weights, what)
    module.load_state_dict(weights, strict=True)
