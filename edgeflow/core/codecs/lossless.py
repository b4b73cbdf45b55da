"""``lossless``: zstd over the tensor's native bytes. Any dtype, bit-exact (NaN payloads included)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgeflow.core.codecs import _zstd
from edgeflow.core.codecs.base import Codec, prepare_tensor, register
from edgeflow.core.codecs.format import PayloadHeader, PayloadParts, pack_payload_parts
from edgeflow.errors import CodecError

__all__ = ["LosslessCodec", "raw_bytes"]


def raw_bytes(t: torch.Tensor) -> torch.Tensor:
    """The native bytes of a contiguous CPU tensor as a 1-D uint8 view (no copy)."""
    if t.numel() == 0:  # empty tensors may carry strides that view() rejects
        return torch.empty(0, dtype=torch.uint8)
    return t.reshape(-1).view(torch.uint8)


@register
@dataclass(frozen=True)
class LosslessCodec(Codec):
    """zstd over the raw little-endian bytes of any dtype; ``max_abs_error`` is 0.

    Args:
        level: zstd level (-7..22, not 0). Speeds per level: ``benchmarks/bench_codecs.py``.
    """

    level: int = 1

    name = "lossless"
    lossless = True

    def __post_init__(self) -> None:
        _zstd.check_level(self.level)

    def encode(self, tensor: torch.Tensor) -> bytes:
        return self.encode_parts(tensor).join()

    def encode_parts(self, tensor: torch.Tensor) -> PayloadParts:
        t = prepare_tensor(tensor, self.name)
        body = _zstd.compress(raw_bytes(t).numpy(), self.level)
        return pack_payload_parts(self.codec_id, t.dtype, tuple(t.shape), b"", body)

    def max_abs_error(self, tensor: torch.Tensor) -> float:
        prepare_tensor(tensor, self.name)  # same acceptance as encode
        return 0.0

    @classmethod
    def decode_parts(cls, header: PayloadHeader, params: memoryview, body: memoryview) -> torch.Tensor:
        if len(params):
            raise CodecError(f"lossless payload has {len(params)} bytes of params; expected none")
        raw = _zstd.decompress_exact(body, header.nbytes, f"lossless {header.dtype} body of shape {header.shape}")
        if header.dtype == torch.bool and header.numel and int(raw.max()) > 1:
            raise CodecError(f"lossless bool body holds byte value {int(raw.max())}; bools must be 0 or 1")
        return raw.view(header.dtype).reshape(header.shape)
