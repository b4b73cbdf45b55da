"""Affine (min/max) quantization: ``int8``, ``int8c`` (per channel), ``int4``, ``int2``; then zstd.

Encoding maps each float to ``q = round((x - min) / scale)`` in ``0..L`` with ``L = 2**bits - 1`` and
``scale = (max - min) / L`` (rounded up to float32, at least 2^-126 when max > min), packs ``8 / bits``
values per byte (first value in the low bits) and compresses. Decoding computes ``min + q * scale``.
min and max are taken over the whole tensor (int8, int4, int2) or per channel along ``axis``
(int8c; dim 1 by default, i.e. C of (B, C, H, W) and T of (B, T, D) token tensors). Post-ReLU
tensors have min 0, so their zeros decode to exactly 0.

Error bound, per tensor or channel: ``scale / 2 + amax * (16 * 2^-24 + u_out) + s_out`` where amax is
max(|min|, |max|), the 16 float32 roundings cover quantize and dequantize arithmetic, and ``u_out``,
``s_out`` the cast back to fp16 (2^-11, 2^-25) or bf16 (2^-8, 2^-134), 0 for float32/float64.

NaN or Inf inputs (and float64 values beyond float32 range) are refused with CodecError. Tensors of
non-float dtypes (ints, bool, complex, float8) pass through losslessly: their payload is a ``lossless``
one and their bound is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from edgeflow.core.codecs import _zstd
from edgeflow.core.codecs.base import FLOAT_DTYPES, Codec, prepare_tensor, register
from edgeflow.core.codecs.format import PayloadHeader, PayloadParts, pack_payload_parts
from edgeflow.core.codecs.lossless import LosslessCodec
from edgeflow.errors import CodecError

__all__ = ["Int8Codec", "Int8cCodec", "Int4Codec", "Int2Codec", "pack_bits", "unpack_bits"]

_F32_MAX = float(torch.finfo(torch.float32).max)
_F32_MIN_NORMAL = 2.0**-126
_F32_ROUNDINGS = 16 * 2.0**-24
_WHOLE_TENSOR = 255  # int8c axis byte meaning "one channel: the whole tensor" (tensors with ndim < 2)
_OUT_ROUNDING = {  # (unit roundoff, half smallest subnormal) of the cast from float32 to the output
    torch.float32: (0.0, 0.0),
    torch.float64: (0.0, 0.0),
    torch.float16: (2.0**-11 * (1 + 2.0**-10), 2.0**-25),
    torch.bfloat16: (2.0**-8 * (1 + 2.0**-10), 2.0**-134),
}


def pack_bits(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Packs uint8 values < 2**bits, ``8 // bits`` per byte, first value in the low bits.

    Args:
        q: 1-D uint8 tensor.
        bits: 1, 2, 4 or 8.

    Returns:
        1-D uint8 tensor of ``ceil(len(q) * bits / 8)`` bytes (zero padded).
    """
    per = 8 // bits
    if per == 1:
        return q
    pad = (-q.numel()) % per
    if pad:
        q = torch.cat([q, q.new_zeros(pad)])
    q = q.view(-1, per)  # (M, per)
    out = q[:, 0].clone()
    for i in range(1, per):
        out |= q[:, i] << (bits * i)
    return out


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``numel`` values of a 1-D uint8 tensor."""
    per = 8 // bits
    if per == 1:
        return packed[:numel]
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)  # (per,)
    out = (packed.unsqueeze(1) >> shifts).bitwise_and_((1 << bits) - 1)  # (M, per)
    return out.view(-1)[:numel]


@dataclass(frozen=True)
class _AffineCodec(Codec):
    """Shared implementation; subclasses set ``bits`` and whether min/max are per channel.

    Args:
        level: zstd level (-7..22, not 0).
    """

    level: int = 1

    lossless = False
    bits: ClassVar[int]

    def __post_init__(self) -> None:
        _zstd.check_level(self.level)

    @property
    def levels(self) -> int:
        """Largest quantized value, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    def encode(self, tensor: torch.Tensor) -> bytes:
        return self.encode_parts(tensor).join()

    def encode_parts(self, tensor: torch.Tensor) -> PayloadParts:
        t = prepare_tensor(tensor, self.name)
        if t.dtype not in FLOAT_DTYPES:
            return LosslessCodec(self.level).encode_parts(t)
        x = t.float()
        axis = self._channel_axis(x)
        mins, scales = self._stats(x, axis)
        q = _quantize(x, mins, scales, axis, self.levels)
        body = _zstd.compress(pack_bits(q, self.bits).numpy(), self.level)
        params = self._params(axis, mins, scales)
        return pack_payload_parts(self.codec_id, t.dtype, tuple(t.shape), params, body)

    def max_abs_error(self, tensor: torch.Tensor) -> float:
        t = prepare_tensor(tensor, self.name)
        if t.dtype not in FLOAT_DTYPES:
            return 0.0
        x = t.float()
        mins, scales = self._stats(x, self._channel_axis(x))
        return _bound(mins, scales, self.levels, t.dtype)

    def _channel_axis(self, x: torch.Tensor) -> int | None:
        return None

    def _params(self, axis: int | None, mins: np.ndarray, scales: np.ndarray) -> bytes:
        return mins.astype("<f4").tobytes() + scales.astype("<f4").tobytes()

    def _stats(self, x: torch.Tensor, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel float32 (mins, scales) of shape (C,); C = 1 without an axis.

        The per-channel parameters are tiny, so they are computed in numpy: a torch op costs ~5 us.
        """
        channels = 1 if axis is None else x.shape[axis]
        if x.numel() == 0:
            return np.zeros(channels, np.float32), np.zeros(channels, np.float32)
        if axis is None:
            mn, mx = torch.aminmax(x)
            mins, maxs = np.array([mn.item()], np.float32), np.array([mx.item()], np.float32)
        else:
            dims = tuple(d for d in range(x.ndim) if d != axis)
            mins, maxs = x.amin(dim=dims).numpy(), x.amax(dim=dims).numpy()
        if not (np.isfinite(mins).all() and np.isfinite(maxs).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise CodecError(
                f"{self.name}: tensor has {bad} NaN/Inf values (or float64 values beyond float32 range); "
                "a quantizing codec cannot encode them, use lossless, fp16 or bf16"
            )
        spread = maxs.astype(np.float64) - mins
        exact = spread / self.levels
        scales = exact.astype(np.float32)
        scales = np.where(scales < exact, np.nextafter(scales, np.float32(np.inf)), scales)  # round up
        scales = np.where(spread > 0, np.maximum(scales, np.float32(_F32_MIN_NORMAL)), np.float32(0))
        return mins.astype(np.float32), scales.astype(np.float32)

    @classmethod
    def decode_parts(cls, header: PayloadHeader, params: memoryview, body: memoryview) -> torch.Tensor:
        what = f"{cls.name} body of shape {header.shape}"
        if header.dtype not in FLOAT_DTYPES:
            raise CodecError(f"{cls.name} payload declares dtype {header.dtype}; {cls.name} only encodes floats")
        axis, mins, scales = cls._parse_params(header, params)
        levels = (1 << cls.bits) - 1
        _check_params(cls.name, mins, scales, levels)
        numel = header.numel
        packed = _zstd.decompress_exact(body, -(-numel * cls.bits // 8), what)
        q = unpack_bits(packed, cls.bits, numel)
        return _dequantize(q, header.shape, mins, scales, axis, levels, header.dtype)

    @classmethod
    def _parse_params(
        cls, header: PayloadHeader, params: memoryview
    ) -> tuple[int | None, np.ndarray, np.ndarray]:
        if len(params) != 8:
            raise CodecError(f"{cls.name} params must be 8 bytes (min, scale as float32), got {len(params)}")
        values = np.frombuffer(params, dtype="<f4").astype(np.float32)
        return None, values[:1], values[1:]


def _quantize(x: torch.Tensor, mins: np.ndarray, scales: np.ndarray, axis: int | None, levels: int) -> torch.Tensor:
    """Returns 1-D uint8 ``round((x - min) / scale)`` clamped to 0..levels."""
    scales64 = scales.astype(np.float64)
    inv = np.divide(1.0, scales64, out=np.zeros_like(scales64), where=scales64 > 0)  # <= 2^126
    offset = mins * inv
    # x * inv - min * inv rather than (x - min) * inv: x - min may overflow float32, the products cannot.
    q = x * _broadcast(inv.astype(np.float32), x.ndim, axis)
    q.sub_(_broadcast(offset.astype(np.float32), x.ndim, axis)).round_().clamp_(0, levels)
    return q.to(torch.uint8).reshape(-1)


def _dequantize(
    q: torch.Tensor,
    shape: tuple[int, ...],
    mins: np.ndarray,
    scales: np.ndarray,
    axis: int | None,
    levels: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Returns ``min + q * scale`` of the given shape and dtype (a new tensor)."""
    # Extreme ranges (|min| or L * scale beyond 2^126) would overflow float32 arithmetic.
    wide = bool(mins.size) and (np.abs(mins).max() > 2.0**126 or scales.max() * float(levels) > 2.0**126)
    compute = torch.float64 if wide else torch.float32
    y = q.to(compute).reshape(shape)
    y.mul_(_broadcast(scales, len(shape), axis, compute)).add_(_broadcast(mins, len(shape), axis, compute))
    if wide:
        y.clamp_(-_F32_MAX, _F32_MAX)  # scale was rounded up: the top level may exceed max by an ulp
    return y.to(dtype)


def _broadcast(
    v: np.ndarray, ndim: int, axis: int | None, dtype: torch.dtype = torch.float32
) -> torch.Tensor | float:
    """A per-tensor value as a Python float, per-channel values as a tensor shaped to broadcast on axis."""
    if axis is None:
        return float(v[0]) if v.size else 0.0
    shape = [1] * ndim
    shape[axis] = -1
    return torch.from_numpy(v).to(dtype).view(shape)


def _bound(mins: np.ndarray, scales: np.ndarray, levels: int, dtype: torch.dtype) -> float:
    if mins.size == 0:
        return 0.0
    lo = mins.astype(np.float64)
    hi = lo + levels * scales.astype(np.float64)
    amax = np.maximum(np.abs(lo), np.abs(hi))
    u_out, s_out = _OUT_ROUNDING[dtype]
    per_channel = scales.astype(np.float64) / 2 + amax * (_F32_ROUNDINGS + u_out) + s_out + 2.0**-140
    return float(per_channel.max())


def _check_params(name: str, mins: np.ndarray, scales: np.ndarray, levels: int) -> None:
    if mins.size == 0:
        return
    if not (np.isfinite(mins).all() and np.isfinite(scales).all()):
        raise CodecError(f"{name} params are not finite: min {mins[:8].tolist()}, scale {scales[:8].tolist()}")
    if (scales < 0).any():
        raise CodecError(f"{name} params hold a negative scale: {scales[scales < 0][:8].tolist()}")
    top = mins.astype(np.float64) + levels * scales.astype(np.float64)
    if np.abs(top).max() > _F32_MAX * (1 + 2.0**-20):
        raise CodecError(f"{name} params decode beyond float32 range: min + {levels} * scale = {top.max():g}")


@register
@dataclass(frozen=True)
class Int8Codec(_AffineCodec):
    """8-bit affine quantization with one (min, scale) per tensor. See the module docstring."""

    name = "int8"
    bits = 8


@register
@dataclass(frozen=True)
class Int4Codec(_AffineCodec):
    """4-bit affine quantization per tensor, two values per byte. See the module docstring."""

    name = "int4"
    bits = 4


@register
@dataclass(frozen=True)
class Int2Codec(_AffineCodec):
    """2-bit affine quantization per tensor, four values per byte. See the module docstring."""

    name = "int2"
    bits = 2


@register
@dataclass(frozen=True)
class Int8cCodec(_AffineCodec):
    """8-bit affine quantization with one (min, scale) per channel along ``axis``.

    Tensors with fewer than 2 dims are quantized as one channel. Params cost 8 bytes per channel.

    Args:
        level: zstd level (-7..22, not 0).
        axis: Channel dimension (negative counts from the end); dim 1 is C of (B, C, H, W) and the
            token dim of (B, T, D).
    """

    axis: int = 1

    name = "int8c"
    bits = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise CodecError(f"int8c: axis must be an int, got {self.axis!r}")

    def _channel_axis(self, x: torch.Tensor) -> int | None:
        if x.ndim < 2:
            return None
        axis = self.axis + x.ndim if self.axis < 0 else self.axis
        if not 0 <= axis < x.ndim:
            raise CodecError(f"int8c: axis {self.axis} out of range for a tensor of shape {tuple(x.shape)}")
        return axis

    def _params(self, axis: int | None, mins: np.ndarray, scales: np.ndarray) -> bytes:
        return bytes([_WHOLE_TENSOR if axis is None else axis]) + super()._params(axis, mins, scales)

    @classmethod
    def _parse_params(
        cls, header: PayloadHeader, params: memoryview
    ) -> tuple[int | None, np.ndarray, np.ndarray]:
        if len(params) < 1:
            raise CodecError("int8c params are empty; expected an axis byte then (min, scale) per channel")
        axis_byte, ndim = params[0], len(header.shape)
        if axis_byte == _WHOLE_TENSOR:
            axis, channels = None, 1
        elif ndim >= 2 and axis_byte < ndim:
            axis, channels = axis_byte, header.shape[axis_byte]
        else:
            raise CodecError(f"int8c params name axis {axis_byte}, invalid for shape {header.shape}")
        if len(params) != 1 + 8 * channels:
            raise CodecError(
                f"int8c params are {len(params)} bytes; {channels} channels need {1 + 8 * channels}"
            )
        values = np.frombuffer(params[1:], dtype="<f4").astype(np.float32)
        return axis, values[:channels], values[channels:]
