"""A workload of sentences: ``workload.source: FILE.txt`` (one sentence a line) for a text model.

The text model is ``text:all-MiniLM-L6-v2`` or an artifact that carries its tokenizer (``edgeflow export hf:DIR``,
``edgeflow.core.tokenizer``). The scenario runner plays the device: the sentences are tokenized here, with the
model's own tokenizer, into its token inputs (``input_ids``, ``attention_mask``, ...: each (R, max_length)), and
the device tier starts from those; with ``edgeflow run --device-process`` the device agent process is sent the
sentences and tokenizes them itself (a ``BYTES`` input, docs/WIRE.md). Raw text never leaves the device; with ``privacy: true`` the token ids do not either
(the device runs the embeddings and at least one layer). There are no labels: the report compares every answer
with the unsplit model's sentence embedding (cosine similarity, see ``edgeflow.scenario.report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgeflow.config import TEXT_PREFIX
from edgeflow.errors import ArtifactError, ConfigError, ScenarioError
from edgeflow.scenario.schema import WorkloadSpec

if TYPE_CHECKING:
    from edgeflow.core.text import TextTokenizer
    from edgeflow.core.tokenizer import TextEncoder

__all__ = ["TEXT_SUFFIXES", "is_text_source", "text_source_path", "read_text_source", "tokenize_workload"]

TEXT_SUFFIXES = (".txt",)


def is_text_source(source: str) -> bool:
    """Whether ``workload.source`` names a sentence file."""
    return source.lower().endswith(TEXT_SUFFIXES)


def text_source_path(source: str, scenario_dir: Path) -> Path:
    """The sentence file, relative to the scenario's folder unless absolute."""
    p = Path(source)
    return p if p.is_absolute() else (scenario_dir / p).resolve()


def read_text_source(spec: WorkloadSpec, artifact: str, scenario_dir: Path) -> tuple[list[str], TextTokenizer | TextEncoder]:
    """Read and check a sentence workload against its model, without building the model.

    Returns:
        (sentences, the model's tokenizer)

    Raises:
        ScenarioError: naming the field: the model is not a text model, the file is unreadable or empty, or a
            sentence is longer than the model's ``max_length`` tokens (it would be truncated).
    """
    if not artifact.startswith(TEXT_PREFIX):
        return _artifact_text_source(spec, artifact, scenario_dir)
    from edgeflow.core.text import TextTokenizer, minilm_dir, parse_text_spec, read_sentences

    path = text_source_path(spec.source, scenario_dir)
    try:
        _, max_length = parse_text_spec(artifact[len(TEXT_PREFIX) :])
        sentences = read_sentences(path)
        tokenizer = TextTokenizer(minilm_dir() / "tokenizer.json", max_length)
    except ConfigError as e:
        raise ScenarioError(f"workload.source: {e}") from None
    for i, s in enumerate(sentences):
        n = tokenizer.num_tokens(s)
        if n > max_length:
            raise ScenarioError(
                f"workload.source: {path}: sentence {i + 1} ({s[:40]!r}...) has {n} tokens, more than the model's "
                f"max_length {max_length}: shorten it or raise max_length ({artifact}?max_length=N)"
            )
    return sentences, tokenizer


def _artifact_text_source(spec: WorkloadSpec, artifact: str, scenario_dir: Path) -> tuple[list[str], TextEncoder]:
    """A sentence file for an exported artifact that carries its tokenizer (``edgeflow export hf:DIR``)."""
    from edgeflow.core.artifact import load_artifact
    from edgeflow.core.text import read_sentences
    from edgeflow.core.tokenizer import TextEncoder

    def not_text() -> ScenarioError:
        return ScenarioError(
            f"workload.source: {spec.source!r} is a text file, but model.artifact {artifact!r} is not a text model: "
            f"use {TEXT_PREFIX}all-MiniLM-L6-v2, or an artifact exported from a Hugging Face folder with its "
            f"tokenizer.json (edgeflow export hf:DIR)"
        )

    if ":" in artifact.split("/", 1)[0]:  # builtin:, zoo:
        raise not_text()
    if not Path(artifact).is_file():
        raise ScenarioError(f"model.artifact: no file {artifact!r}")
    path = text_source_path(spec.source, scenario_dir)
    try:
        art = load_artifact(artifact)  # the fingerprint covers the tokenizer: a tampered one is refused here
        if art.tokenizer is None:
            raise not_text()
        tokenizer = TextEncoder(art.tokenizer, [s.dtype for s in art.inputs])
        sentences = read_sentences(path)
    except ConfigError as e:
        raise ScenarioError(f"workload.source: {e}") from None
    except ArtifactError as e:
        raise ScenarioError(f"model.artifact: {e}") from None
    if not tokenizer.truncation:
        for i, s in enumerate(sentences):
            n = tokenizer.num_tokens(s)
            if n > tokenizer.max_length:
                raise ScenarioError(
                    f"workload.source: {path}: sentence {i + 1} ({s[:40]!r}...) has {n} tokens, more than the "
                    f"artifact's max_length {tokenizer.max_length}, and its tokenizer does not truncate: shorten it, or "
                    f"export with longer inputs or --truncation"
                )
    return sentences, tokenizer


def tokenize_workload(
    spec: WorkloadSpec, artifact: str, scenario_dir: Path, rng: np.random.Generator
) -> tuple[tuple[torch.Tensor, ...], np.ndarray, list[str]]:
    """The requests' inputs: sentences drawn by ``rng`` (shuffled passes over the file, or ``distinct`` of them),
    tokenized on the device.

    Returns:
        (the model's token inputs, e.g. (input_ids (R, T) int64, attention_mask (R, T) int64); sample index (R,)
        into the file's sentences; the R sentences, for a device agent process that tokenizes them itself)
    """
    sentences, tokenizer = read_text_source(spec, artifact, scenario_dir)
    n = spec.requests
    if spec.distinct is not None:
        pool = rng.permutation(len(sentences))[: spec.distinct]
        order = pool[rng.integers(0, len(pool), n)]
    else:
        order = np.concatenate([rng.permutation(len(sentences)) for _ in range(-(-n // len(sentences)))])[:n]
    texts = [sentences[int(i)] for i in order]
    try:
        tokens = tuple(tokenizer.encode(texts))
    except ValueError as e:  # read_text_source refused long sentences already; a tokenizer's own refusal, still
        raise ScenarioError(f"workload.source: {e}") from None
    return tokens, order, texts
