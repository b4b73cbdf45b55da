"""Stream residuals (core/codecs/delta.py): round trips against the reconstruction, bounds, exactness, bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from edgeflow.core.codecs import DecodeLimits, codec_from_spec, decode, get_codec
from edgeflow.core.codecs.delta import (
    STREAM_CODECS,
    decode_residual,
    encode_residual,
    is_delta,
    read_delta_info,
    residual_steps,
)
from edgeflow.core.codecs.format import CODEC_IDS, pack_payload
from edgeflow.errors import CodecError


def _frames(n: int, seed: int = 0, moving: float = 0.05) -> list[torch.Tensor]:
    """A relu'd activation-like tensor changing a little each frame (a patch of it)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.relu(torch.randn(1, 8, 12, 12, generator=g))
    out = []
    for k in range(n):
        x = base.clone()
        x[:, :, k % 10 : k % 10 + 2, :3] += moving * (k + 1)
        out.append(x)
    return out


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(torch.uint8)


def _stream(frames: list[torch.Tensor], spec: str) -> tuple[list[torch.Tensor], list[int], int]:
    """Send ``frames`` over one hop as the agents do: key frame 0, then residuals against the reconstruction.
    Returns the receiver's reconstructions, the residual sizes and the key frame's size."""
    codec = codec_from_spec(spec)
    key = codec.encode(frames[0])
    sender_ref = decode(key)  # the sender keeps what the receiver decodes
    receiver_ref = decode(key)
    steps, axis = residual_steps(codec, frames[0])
    recon, sizes = [receiver_ref], []
    for k, x in enumerate(frames[1:], start=1):
        coded = encode_residual(x, sender_ref, steps=steps, axis=axis, frame=k, base=k - 1)
        assert coded is not None
        payload, sender_ref = coded
        assert is_delta(payload) and read_delta_info(payload).frame == k and read_delta_info(payload).base == k - 1
        receiver_ref = decode_residual(payload, receiver_ref)
        assert torch.equal(_bits(receiver_ref), _bits(sender_ref))  # both ends hold the same reconstruction
        recon.append(receiver_ref)
        sizes.append(len(payload))
    return recon, sizes, len(key)


@pytest.mark.parametrize("spec", ["int8", "int8c", "int4", "int2", "fp16", "bf16"])
def test_a_lossy_stream_keeps_the_hop_codecs_bound_on_every_frame_without_drift(spec: str) -> None:
    frames = _frames(12)
    codec = get_codec(spec)
    recon, sizes, key_nbytes = _stream(frames, spec)
    bound = codec.max_abs_error(frames[0]) * 1.01 + 1e-6
    for x, r in zip(frames, recon):
        assert float((x - r).abs().max()) <= bound  # no accumulation over 12 frames
    assert max(sizes) < key_nbytes  # a small change costs less than a key frame


def test_a_lossless_stream_is_bit_exact_and_a_static_frame_costs_almost_nothing() -> None:
    frames = _frames(6)
    frames.append(frames[-1].clone())  # a repeated frame
    nan = frames[-1].clone()
    nan[0, 0, 0, 0] = float("nan")
    frames.append(nan)  # bit patterns survive, NaN included
    recon, sizes, key_nbytes = _stream(frames, "lossless")
    for x, r in zip(frames, recon):
        assert torch.equal(_bits(x), _bits(r))
    assert sizes[-2] < key_nbytes / 20


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8, torch.float16])
def test_non_float_and_half_tensors_under_lossless_round_trip_exactly(dtype: torch.dtype) -> None:
    a = (torch.arange(48).reshape(2, 24) % 3).to(dtype)
    b = a.clone()
    b[0, :4] = (torch.arange(4) % 2).to(dtype)
    payload, recon = encode_residual(b, a, steps=None, axis=None, frame=2, base=1)  # type: ignore[misc]
    out = decode_residual(payload, a)
    assert out.dtype == dtype and torch.equal(out, b) and torch.equal(recon, b)


def test_a_residual_beyond_int16_asks_for_a_key_frame() -> None:
    a = torch.zeros(1, 4)
    b = torch.full((1, 4), 1e6)
    assert encode_residual(b, a, steps=np.array([1e-3]), axis=None, frame=1, base=0) is None


def test_residual_steps_follow_the_codec() -> None:
    x = torch.tensor([[0.0, 2.55], [1.0, 0.5]])
    steps, axis = residual_steps(get_codec("int8"), x)
    assert axis is None and steps is not None and steps[0] == pytest.approx(0.01, rel=1e-6)
    steps, axis = residual_steps(get_codec("int8c"), x)
    assert axis == 1 and steps is not None and len(steps) == 2
    assert residual_steps(get_codec("lossless"), x) == (None, None)
    assert residual_steps(get_codec("int8"), x.to(torch.int32)) == (None, None)  # passed through losslessly
    with pytest.raises(CodecError, match="cannot be delta coded"):
        residual_steps(get_codec("jpeg"), x)
    assert STREAM_CODECS <= {"lossless", "int8", "int8c", "int4", "int2", "fp16", "bf16"}


def _payload() -> tuple[bytes, torch.Tensor]:
    a = torch.relu(torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(3)))
    b = a + 0.1
    payload, _ = encode_residual(b, a, steps=np.array([0.01]), axis=None, frame=5, base=4)  # type: ignore[misc]
    return payload, a


def test_the_stateless_decoder_refuses_a_residual() -> None:
    payload, _ = _payload()
    with pytest.raises(CodecError, match="stream residual"):
        decode(payload)


@pytest.mark.parametrize("cut", [0, 10, 23, 40, -1])
def test_truncated_residuals_are_codec_errors(cut: int) -> None:
    payload, ref = _payload()
    with pytest.raises(CodecError):
        decode_residual(payload[:cut] if cut >= 0 else payload[:-1], ref)


def test_corrupt_bodies_headers_and_params_are_codec_errors() -> None:
    payload, ref = _payload()
    body = bytearray(payload)
    body[-6] ^= 0xFF  # inside the zstd body: its checksum fails
    with pytest.raises(CodecError):
        decode_residual(bytes(body), ref)
    head = bytearray(payload)
    head[30] ^= 0x01  # inside the shape/params: the header CRC fails
    with pytest.raises(CodecError, match="CRC"):
        decode_residual(bytes(head), ref)


def _with_params(params: bytes, body: bytes = b"", shape: tuple[int, ...] = (1, 4), dtype=torch.float32) -> bytes:
    return pack_payload(CODEC_IDS["delta"], dtype, shape, params, body)


@pytest.mark.parametrize(
    "params, match",
    [
        (b"", "at least"),
        (struct.pack("<BBBBqq", 7, 1, 255, 0, 2, 1), "residual kind"),
        (struct.pack("<BBBBqq", 0, 1, 255, 1, 2, 2), "earlier frame"),
        (struct.pack("<BBBBqq", 0, 1, 255, 1, 2, -1), "earlier frame"),
        (struct.pack("<BBBBqq", 0, 3, 255, 1, 2, 1) + struct.pack("<d", 0.1), "width"),
        (struct.pack("<BBBBqq", 0, 1, 255, 1, 2, 1) + struct.pack("<d", -0.1), "finite and positive"),
        (struct.pack("<BBBBqq", 0, 1, 255, 1, 2, 1) + struct.pack("<d", float("nan")), "finite and positive"),
        (struct.pack("<BBBBqq", 0, 1, 255, 2, 2, 1) + struct.pack("<d", 0.1), "steps"),
        (struct.pack("<BBBBqq", 0, 1, 9, 1, 2, 1) + struct.pack("<d", 0.1), "axis"),
        (struct.pack("<BBBBqq", 1, 1, 255, 3, 2, 1), "xor delta params"),
    ],
)
def test_malformed_params_are_codec_errors(params: bytes, match: str) -> None:
    with pytest.raises(CodecError, match=match):
        decode_residual(_with_params(params), torch.zeros(1, 4))


def test_a_residual_for_another_shape_or_dtype_is_refused() -> None:
    payload, ref = _payload()
    with pytest.raises(CodecError, match="reference"):
        decode_residual(payload, ref[:, :2])
    with pytest.raises(CodecError, match="reference"):
        decode_residual(payload, ref.double())
    with pytest.raises(CodecError, match="reference"):
        encode_residual(ref, ref[:, :2], steps=None, axis=None, frame=1, base=0)


def test_a_bomb_is_refused_before_allocating() -> None:
    params = struct.pack("<BBBBqq", 1, 1, 255, 0, 2, 1)
    bomb = _with_params(params, b"\x28\xb5\x2f\xfd" + bytes(12), shape=(1 << 20, 1024))
    with pytest.raises(CodecError):
        decode_residual(bomb, torch.zeros(1, 4), DecodeLimits(max_elements=1 << 16))
    with pytest.raises(CodecError):
        read_delta_info(bomb, DecodeLimits(max_elements=1 << 16))


def test_a_bool_residual_that_decodes_to_non_bools_is_refused() -> None:
    a = torch.zeros(1, 8, dtype=torch.bool)
    payload, _ = encode_residual(a, a, steps=None, axis=None, frame=1, base=0)  # type: ignore[misc]
    import zstandard

    body = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(bytes([7] * 8))
    forged = _with_params(struct.pack("<BBBBqq", 1, 1, 255, 0, 1, 0), body, shape=(1, 8), dtype=torch.bool)
    with pytest.raises(CodecError, match="bools"):
        decode_residual(forged, a)
    assert torch.equal(decode_residual(payload, a), a)
