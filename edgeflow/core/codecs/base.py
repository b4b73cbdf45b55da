"""The Codec interface, the codec registry, and the entry points ``get_codec`` and ``decode``."""

from __future__ import annotations

import abc
import dataclasses
import struct
from typing import Any, ClassVar

import torch

from edgeflow.core.codecs.format import (
    CODEC_IDS,
    DEFAULT_LIMITS,
    DTYPE_CODES,
    DecodeLimits,
    PayloadHeader,
    PayloadParts,
    split_payload,
)
from edgeflow.errors import CodecError

__all__ = [
    "CODEC_NAMES",
    "OPT_IN_CODECS",
    "FLOAT_DTYPES",
    "Codec",
    "register",
    "get_codec",
    "codec_from_spec",
    "decode",
    "read_header",
    "prepare_tensor",
]

CODEC_NAMES: tuple[str, ...] = tuple(n for n in CODEC_IDS if n != "delta")
"""Names accepted by ``get_codec``, in wire-id order (``delta`` payloads are stream residuals, decoded with their
reference by ``edgeflow.core.codecs.delta``, never a plan's codec)."""

OPT_IN_CODECS: tuple[str, ...] = ("dct", "learned")
"""Codecs a default codec list leaves out (an agent measures them only when its config names them): dct costs
~0.2 us per element, which a start-up profile of a 224x224 model would pay at every cut; learned works only at its bottleneck's cut."""

FLOAT_DTYPES: frozenset[torch.dtype] = frozenset({torch.float32, torch.float16, torch.bfloat16, torch.float64})
"""dtypes the lossy codecs transform; any other dtype passes through them losslessly."""

_REGISTRY: dict[str, type[Codec]] = {}
_BY_ID: dict[int, type[Codec]] = {}
# Spec tokens: one letter, then the value. "int8c:z3:a-1" == get_codec("int8c", level=3, axis=-1).
_SPEC_KEYS = {"z": "level", "q": "quality", "a": "axis", "s": "shuffle", "d": "step", "b": "cut"}


class Codec(abc.ABC):
    """Turns a tensor into a self-describing payload; ``decode`` turns any payload back.

    Subclasses are frozen dataclasses whose fields are the codec's parameters, so two codecs with the
    same parameters compare equal and ``codec_from_spec(codec.spec) == codec``.

    Attributes:
        name: Registry name, e.g. ``"int8"``.
        lossless: True if every tensor the codec accepts round-trips bit-exactly.
        image_only: True if the codec only accepts image batches (B, C, H, W), i.e. model inputs.
    """

    name: ClassVar[str]
    lossless: ClassVar[bool]
    image_only: ClassVar[bool] = False

    @property
    def codec_id(self) -> int:
        """Wire id written into the payload header."""
        return CODEC_IDS[self.name]

    @property
    def spec(self) -> str:
        """Short text form, e.g. ``"int8:z1"`` or ``"jpeg:q90"``; ``codec_from_spec`` parses it back."""
        return ":".join([self.name, *self._spec_tokens()])

    def __str__(self) -> str:
        return self.spec

    @abc.abstractmethod
    def encode(self, tensor: torch.Tensor) -> bytes:
        """Encodes a tensor into a payload.

        Args:
            tensor: Any strided tensor on any device; it is detached and copied to the CPU.

        Returns:
            A payload that ``decode`` turns back into a tensor of the same shape and dtype.

        Raises:
            CodecError: The codec cannot represent ``tensor`` (e.g. NaN under a quantizing codec).
        """

    def encode_parts(self, tensor: torch.Tensor) -> PayloadParts:
        """What :meth:`encode` returns, as its parts not joined yet (see ``PayloadParts``): for a writer that copies
        the payload anyway. Codecs that join a header and a body override it to skip the join; this default is
        the whole payload as one part.

        Raises:
            CodecError: as :meth:`encode`.
        """
        return PayloadParts((self.encode(tensor),))

    @abc.abstractmethod
    def max_abs_error(self, tensor: torch.Tensor) -> float | None:
        """Bound on ``|decode(encode(tensor)) - tensor|`` over the finite elements of ``tensor``.

        Args:
            tensor: The tensor that would be encoded.

        Returns:
            The bound (0.0 for exact round trips), or None if the codec has no hard bound.

        Raises:
            CodecError: As ``encode`` would for this tensor.
        """

    def decode(self, payload: bytes | bytearray | memoryview, limits: DecodeLimits | None = None) -> torch.Tensor:
        """Same as the module-level ``decode``: the codec is read from the payload, not taken from self."""
        return decode(payload, limits)

    @classmethod
    @abc.abstractmethod
    def decode_parts(cls, header: PayloadHeader, params: memoryview, body: memoryview) -> torch.Tensor:
        """Decodes a payload whose framing ``split_payload`` has validated.

        Raises:
            CodecError: The params or body are malformed or disagree with the header.
        """

    def _spec_tokens(self) -> list[str]:
        tokens = []
        # The first field (level or quality) is always shown, the others only when not the default.
        for i, field in enumerate(dataclasses.fields(self)):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            letter = next(k for k, v in _SPEC_KEYS.items() if v == field.name)
            if i == 0 or value != field.default:
                tokens.append(f"{letter}{int(value)}")
        return tokens


def register(cls: type[Codec]) -> type[Codec]:
    """Class decorator adding a codec to the registry under ``cls.name``."""
    assert cls.name in CODEC_IDS, f"codec {cls.name!r} has no wire id"
    _REGISTRY[cls.name] = cls
    _BY_ID[CODEC_IDS[cls.name]] = cls
    return cls


def get_codec(name: str, **params: Any) -> Codec:
    """Builds a codec by name.

    Args:
        name: One of ``CODEC_NAMES``.
        **params: The codec's parameters: ``level`` (zstd level for the tensor codecs, zlib level for
            png), ``quality`` (jpeg), ``axis`` (int8c), ``shuffle`` (fp16, bf16), ``step`` (dct).

    Returns:
        The codec.

    Raises:
        CodecError: Unknown name, unknown parameter, or a parameter out of range.
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise CodecError(f"unknown codec {name!r}; known: {', '.join(CODEC_NAMES)}")
    allowed = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise CodecError(
            f"codec {name!r} takes no parameter {', '.join(unknown)}; it takes: {', '.join(allowed) or 'none'}"
        )
    return cls(**params)


def codec_from_spec(spec: str) -> Codec:
    """Parses a codec's text form, e.g. ``"int8:z3"``, ``"jpeg:q80"``, ``"int8c:z1:a-1"``.

    Raises:
        CodecError: The spec is malformed or names an unknown codec or parameter.
    """
    name, *tokens = spec.strip().split(":")
    params: dict[str, Any] = {}
    for token in tokens:
        key = _SPEC_KEYS.get(token[:1])
        try:
            value = int(token[1:])
        except ValueError:
            key = None
        if key is None or key in params:
            raise CodecError(
                f"bad codec spec {spec!r}: token {token!r} (expected z<level>, q<quality>, a<axis>, s<0|1>, d<step>, b<cut>)"
            )
        params[key] = bool(value) if key == "shuffle" else value
    return get_codec(name, **params)


def read_header(payload: bytes | bytearray | memoryview, limits: DecodeLimits | None = None) -> PayloadHeader:
    """Validates a payload's header (not its body) and returns it, e.g. to log codec and shape.

    Raises:
        CodecError: The framing is malformed or the declared tensor exceeds ``limits``.
    """
    return split_payload(payload, limits or DEFAULT_LIMITS)[0]


def decode(payload: bytes | bytearray | memoryview, limits: DecodeLimits | None = None) -> torch.Tensor:
    """Decodes any edgeflow payload; the codec is read from its header.

    Args:
        payload: ``bytes``, ``bytearray`` or ``memoryview`` (not copied; the result does not alias it).
        limits: Bounds checked before anything is allocated; ``DecodeLimits()`` if None.

    Returns:
        A new, writable CPU tensor with the shape and dtype that were encoded.

    Raises:
        CodecError: The payload is truncated, corrupt, inconsistent, or exceeds ``limits``; the
            message names the problem and the offending values.
    """
    header, params, body = split_payload(payload, limits or DEFAULT_LIMITS)
    cls = _BY_ID.get(header.codec_id)
    if cls is None:
        raise CodecError(f"a {header.codec_name} payload is a stream residual: it decodes only against its stream's "
                         "reference frame")
    try:
        return cls.decode_parts(header, params, body)
    except (RuntimeError, ValueError, IndexError, OverflowError, struct.error) as e:
        # Every known malformation is checked by name; this net keeps a missed one a CodecError at the
        # trust boundary. The cause stays chained for whoever debugs it.
        raise CodecError(f"malformed {header.codec_name} payload: {type(e).__name__}: {e}") from e


def prepare_tensor(tensor: object, codec: str) -> torch.Tensor:
    """Returns a detached, contiguous CPU copy-or-view of ``tensor`` that any codec can read.

    Raises:
        CodecError: ``tensor`` is not a strided tensor of a dtype the format knows.
    """
    if not isinstance(tensor, torch.Tensor):
        raise CodecError(f"{codec}: expected a torch.Tensor, got {type(tensor).__name__}")
    if tensor.layout != torch.strided:
        raise CodecError(f"{codec}: {tensor.layout} tensors are not supported; call .to_dense() first")
    if tensor.dtype not in DTYPE_CODES:
        raise CodecError(f"{codec}: dtype {tensor.dtype} has no wire code; supported: {sorted(map(str, DTYPE_CODES))}")
    if tensor.device.type == "meta":
        raise CodecError(f"{codec}: meta tensors have no data")
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    return t.resolve_conj().resolve_neg().contiguous()
