"""A model's input spec: the names, shapes and dtypes of the tensors it takes.

An artifact carries its model's inputs as a list of :class:`InputSpec` — one per positional argument of the
model's ``forward``, in order. Dim 0 of every shape is the batch dim (the shape is given at batch 1, or at the
batch the model was exported with); a request may send any batch in ``1..max_batch``, every other dim must
match. The name is the model graph's placeholder name, which is what the wire's ``Tensor.name`` at position 0
must equal (``DescribeResponse.inputs``).

Text form (the CLI's repeatable ``--input``): ``NAME:SHAPE:DTYPE``, e.g. ``input_ids:1,16:int64``;
``DTYPE`` may be left out (``float32``).
"""

from __future__ import annotations

import json
import keyword
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from ..errors import ConfigError

__all__ = [
    "DTYPES",
    "MAX_INPUTS",
    "InputSpec",
    "check_names",
    "check_tensors",
    "dtype_name",
    "example_inputs",
    "inputs_from_json",
    "inputs_to_json",
    "parse_input",
]

# The dtypes an input may have: those the wire carries (docs/WIRE.md, KServe datatypes).
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
MAX_INPUTS = 64  # a model with more inputs than this is refused (the spec comes from untrusted files too)
MAX_RANK = 8
MAX_DIM = 1 << 24
MAX_NAME_CHARS = 128
MAX_ELEMENTS = 1 << 28  # one example input at batch 1 (1 GiB of float32)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.int64`` -> ``"int64"``."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class InputSpec:
    """One model input.

    Attributes:
        name: the model graph's placeholder name (a Python identifier), e.g. ``"input_ids"``.
        shape: its shape; dim 0 is the batch dim.
        dtype: its torch dtype (one of :data:`DTYPES`).

    Raises:
        ValueError: a name that is not an identifier, an empty or oversized shape, or an unsupported dtype.
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ValueError(f"input name {self.name!r} is not a Python identifier")
        if len(self.name) > MAX_NAME_CHARS:
            raise ValueError(f"input name {self.name[:40]!r}... has {len(self.name)} characters, at most {MAX_NAME_CHARS}")
        shape = tuple(self.shape)
        if not 1 <= len(shape) <= MAX_RANK:
            raise ValueError(f"input {self.name!r}: shape {list(shape)} must have 1..{MAX_RANK} dims (dim 0 is the batch)")
        if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= MAX_DIM for d in shape):
            raise ValueError(f"input {self.name!r}: shape {list(shape)} must be integers in 1..{MAX_DIM}")
        numel = 1
        for d in shape:
            numel *= d
        if numel > MAX_ELEMENTS:
            raise ValueError(f"input {self.name!r}: shape {list(shape)} has {numel} elements, at most {MAX_ELEMENTS}")
        object.__setattr__(self, "shape", shape)
        if self.dtype not in DTYPES.values():
            raise ValueError(f"input {self.name!r}: dtype {self.dtype} is not supported (one of {sorted(DTYPES)})")

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    def example(self, batch_size: int = 1) -> torch.Tensor:
        """A deterministic input at ``batch_size``: zeros for floats, ones for integers (a valid token id and a
        full attention mask), True for bool."""
        shape = (batch_size, *self.shape[1:])
        if self.dtype.is_floating_point:
            return torch.zeros(shape, dtype=self.dtype)
        return torch.ones(shape, dtype=self.dtype)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype_name}

    @classmethod
    def from_json(cls, d: Any) -> "InputSpec":
        """Raises: ValueError: not an object with exactly name, shape, dtype; or invalid values."""
        if not isinstance(d, dict) or set(d) != {"name", "shape", "dtype"}:
            raise ValueError(f"an input must be an object with name, shape and dtype, got {str(d)[:80]}")
        if not isinstance(d["shape"], list) or len(d["shape"]) > MAX_RANK:
            raise ValueError(f"input {str(d['name'])[:40]!r}: shape must be a list of at most {MAX_RANK} ints")
        if d["dtype"] not in DTYPES:
            raise ValueError(f"input {str(d['name'])[:40]!r}: dtype {str(d['dtype'])[:40]!r} is not one of {sorted(DTYPES)}")
        return cls(d["name"], tuple(d["shape"]), DTYPES[d["dtype"]])

    def __str__(self) -> str:
        return f"{self.name}:{','.join(map(str, self.shape))}:{self.dtype_name}"


def parse_input(text: str) -> InputSpec:
    """Parse ``NAME:SHAPE[:DTYPE]``, e.g. ``input_ids:1,16:int64`` (DTYPE defaults to float32).

    Raises:
        ConfigError: the text does not parse; the message quotes it.
    """
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"--input {text!r}: expected NAME:SHAPE:DTYPE, e.g. input_ids:1,16:int64")
    name, shape_text = parts[0].strip(), parts[1].strip()
    dtype_text = parts[2].strip() if len(parts) == 3 else "float32"
    if dtype_text not in DTYPES:
        raise ConfigError(f"--input {text!r}: dtype {dtype_text!r} is not one of {', '.join(DTYPES)}")
    try:
        shape = tuple(int(s) for s in shape_text.split(","))
        return InputSpec(name, shape, DTYPES[dtype_text])
    except ValueError as e:
        raise ConfigError(f"--input {text!r}: {e}") from None


def inputs_to_json(specs: Sequence[InputSpec]) -> str:
    """Canonical JSON of an input spec list (stored in artifacts, covered by the fingerprint)."""
    return json.dumps([s.to_json() for s in specs], sort_keys=True, separators=(",", ":"))


def inputs_from_json(value: Any) -> list[InputSpec]:
    """Parse a decoded JSON list of inputs.

    Raises:
        ValueError: not a non-empty list of valid inputs with distinct names, or more than :data:`MAX_INPUTS`.
    """
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_INPUTS:
        raise ValueError(f"inputs must be a list of 1..{MAX_INPUTS} inputs")
    specs = [InputSpec.from_json(d) for d in value]
    check_names(specs)
    return specs


def check_names(specs: Sequence[InputSpec]) -> None:
    """Raises: ValueError: two inputs share a name."""
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise ValueError(f"input name {s.name!r} is given twice")
        seen.add(s.name)


def example_inputs(specs: Sequence[InputSpec], batch_size: int = 1) -> dict[str, torch.Tensor]:
    """name -> example tensor at ``batch_size`` (see :meth:`InputSpec.example`), in spec order."""
    return {s.name: s.example(batch_size) for s in specs}


def check_tensors(specs: Sequence[InputSpec], values: Mapping[str, torch.Tensor]) -> None:
    """Check named tensors against the spec (any batch >= 1, other dims exact).

    Raises:
        ValueError: a missing or unexpected input, or one with another dtype or shape; the message names it.
    """
    missing = [s.name for s in specs if s.name not in values]
    extra = sorted(set(values) - {s.name for s in specs})
    if missing or extra:
        raise ValueError(f"inputs {[s.name for s in specs]} expected; missing {missing}, unexpected {extra}")
    for s in specs:
        v = values[s.name]
        if v.dtype != s.dtype:
            raise ValueError(f"input {s.name!r} has dtype {dtype_name(v.dtype)}, expected {s.dtype_name}")
        if v.dim() != len(s.shape) or tuple(v.shape[1:]) != s.shape[1:] or v.shape[0] < 1:
            raise ValueError(f"input {s.name!r} has shape {list(v.shape)}, expected [B, {', '.join(map(str, s.shape[1:]))}]")
