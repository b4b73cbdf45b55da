"""Text admitted where it is tokenized: raw text never leaves the tier that received it.

A request whose model input is one ``BYTES`` tensor (docs/WIRE.md, *Text*; :mod:`edgeflow.transport.strings`)
carries sentences, one per batch row. The agent tokenizes them with its model's own tokenizer (the one an
``hf:`` artifact carries, or all-MiniLM-L6-v2's) into the model's token inputs (``input_ids``, ``attention_mask``,
...) and goes on as if those had arrived: what it sends upstream are token ids or hidden states, never the text.

The tokenizer a runtime carries (``ModelRuntime.tokenizer``) has ``encode(sentences) -> tuple of tensors`` in the
model's input order, ``max_length`` and ``truncation`` (:class:`edgeflow.core.tokenizer.TextEncoder`,
:class:`edgeflow.core.text.TextTokenizer`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from edgeflow.agent.runtime import ModelRuntime
from edgeflow.errors import InvalidRequest, RequestTooLarge
from edgeflow.transport import WireTensor
from edgeflow.transport.strings import BYTES, decode_strings

__all__ = ["TEXT_INPUT", "is_text", "check_text", "tokenize_text"]

TEXT_INPUT = "text"  # the name of a text input on the wire
_LABEL = f"model input {TEXT_INPUT!r}"


def is_text(position: int, tensors: Sequence[WireTensor]) -> bool:
    """Whether a request's values at ``position`` are text (a ``BYTES`` tensor among the model inputs)."""
    return position == 0 and any(t.datatype == BYTES for t in tensors)


def check_text(runtime: ModelRuntime, tensors: Sequence[WireTensor]) -> int:
    """Check a text request's declaration before anything is decoded; returns its batch size.

    Raises:
        InvalidRequest: the model carries no tokenizer here, more than the one text tensor, another name.
        RequestTooLarge: more rows than ``compute.max_batch``.
    """
    takes = [t.name for t in runtime.cut_info(0).tensors]
    if getattr(runtime, "tokenizer", None) is None:
        why = getattr(runtime, "tokenizer_error", "") or "its artifact carries no tokenizer"
        raise InvalidRequest(f"{_LABEL} is BYTES (text), but this agent cannot tokenize text ({why}); the model takes {takes}")
    if len(tensors) != 1:
        raise InvalidRequest(f"a text request carries one BYTES tensor ({_LABEL}), got {len(tensors)} tensors "
                             f"{[t.name for t in tensors][:8]}")  # fmt: skip
    t = tensors[0]
    if t.name and t.name != TEXT_INPUT:
        raise InvalidRequest(f"model input 0 is BYTES (text) named {t.name[:64]!r}, expected {TEXT_INPUT!r}")
    batch = int(t.shape[0])
    if batch < 1:
        raise InvalidRequest(f"{_LABEL} has shape {list(t.shape)}: no rows")
    if batch > runtime.max_batch:
        raise RequestTooLarge(f"{_LABEL} has {batch} rows, above compute.max_batch {runtime.max_batch}")
    return batch


def tokenize_text(runtime: ModelRuntime, tensors: Sequence[WireTensor]) -> list[torch.Tensor]:
    """The model inputs for a text request checked by :func:`check_text`: its strings, tokenized here.

    Raises:
        InvalidRequest: naming the input and row: a malformed payload, a row over the byte limit or not UTF-8,
            a count that differs from the declared shape, or (a tokenizer that does not truncate) a row longer than
            its ``max_length`` tokens.
    """
    t = tensors[0]
    strings = decode_strings(t.payload, int(t.shape[0]), _LABEL)
    try:
        values = list(runtime.tokenizer.encode(strings))
    except ValueError as e:
        raise InvalidRequest(f"{_LABEL}: {e}") from None
    runtime.check_values(0, values)  # the tokenizer's settings were checked against the inputs at load; still
    device = runtime.device
    return [v.to(device) for v in values] if device.type != "cpu" else values
