"""``delta``: a stream frame coded as the residual against the previous frame's reconstruction.

A stream's frames give nearly identical activations. The sender codes frame k as ``x_k - r_{k-1}``, where
``r_{k-1}`` is what the receiver *decoded* for the frame before (its reconstruction, not the sender's own exact
values), so quantization errors never accumulate: both ends hold the same ``r`` after every frame.

Two residual kinds, per tensor:

- **quantized** (lossy hops, float tensors): ``q = round((x - r) / step)`` as int8 or int16, zstd. ``step`` is
  fixed at the stream's key frame from the hop codec's own resolution (int8: the key frame's min/max scale, per
  channel for int8c; fp16/bf16: ``2 * max|x| * u``), so every frame keeps the hop codec's error bound ``step / 2``
  (plus float rounding): equal fidelity to coding each frame on its own. Reconstruction: ``r + q * step`` in
  float32, cast to the tensor's dtype, computed by :func:`apply_residual` on both ends.
- **xor** (lossless hops, and any non-float tensor): the bytes of ``x`` XOR the bytes of ``r``, zstd; bit-exact.

Key frames are ordinary payloads of the hop codec; this module codes the frames between them. A residual that
would not fit int16 (:func:`encode_residual` returns None) means the sender sends a key frame instead.

Payload: the usual header (codec id 10, dtype and shape of the *decoded* tensor), params
``<BBBB q q`` (kind, bytes per residual element, axis or 255, step count) + frame + base frame, then the steps
(float64 each, quantized only), body: one zstd frame of the residual. :func:`decode` (stateless) refuses it:
only :func:`decode_residual`, given the reference, decodes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import torch

from edgeflow.core.codecs import _zstd
from edgeflow.core.codecs.base import FLOAT_DTYPES, Codec, prepare_tensor
from edgeflow.core.codecs.format import CODEC_IDS, DecodeLimits, PayloadHeader, pack_payload, split_payload
from edgeflow.core.codecs.lossless import raw_bytes
from edgeflow.errors import CodecError

__all__ = [
    "DELTA",
    "STREAM_CODECS",
    "DeltaInfo",
    "apply_residual",
    "decode_residual",
    "encode_residual",
    "is_delta",
    "read_delta_info",
    "residual_steps",
]

DELTA = "delta"
"""Codec name of a residual payload (``parameters["codec"]`` of a delta-coded tensor)."""

STREAM_CODECS = frozenset({"lossless", "int8", "int8c", "int4", "int2", "fp16", "bf16"})
"""Hop codecs whose frames can be delta coded (image codecs code every frame on its own)."""

QUANTIZED, XOR = 0, 1
_PARAMS = struct.Struct("<BBBBqq")  # kind, residual bytes per element, axis (255: none), step count, frame, base
_NO_AXIS = 255
_MAX_STEPS = 1 << 16
_UNIT_ROUNDOFF = {"fp16": 2.0**-11, "bf16": 2.0**-8}
_INT_OF_WIDTH = {1: torch.int8, 2: torch.int16}


@dataclass(frozen=True)
class DeltaInfo:
    """What a residual payload says about itself, read without its reference.

    Attributes:
        frame: the frame it codes.
        base: the frame whose reconstruction it is the residual against.
        kind: ``QUANTIZED`` or ``XOR``.
        header: the validated payload header (dtype and shape of the decoded tensor).
    """

    frame: int
    base: int
    kind: int
    header: PayloadHeader


def is_delta(payload: object) -> bool:
    """True if ``payload`` carries the delta codec id (nothing else is checked)."""
    view = memoryview(payload)  # type: ignore[arg-type]
    return view.nbytes > 5 and view[5] == CODEC_IDS[DELTA]


def residual_steps(codec: Codec, key: torch.Tensor) -> tuple[np.ndarray | None, int | None]:
    """The quantization steps a stream keeps from its key frame ``key`` coded with ``codec``.

    Returns:
        ``(steps, axis)``: float64 steps (one, or one per channel along ``axis``) whose half is the codec's own
        error bound at that key frame; ``(None, None)`` for an exact (xor) residual: lossless codecs and tensors a
        lossy codec passes through losslessly.

    Raises:
        CodecError: ``codec`` is not one of ``STREAM_CODECS``.
    """
    if codec.name not in STREAM_CODECS:
        raise CodecError(f"{codec.name} frames cannot be delta coded; stream codecs: {sorted(STREAM_CODECS)}")
    t = prepare_tensor(key, codec.name)
    if codec.lossless or t.dtype not in FLOAT_DTYPES:
        return None, None
    x = t.float()
    if codec.name in _UNIT_ROUNDOFF:
        amax = float(x.abs().max()) if x.numel() else 0.0
        steps, axis = np.array([2.0 * amax * _UNIT_ROUNDOFF[codec.name]]), None
    else:
        axis = codec._channel_axis(x)  # type: ignore[attr-defined]  # the affine codecs
        _, scales = codec._stats(x, axis)  # type: ignore[attr-defined]
        steps = scales.astype(np.float64)
    positive = steps[steps > 0]
    # a constant channel at the key frame has no scale of its own: borrow the coarsest other one
    fill = float(positive.max()) if positive.size else 2.0**-20
    return np.where(steps > 0, steps, fill), axis


def _broadcast(steps: np.ndarray, ndim: int, axis: int | None) -> torch.Tensor | float:
    if axis is None:
        return float(steps[0])
    shape = [1] * ndim
    shape[axis] = -1
    return torch.from_numpy(steps.astype(np.float32)).view(shape)


def apply_residual(reference: torch.Tensor, q: torch.Tensor, steps: np.ndarray, axis: int | None) -> torch.Tensor:
    """``reference + q * steps`` in float32, cast to the reference's dtype: the reconstruction both ends compute."""
    y = q.to(torch.float32).reshape(reference.shape)
    y.mul_(_broadcast(steps, reference.ndim, axis)).add_(reference.to(torch.float32))
    return y.to(reference.dtype)


def encode_residual(
    value: torch.Tensor,
    reference: torch.Tensor,
    *,
    steps: np.ndarray | None,
    axis: int | None,
    frame: int,
    base: int,
    level: int = 1,
) -> tuple[bytes, torch.Tensor] | None:
    """Code ``value`` (frame ``frame``) against ``reference`` (the reconstruction of frame ``base``).

    Args:
        value: the frame's tensor.
        reference: the receiver's reconstruction of frame ``base``: same shape and dtype.
        steps, axis: from :func:`residual_steps` at the stream's key frame (None: exact xor residual).
        frame, base: frame numbers written into the payload (the receiver checks ``base``).
        level: zstd level.

    Returns:
        ``(payload, reconstruction)``, the reconstruction being exactly what :func:`decode_residual` yields;
        None if the residual does not fit int16 steps (send a key frame).

    Raises:
        CodecError: shapes or dtypes differ, or the value holds NaN/Inf under a quantized residual.
    """
    x = prepare_tensor(value, DELTA)
    ref = prepare_tensor(reference, DELTA)
    if x.shape != ref.shape or x.dtype != ref.dtype:
        raise CodecError(f"delta: frame is {x.dtype} {list(x.shape)}, its reference {ref.dtype} {list(ref.shape)}")
    _zstd.check_level(level)
    if steps is None:
        body = torch.bitwise_xor(raw_bytes(x), raw_bytes(ref))
        params = _PARAMS.pack(XOR, 1, _NO_AXIS, 0, frame, base)
        payload = pack_payload(CODEC_IDS[DELTA], x.dtype, tuple(x.shape), params, _zstd.compress(body.numpy(), level))
        return payload, x.clone()
    if x.dtype not in FLOAT_DTYPES:
        raise CodecError(f"delta: a quantized residual needs a float tensor, got {x.dtype}")
    r = x.to(torch.float32) - ref.to(torch.float32)
    q = r.mul_(_broadcast(1.0 / steps, x.ndim, axis)).round_()
    if not bool(torch.isfinite(q).all()):
        raise CodecError("delta: frame holds NaN/Inf values; a quantized residual cannot code them")
    peak = float(q.abs().max()) if q.numel() else 0.0
    if peak > 32767:
        return None
    width = 1 if peak <= 127 else 2
    qi = q.to(_INT_OF_WIDTH[width])
    params = _PARAMS.pack(QUANTIZED, width, _NO_AXIS if axis is None else axis, len(steps), frame, base)
    params += steps.astype("<f8").tobytes()
    body = _zstd.compress(raw_bytes(qi).numpy(), level)
    payload = pack_payload(CODEC_IDS[DELTA], x.dtype, tuple(x.shape), params, body)
    return payload, apply_residual(ref, qi, steps, axis)


def _parse(payload: object, limits: DecodeLimits) -> tuple[DeltaInfo, int, int | None, np.ndarray, memoryview]:
    header, params, body = split_payload(payload, limits)
    if header.codec_name != DELTA:
        raise CodecError(f"not a delta payload: codec {header.codec_name}")
    if len(params) < _PARAMS.size:
        raise CodecError(f"delta params are {len(params)} bytes, at least {_PARAMS.size} expected")
    kind, width, axis_byte, count, frame, base = _PARAMS.unpack_from(params, 0)
    if kind not in (QUANTIZED, XOR):
        raise CodecError(f"delta params name residual kind {kind}; known: {QUANTIZED} quantized, {XOR} xor")
    if frame < 0 or base < 0 or base >= frame:
        raise CodecError(f"delta payload codes frame {frame} against frame {base}: the base must be an earlier frame")
    ndim = len(header.shape)
    if kind == XOR:
        if width != 1 or axis_byte != _NO_AXIS or count != 0 or len(params) != _PARAMS.size:
            raise CodecError(f"xor delta params malformed: width {width}, axis {axis_byte}, {count} steps")
        return DeltaInfo(frame, base, kind, header), width, None, np.zeros(0), body
    if header.dtype not in FLOAT_DTYPES:
        raise CodecError(f"quantized delta payload declares dtype {header.dtype}; only floats are quantized")
    if width not in _INT_OF_WIDTH:
        raise CodecError(f"delta residual width {width} bytes; 1 or 2 expected")
    if axis_byte == _NO_AXIS:
        axis, channels = None, 1
    elif axis_byte < ndim:
        axis, channels = axis_byte, header.shape[axis_byte]
    else:
        raise CodecError(f"delta params name axis {axis_byte}, invalid for shape {header.shape}")
    if count != channels or count > _MAX_STEPS or len(params) != _PARAMS.size + 8 * count:
        raise CodecError(f"delta params hold {count} steps in {len(params)} bytes; shape {header.shape} needs {channels}")
    steps = np.frombuffer(params[_PARAMS.size :], dtype="<f8").astype(np.float64)
    if not (np.isfinite(steps).all() and (steps > 0).all() and steps.max() < 2.0**100):
        raise CodecError(f"delta steps must be finite and positive, got {steps[:8].tolist()}")
    return DeltaInfo(frame, base, kind, header), width, axis, steps, body


def read_delta_info(payload: object, limits: DecodeLimits | None = None) -> DeltaInfo:
    """Frame, base frame and header of a residual payload, validated, without decoding its body.

    Raises:
        CodecError: not a delta payload, or its framing or params are malformed.
    """
    return _parse(payload, limits or DecodeLimits())[0]


def decode_residual(payload: object, reference: torch.Tensor, limits: DecodeLimits | None = None) -> torch.Tensor:
    """The reconstruction of a frame from its residual payload and the reference it was coded against.

    Raises:
        CodecError: malformed or corrupt payload, or one whose dtype/shape differ from the reference's.
    """
    info, width, axis, steps, body = _parse(payload, limits or DecodeLimits())
    h = info.header
    ref = prepare_tensor(reference, DELTA)
    if tuple(ref.shape) != h.shape or ref.dtype != h.dtype:
        raise CodecError(f"delta payload is {h.dtype} {list(h.shape)}, its reference {ref.dtype} {list(ref.shape)}")
    what = f"delta body of shape {h.shape}"
    if info.kind == XOR:
        raw = _zstd.decompress_exact(body, h.nbytes, what)
        out = torch.bitwise_xor(raw, raw_bytes(ref))
        if h.dtype == torch.bool and h.numel and int(out.max()) > 1:
            raise CodecError(f"xor delta of a bool tensor yields byte value {int(out.max())}; bools must be 0 or 1")
        return out.view(h.dtype).reshape(h.shape)
    raw = _zstd.decompress_exact(body, h.numel * width, what)
    return apply_residual(ref, raw.view(_INT_OF_WIDTH[width]), steps, axis)
