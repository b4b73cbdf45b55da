"""Wire format of a tensor payload: a small checksummed header, codec params, then the body.

Layout (little-endian)::

    offset  size    field
    0       4       magic b"EFTC"
    4       1       format version (1)
    5       1       codec id (CODEC_IDS)
    6       1       dtype code of the tensor as encoded (DTYPE_CODES)
    7       1       ndim (<= MAX_NDIM)
    8       4       params_nbytes (u32): codec parameters, e.g. scales and zero points
    12      8       body_nbytes (u64)
    20      4       CRC-32 of bytes [0:20] followed by the shape and params
    24      8*ndim  shape (i64 each)
    ..      params_nbytes   params
    ..      body_nbytes     body (a zstd frame with content checksum, or image files)

The payload must be exactly as long as the header says. The header CRC catches corruption of the
shape and params (which would otherwise decode to a plausible tensor of the wrong shape or scale); the
body carries its own check (zstd content checksum, or a CRC per image in the params).

Codec ids and dtype codes are part of the format: never renumber them, only append.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import torch

from edgeflow.errors import CodecError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "HEADER_NBYTES",
    "MAX_NDIM",
    "CODEC_IDS",
    "DTYPE_CODES",
    "DecodeLimits",
    "DEFAULT_LIMITS",
    "PayloadHeader",
    "PayloadParts",
    "as_byte_view",
    "pack_payload",
    "pack_payload_parts",
    "split_payload",
]

MAGIC = b"EFTC"
FORMAT_VERSION = 1
MAX_NDIM = 32
_FIXED = struct.Struct("<4sBBBBIQ")  # magic, version, codec id, dtype code, ndim, params_nbytes, body_nbytes
_CRC = struct.Struct("<I")
HEADER_NBYTES = _FIXED.size + _CRC.size  # 24: fixed part, without shape and params

CODEC_IDS: dict[str, int] = {
    "lossless": 1,
    "fp16": 2,
    "bf16": 3,
    "int8": 4,
    "int8c": 5,
    "int4": 6,
    "int2": 7,
    "png": 8,
    "jpeg": 9,
    "delta": 10,  # a stream frame's residual against its reference (delta.py): decoded only with that reference
    "dct": 11,
    "learned": 12,  # a trained bottleneck shipped in an artifact (learned.py)
}
_CODEC_NAMES_BY_ID = {v: k for k, v in CODEC_IDS.items()}


def _dtype_codes() -> dict[torch.dtype, int]:
    names = [  # position + 1 is the wire code; append only
        "float32", "float16", "bfloat16", "float64", "uint8", "int8", "int16", "int32", "int64",
        "bool", "complex64", "complex128", "complex32", "uint16", "uint32", "uint64",
        "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz",
    ]  # fmt: skip
    return {getattr(torch, n): i + 1 for i, n in enumerate(names) if hasattr(torch, n)}


DTYPE_CODES: dict[torch.dtype, int] = _dtype_codes()
_DTYPES_BY_CODE = {v: k for k, v in DTYPE_CODES.items()}


@dataclass(frozen=True)
class DecodeLimits:
    """Upper bounds a decoder enforces before it allocates anything.

    The defaults admit any activation or image batch of realistic size (a 224x224 ResNet stage is
    ~0.8 M elements) while refusing a payload that asks for more than 1 GiB.

    Attributes:
        max_elements: Largest number of elements a decoded tensor may have.
        max_bytes: Largest size in bytes of a decoded tensor (elements times item size).
    """

    max_elements: int = 256 * 2**20
    max_bytes: int = 2**30

    def __post_init__(self) -> None:
        for field in ("max_elements", "max_bytes"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise CodecError(f"DecodeLimits.{field} must be an int >= 0, got {value!r}")


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class PayloadHeader:
    """The validated header of a payload.

    Attributes:
        codec_id: Wire id of the codec that wrote the body.
        codec_name: Name of that codec, e.g. ``"int8"``.
        dtype: dtype of the tensor as encoded (and as decoded).
        shape: Shape of the tensor.
        params_nbytes: Size of the codec-parameter section.
        body_nbytes: Size of the body.
    """

    codec_id: int
    codec_name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    params_nbytes: int
    body_nbytes: int

    @property
    def numel(self) -> int:
        """Number of elements of the decoded tensor."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Size in bytes of the decoded tensor."""
        return self.numel * _itemsize(self.dtype)

    @property
    def payload_nbytes(self) -> int:
        """Total size of the payload this header describes."""
        return HEADER_NBYTES + 8 * len(self.shape) + self.params_nbytes + self.body_nbytes


def _itemsize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def as_byte_view(payload: object) -> memoryview:
    """Returns a flat, read-only byte view of a bytes-like payload without copying.

    Raises:
        CodecError: ``payload`` is not a contiguous bytes-like object.
    """
    if isinstance(payload, str):
        raise CodecError("payload must be bytes-like, got str")
    try:
        view = memoryview(payload)  # type: ignore[arg-type]
        if view.ndim != 1 or view.itemsize != 1 or view.format not in ("B", "b", "c"):
            view = view.cast("B")
    except TypeError as e:
        raise CodecError(f"payload must be a contiguous bytes-like object, got {type(payload).__name__}: {e}") from None
    return view.toreadonly()


@dataclass(frozen=True)
class PayloadParts:
    """A payload as the buffers that make it, in order, not joined yet: ``join()`` is the payload's bytes.

    Whoever copies a payload anyway takes its parts and saves the copy a join makes: the transport writes them
    straight into the message it sends (``edgeflow.transport.wire.frame``), so a hop's body is copied once after
    the codec made it instead of twice (a 10 MB body: ~0.5-1 ms per copy on the reference VM).

    Attributes:
        parts: the header (with shape and params) and the body, as views of the codec's own buffers.
    """

    parts: tuple[bytes | memoryview, ...]

    @property
    def nbytes(self) -> int:
        """Size of the payload."""
        return sum(memoryview(p).nbytes for p in self.parts)

    def join(self) -> bytes:
        """The payload's bytes (one copy)."""
        return b"".join(self.parts)


def pack_payload_parts(
    codec_id: int, dtype: torch.dtype, shape: tuple[int, ...], params: bytes, body: object
) -> PayloadParts:
    """What :func:`pack_payload` returns, as its header and body not joined yet (the body not copied).

    Args: as :func:`pack_payload`.
    """
    body_view = memoryview(body).cast("B")  # type: ignore[arg-type]
    shape_bytes = struct.pack(f"<{len(shape)}q", *shape)
    fixed = _FIXED.pack(MAGIC, FORMAT_VERSION, codec_id, DTYPE_CODES[dtype], len(shape), len(params), body_view.nbytes)
    crc = zlib.crc32(params, zlib.crc32(shape_bytes, zlib.crc32(fixed)))
    return PayloadParts((b"".join((fixed, _CRC.pack(crc), shape_bytes, params)), body_view))


def pack_payload(
    codec_id: int, dtype: torch.dtype, shape: tuple[int, ...], params: bytes, body: object
) -> bytes:
    """Frames ``params`` and ``body`` with a header; the only way payloads are built.

    Args:
        codec_id: Wire id from ``CODEC_IDS``.
        dtype: dtype recorded in the header (what ``decode`` returns).
        shape: Shape recorded in the header.
        params: Codec parameters.
        body: Body bytes (any bytes-like object).

    Returns:
        The payload.
    """
    return pack_payload_parts(codec_id, dtype, shape, params, body).join()


def split_payload(payload: object, limits: DecodeLimits) -> tuple[PayloadHeader, memoryview, memoryview]:
    """Validates a payload's framing and limits and splits it without copying.

    Checks, in order: length of the fixed header, magic, version, ndim, exact total length, header CRC,
    codec id, dtype code, shape (non-negative), and the decoded size against ``limits``. Nothing is
    allocated in proportion to the declared size.

    Args:
        payload: ``bytes``, ``bytearray`` or ``memoryview``.
        limits: Bounds on the decoded tensor.

    Returns:
        ``(header, params, body)``, the last two as views into ``payload``.

    Raises:
        CodecError: The payload is malformed, truncated, corrupt, or exceeds ``limits``.
    """
    view = as_byte_view(payload)
    size = view.nbytes
    if size < HEADER_NBYTES:
        raise CodecError(f"truncated payload: {size} bytes, the fixed header alone is {HEADER_NBYTES}")
    magic, version, codec_id, dtype_code, ndim, params_nbytes, body_nbytes = _FIXED.unpack_from(view, 0)
    if magic != MAGIC:
        raise CodecError(f"not an edgeflow tensor payload: magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported payload format version {version}; this build reads {FORMAT_VERSION}")
    if ndim > MAX_NDIM:
        raise CodecError(f"header declares ndim {ndim}, more than the maximum {MAX_NDIM}")
    params_start = HEADER_NBYTES + 8 * ndim
    body_start = params_start + params_nbytes
    declared = body_start + body_nbytes
    if size != declared:
        what = "truncated" if size < declared else "trailing bytes after the body"
        raise CodecError(
            f"{what}: payload is {size} bytes but its header declares {declared} "
            f"({HEADER_NBYTES} header + {8 * ndim} shape + {params_nbytes} params + {body_nbytes} body)"
        )
    (crc_stored,) = _CRC.unpack_from(view, _FIXED.size)
    crc = zlib.crc32(view[HEADER_NBYTES:body_start], zlib.crc32(view[: _FIXED.size]))
    if crc != crc_stored:
        raise CodecError(f"corrupt header: CRC-32 is {crc:#010x}, header says {crc_stored:#010x}")
    codec_name = _CODEC_NAMES_BY_ID.get(codec_id)
    if codec_name is None:
        raise CodecError(f"unknown codec id {codec_id}; known: {sorted(_CODEC_NAMES_BY_ID)}")
    dtype = _DTYPES_BY_CODE.get(dtype_code)
    if dtype is None:
        raise CodecError(f"unknown dtype code {dtype_code}; known: {sorted(_DTYPES_BY_CODE)}")
    shape = struct.unpack_from(f"<{ndim}q", view, HEADER_NBYTES)
    if any(d < 0 for d in shape):
        raise CodecError(f"header declares a negative dimension: shape {shape}")
    header = PayloadHeader(codec_id, codec_name, dtype, shape, params_nbytes, body_nbytes)
    numel = header.numel
    if numel > limits.max_elements:
        raise CodecError(f"shape {shape} has {numel} elements, over the limit of {limits.max_elements}")
    spread = math.prod(max(d, 1) for d in shape)  # an empty tensor may not have absurd other dims either
    if spread > limits.max_elements:
        raise CodecError(
            f"shape {shape} is absurd: its non-zero dims span {spread} elements, "
            f"over the limit of {limits.max_elements}"
        )
    if header.nbytes > limits.max_bytes:
        raise CodecError(
            f"shape {shape} of {dtype} needs {header.nbytes} bytes, over the limit of {limits.max_bytes}"
        )
    return header, view[params_start:body_start], view[body_start:]
