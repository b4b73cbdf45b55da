"""A tokenizer carried inside an artifact: text in, the model's token inputs out, on the tier where the text is.

``edgeflow export hf:DIR`` stores the folder's ``tokenizer.json`` (the ``tokenizers`` library's JSON form: read
with ``Tokenizer.from_str``, nothing unpickled) with the settings that make its output fit the model's input spec
(:class:`TokenizerSpec`):

    ``max_length``   tokens per row: the model inputs' dim 1 (every tier checks every non-batch dim)
    ``padding``      ``"max_length"``: every row padded to ``max_length`` with ``pad_token`` / ``pad_id``
    ``truncation``   true: longer text is cut to ``max_length`` tokens; false: it is refused
    ``fills``        the model inputs the tokenizer fills, in the model's order: ``input_ids``,
                     ``attention_mask``, ``token_type_ids``

The spec is JSON in the artifact's metadata (``edgeflow.tokenizer``) and covered by the fingerprint, so a
tampered tokenizer is refused like tampered weights. :class:`TextEncoder` builds the tokenizer from it; only the
device (where the text is) needs the ``tokenizers`` library.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import ArtifactError, ConfigError
from .inputs import InputSpec

__all__ = ["TEXT_INPUTS", "MAX_TOKENIZER_CHARS", "TokenizerSpec", "TextEncoder", "tokenizer_from_folder"]

# tokenizer output -> the Encoding attribute that holds it (Hugging Face's input names)
TEXT_INPUTS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
MAX_TOKENIZER_CHARS = 8 * 1024 * 1024  # tokenizer.json text; bert-base's is 0.7 MB, large multilingual ones ~9 MB
_MAX_SIDE_FILE_BYTES = 1 << 20  # tokenizer_config.json, special_tokens_map.json
_INSTALL_HINT = "install the extra: pip install 'edgeflow[text]'"
_KEYS = {"tokenizer_json", "max_length", "padding", "truncation", "pad_id", "pad_token", "fills"}


@dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer and the settings that make its output the model's inputs (see the module doc).

    Raises:
        ValueError: a setting out of range, an unknown or repeated input in ``fills``.
    """

    tokenizer_json: str
    max_length: int
    truncation: bool
    pad_id: int
    pad_token: str
    fills: tuple[str, ...]
    padding: str = "max_length"

    def __post_init__(self) -> None:
        if not isinstance(self.tokenizer_json, str) or len(self.tokenizer_json) > MAX_TOKENIZER_CHARS:
            raise ValueError(f"tokenizer_json must be a string of at most {MAX_TOKENIZER_CHARS} characters")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or not 1 <= self.max_length <= 1 << 16:
            raise ValueError(f"max_length {self.max_length!r} is not an int in 1..65536")
        if not isinstance(self.truncation, bool):
            raise ValueError(f"truncation {self.truncation!r} is not a bool")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or not 0 <= self.pad_id < 1 << 31:
            raise ValueError(f"pad_id {self.pad_id!r} is not a token id")
        if not isinstance(self.pad_token, str) or len(self.pad_token) > 256:
            raise ValueError("pad_token must be a string of at most 256 characters")
        if self.padding != "max_length":
            raise ValueError(f"padding {str(self.padding)[:40]!r}: only 'max_length' fits a fixed input shape")
        fills = tuple(self.fills)
        if not fills or any(f not in TEXT_INPUTS for f in fills) or len(set(fills)) != len(fills):
            raise ValueError(f"fills {list(fills)[:8]} must name distinct inputs among {list(TEXT_INPUTS)}")
        object.__setattr__(self, "fills", fills)

    def settings(self) -> dict[str, Any]:
        """Everything but the tokenizer itself (for people: ``edgeflow export`` prints it)."""
        return {"max_length": self.max_length, "padding": self.padding, "truncation": self.truncation,
                "pad_id": self.pad_id, "pad_token": self.pad_token, "fills": list(self.fills)}  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {**self.settings(), "tokenizer_json": self.tokenizer_json}

    @classmethod
    def from_json(cls, d: Any) -> "TokenizerSpec":
        """Raises: ValueError: not an object with exactly the spec's keys, or invalid values."""
        if not isinstance(d, dict) or set(d) != _KEYS:
            keys = sorted(d)[:10] if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a tokenizer must be an object with {sorted(_KEYS)}, got {keys}")
        if not isinstance(d["fills"], list):
            raise ValueError("fills must be a list of input names")
        return cls(d["tokenizer_json"], d["max_length"], d["truncation"], d["pad_id"], d["pad_token"],
                   tuple(d["fills"]), d["padding"])  # fmt: skip

    def check_inputs(self, inputs: Sequence[InputSpec]) -> None:
        """The tokenizer must fill every model input, in order, each an integer (B, max_length) tensor.

        Raises:
            ValueError: naming the input that does not fit.
        """
        names = [s.name for s in inputs]
        if list(self.fills) != names:
            raise ValueError(f"the tokenizer fills {list(self.fills)}, the model takes {names}")
        for s in inputs:
            if len(s.shape) != 2 or s.shape[1] != self.max_length:
                raise ValueError(f"input {s.name!r} has shape {list(s.shape)}; the tokenizer makes (B, {self.max_length})")
            if s.dtype.is_floating_point or s.dtype == torch.bool:
                raise ValueError(f"input {s.name!r} is {s.dtype_name}; token ids and masks are integers")


class TextEncoder:
    """The tokenizer of a :class:`TokenizerSpec`, built with the ``tokenizers`` library (``Tokenizer.from_str``).

    ``encode(sentences)`` gives the model's inputs, ``fills`` order, each (len(sentences), max_length) int64 (or
    the dtype of ``dtypes``).

    Raises:
        ConfigError: the ``tokenizers`` library is not installed.
        ArtifactError: the JSON is not a tokenizer it can build.
    """

    def __init__(self, spec: TokenizerSpec, dtypes: Sequence[torch.dtype] | None = None):
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise ConfigError(f"tokenizing text needs the tokenizers library: {_INSTALL_HINT}") from None
        try:
            self._tok = Tokenizer.from_str(spec.tokenizer_json)
            self._raw = Tokenizer.from_str(spec.tokenizer_json)  # no padding or truncation: to measure sentences
        except Exception as e:  # tokenizers raises plain Exception on a bad file
            raise ArtifactError(f"the artifact's tokenizer does not build: {str(e)[:200]}") from None
        self._raw.no_padding()
        self._raw.no_truncation()
        self.spec = spec
        self.max_length = spec.max_length
        self.truncation = spec.truncation
        if spec.truncation:
            self._tok.enable_truncation(spec.max_length)
        else:
            self._tok.no_truncation()
        self._tok.enable_padding(length=spec.max_length, pad_id=spec.pad_id, pad_token=spec.pad_token)
        self._dtypes = list(dtypes) if dtypes is not None else [torch.int64] * len(spec.fills)

    def num_tokens(self, sentence: str) -> int:
        """Tokens of ``sentence`` with its special tokens, before padding and truncation."""
        return len(self._raw.encode(sentence).ids)

    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """The model inputs for ``sentences``, one (len(sentences), max_length) tensor per ``fills`` entry.

        Raises:
            ValueError: without truncation, a sentence longer than ``max_length`` tokens (naming its row).
        """
        encs = self._tok.encode_batch(list(sentences))
        for i, e in enumerate(encs):
            if len(e.ids) != self.max_length:
                raise ValueError(f"row {i} has {len(e.ids)} tokens, more than the tokenizer's max_length "
                                 f"{self.max_length} (the artifact does not truncate)")  # fmt: skip
        return tuple(
            torch.tensor([getattr(e, TEXT_INPUTS[name]) for e in encs], dtype=dtype).reshape(len(encs), self.max_length)
            for name, dtype in zip(self.spec.fills, self._dtypes)
        )


def _read_small_json(path: Path) -> Any:
    if not path.is_file():
        return None
    raw = path.read_bytes()[: _MAX_SIDE_FILE_BYTES + 1]
    if len(raw) > _MAX_SIDE_FILE_BYTES:
        raise ConfigError(f"{path}: more than {_MAX_SIDE_FILE_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON: {e}") from None


def _pad_token(folder: Path, tokenizer_doc: Any) -> str | None:
    """The pad token the folder names: tokenizer.json's padding, else special_tokens_map.json or
    tokenizer_config.json (a string, or an AddedToken object with ``content``)."""
    padding = tokenizer_doc.get("padding") if isinstance(tokenizer_doc, dict) else None
    if isinstance(padding, dict) and isinstance(padding.get("pad_token"), str):
        return str(padding["pad_token"])
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        doc = _read_small_json(folder / name)
        value = doc.get("pad_token") if isinstance(doc, dict) else None
        if isinstance(value, dict):
            value = value.get("content")
        if isinstance(value, str):
            return value
    return None


def tokenizer_from_folder(folder: str | Path, inputs: Sequence[InputSpec], *, truncation: bool = True) -> TokenizerSpec | None:
    """The tokenizer of a Hugging Face model folder, set up to fill ``inputs``; None when the folder has no
    ``tokenizer.json`` or the model takes inputs a tokenizer does not make (e.g. pixels).

    Args:
        folder: the model folder.
        inputs: the model's input spec (the tokenizer's ``max_length`` is their dim 1).
        truncation: cut text longer than ``max_length`` tokens (else refuse it).

    Raises:
        ConfigError: ``tokenizer.json`` is too large, not a tokenizer, or no pad token can be found; the token
            inputs do not share one (B, T) integer shape.
    """
    path = Path(folder) / "tokenizer.json"
    if not path.is_file() or not inputs or any(s.name not in TEXT_INPUTS for s in inputs):
        return None
    size = path.stat().st_size
    if size > MAX_TOKENIZER_CHARS:
        raise ConfigError(f"{path}: {size} bytes, more than the {MAX_TOKENIZER_CHARS} an artifact carries")
    try:
        text = path.read_text(encoding="utf-8")
        doc = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{path}: not a tokenizer JSON file: {e}") from None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise ConfigError(f"reading {path} needs the tokenizers library: {_INSTALL_HINT}") from None
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises plain Exception on a bad file
        raise ConfigError(f"{path}: not a tokenizers file: {str(e)[:200]}") from None
    pad = _pad_token(Path(folder), doc)
    candidates = [pad] if pad is not None else ["[PAD]", "<pad>"]
    pad_token = next((t for t in candidates if tok.token_to_id(t) is not None), None)
    if pad_token is None:
        raise ConfigError(f"{path}: no pad token in the vocabulary (looked for {candidates})")
    pad_id = int(tok.token_to_id(pad_token))
    if len(inputs[0].shape) != 2:
        raise ConfigError(f"{path}: cannot feed the model's inputs: input {inputs[0].name!r} has shape "
                          f"{list(inputs[0].shape)}; the tokenizer makes (B, T)")  # fmt: skip
    spec = TokenizerSpec(text, inputs[0].shape[1], truncation, pad_id, pad_token, tuple(s.name for s in inputs))
    try:
        spec.check_inputs(inputs)
    except ValueError as e:
        raise ConfigError(f"{path}: cannot feed the model's inputs: {e}") from None
    return spec
