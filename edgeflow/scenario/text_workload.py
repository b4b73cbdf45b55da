"""A workload of sentences: ``workload.source: FILE.txt`` (one sentence a line) for a text model.

The scenario runner plays the device: the sentences are tokenized here, with the model's own tokenizer
(``edgeflow.core.text``), into ``input_ids`` and ``attention_mask`` (each (R, max_length) int64), and the device
tier starts from those. Raw text never leaves the device; with ``privacy: true`` the token ids do not either
(the device runs the embeddings and at least one layer). There are no labels: the report compares every answer
with the unsplit model's sentence embedding (cosine similarity, see ``edgeflow.scenario.report``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgeflow.config import TEXT_PREFIX
from edgeflow.errors import ConfigError, ScenarioError
from edgeflow.scenario.schema import WorkloadSpec

if TYPE_CHECKING:
    from edgeflow.core.text import TextTokenizer

__all__ = ["TEXT_SUFFIXES", "is_text_source", "text_source_path", "read_text_source", "tokenize_workload"]

TEXT_SUFFIXES = (".txt",)


def is_text_source(source: str) -> bool:
    """Whether ``workload.source`` names a sentence file."""
    return source.lower().endswith(TEXT_SUFFIXES)


def text_source_path(source: str, scenario_dir: Path) -> Path:
    """The sentence file, relative to the scenario's folder unless absolute."""
    p = Path(source)
    return p if p.is_absolute() else (scenario_dir / p).resolve()


def read_text_source(spec: WorkloadSpec, artifact: str, scenario_dir: Path) -> tuple[list[str], TextTokenizer]:
    """Read and check a sentence workload against its model, without building the model.

    Returns:
        (sentences, the model's tokenizer)

    Raises:
        ScenarioError: naming the field: the model is not a text model, the file is unreadable or empty, or a
            sentence is longer than the model's ``max_length`` tokens (it would be truncated).
    """
    if not artifact.startswith(TEXT_PREFIX):
        raise ScenarioError(
            f"workload.source: {spec.source!r} is a text file, but model.artifact {artifact!r} is not a text model "
            f"(e.g. {TEXT_PREFIX}all-MiniLM-L6-v2)"
        )
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


def tokenize_workload(
    spec: WorkloadSpec, artifact: str, scenario_dir: Path, rng: np.random.Generator
) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray]:
    """The requests' inputs: sentences drawn by ``rng`` (shuffled passes over the file, or ``distinct`` of them),
    tokenized on the device.

    Returns:
        ((input_ids (R, T) int64, attention_mask (R, T) int64), sample index (R,) into the file's sentences)
    """
    sentences, tokenizer = read_text_source(spec, artifact, scenario_dir)
    n = spec.requests
    if spec.distinct is not None:
        pool = rng.permutation(len(sentences))[: spec.distinct]
        order = pool[rng.integers(0, len(pool), n)]
    else:
        order = np.concatenate([rng.permutation(len(sentences)) for _ in range(-(-n // len(sentences)))])[:n]
    ids, mask = tokenizer.encode([sentences[int(i)] for i in order])
    return (ids, mask), order
