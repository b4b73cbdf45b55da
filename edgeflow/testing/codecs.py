"""Conformance suite for codecs: ``check_codec(codec, tensor)`` must pass for every codec.

It checks the contract in ``edgeflow.core.codecs``: the round trip keeps shape and dtype and stays
within ``codec.max_abs_error`` (bit-exact when the bound is 0), encoding is deterministic, decoding
accepts bytes/bytearray/memoryview and never aliases the payload, and every malformed payload -- each
truncation, random byte corruption, lying header or body, zstd bomb, declared size over the limits --
is refused with ``CodecError`` (a corruption that still decodes must stay within the bound). Any other
exception, or a silent wrong result, fails the check with an AssertionError that says what was fed.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

import torch
import zstandard

from edgeflow.core.codecs import Codec, DecodeLimits, decode, read_header
from edgeflow.core.codecs.format import pack_payload, split_payload
from edgeflow.core.codecs.lossless import raw_bytes
from edgeflow.errors import CodecError

__all__ = ["CodecCheckReport", "check_codec", "example_tensor", "zstd_bomb_frames"]

_UNLIMITED = DecodeLimits(max_elements=2**62, max_bytes=2**62)


@dataclass(frozen=True)
class CodecCheckReport:
    """What ``check_codec`` measured.

    Attributes:
        spec: The codec's spec.
        payload_nbytes: Size of the payload for the checked tensor.
        bound: ``codec.max_abs_error(tensor)``.
        observed_error: Largest ``|decoded - tensor|`` over finite elements (0.0 if bit-exact).
        num_malformed: Number of malformed payloads that were refused or decoded within bounds.
    """

    spec: str
    payload_nbytes: int
    bound: float | None
    observed_error: float
    num_malformed: int


def example_tensor(codec: Codec, seed: int = 0) -> torch.Tensor:
    """A small tensor the codec accepts: an image batch for image codecs, else an activation."""
    g = torch.Generator().manual_seed(seed)
    if codec.image_only:
        return torch.randint(0, 256, (2, 3, 9, 7), generator=g, dtype=torch.uint8).float().div_(255)
    return torch.relu(torch.randn(2, 5, 4, 3, generator=g))  # (B, C, H, W), ~50% zeros


def check_codec(
    codec: Codec,
    tensor: torch.Tensor | None = None,
    *,
    num_corruptions: int = 64,
    max_truncations: int | None = None,
    seed: int = 0,
) -> CodecCheckReport:
    """Runs the conformance suite for one codec and one input.

    Args:
        codec: The codec under test.
        tensor: Input to round-trip; ``example_tensor(codec)`` if None.
        num_corruptions: Random corruptions tried, half of them with a resealed (valid) header.
        max_truncations: Cap on truncation lengths tried per kind (spread over the range); None: all.
        seed: Seed for the corruptions.

    Returns:
        A report of what was measured.

    Raises:
        AssertionError: The codec violates the contract; the message says how.
    """
    x = example_tensor(codec, seed) if tensor is None else tensor
    payload = codec.encode(x)
    _expect(isinstance(payload, bytes), f"{codec.spec}: encode returned {type(payload).__name__}, not bytes")
    _expect(codec.encode(x) == payload, f"{codec.spec}: encoding the same tensor twice gave different bytes")
    _expect(codec.encode_parts(x).join() == payload, f"{codec.spec}: encode_parts joined differs from encode")
    header = read_header(payload)
    _expect(
        header.shape == tuple(x.shape) and header.dtype == x.dtype,
        f"{codec.spec}: header says {header.dtype} {header.shape}, tensor is {x.dtype} {tuple(x.shape)}",
    )
    bound = codec.max_abs_error(x)
    y = _decode(payload, "the payload")
    observed = _check_close(codec, x, y, bound, "round trip")
    for kind in (bytearray, memoryview):
        _expect(_same_bits(_decode(kind(payload), kind.__name__), y), f"{codec.spec}: decoding {kind.__name__} differs")
    _check_no_alias(codec, payload, y)
    _check_limits(codec, payload, header.numel, header.nbytes)

    malformed = 0
    for name, bad in _truncations(payload, max_truncations):
        _expect_refused(codec, bad, name)
        malformed += 1
    rng = random.Random(seed)
    for i in range(num_corruptions):
        resealed = i % 2 == 1
        name, bad = _corrupt(payload, rng, resealed)
        try:
            z = decode(bad)
        except CodecError:
            pass
        except Exception as e:  # noqa: BLE001 - any other type is the failure being reported
            raise AssertionError(f"{codec.spec}: {name}: decode raised {type(e).__name__}: {e}") from e
        else:
            # An unsealed corruption that decodes must be harmless; a resealed one (valid header, e.g.
            # a changed scale) may change values, but must still produce what its header declares.
            if resealed:
                h = read_header(bad)
                _expect(
                    tuple(z.shape) == h.shape and z.dtype == h.dtype,
                    f"{codec.spec}: {name}: decoded {z.dtype} {tuple(z.shape)} disagrees with its header",
                )
            else:
                _check_close(codec, x, z, bound, name)
        malformed += 1
    for name, bad in _lies(payload):
        _expect_refused(codec, bad, name)
        malformed += 1
    return CodecCheckReport(codec.spec, len(payload), bound, observed, malformed)


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)


def _decode(payload: object, what: str, limits: DecodeLimits | None = None) -> torch.Tensor:
    try:
        return decode(payload, limits)  # type: ignore[arg-type]
    except CodecError as e:
        raise AssertionError(f"decoding {what} raised CodecError: {e}") from e


def _expect_refused(codec: Codec, bad: bytes, name: str, limits: DecodeLimits | None = None) -> None:
    try:
        decode(bad, limits)
    except CodecError:
        return
    except Exception as e:  # noqa: BLE001 - any other type is the failure being reported
        raise AssertionError(
            f"{codec.spec}: {name}: decode raised {type(e).__name__} instead of CodecError: {e}"
        ) from e
    raise AssertionError(f"{codec.spec}: {name}: decode accepted it; expected CodecError")


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(raw_bytes(a.contiguous()), raw_bytes(b.contiguous()))


def _check_close(codec: Codec, x: torch.Tensor, y: torch.Tensor, bound: float | None, what: str) -> float:
    """Asserts shape, dtype and error bound; returns the largest error over finite elements."""
    _expect(
        tuple(y.shape) == tuple(x.shape) and y.dtype == x.dtype,
        f"{codec.spec}: {what}: got {y.dtype} {tuple(y.shape)}, expected {x.dtype} {tuple(x.shape)}",
    )
    if bound is None:  # no bound to hold it to (jpeg): shape and dtype are the contract
        return float((y.double() - x.detach().cpu().double()).abs().max()) if x.numel() else 0.0
    if bound == 0.0 or not (x.dtype.is_floating_point and x.dtype.itemsize > 1):
        _expect(_same_bits(x.detach().cpu().contiguous(), y), f"{codec.spec}: {what}: not bit-exact (bound {bound})")
        return 0.0
    xd, yd = x.detach().cpu().double(), y.double()
    finite = torch.isfinite(xd)
    inf = torch.isinf(xd)
    same_special = torch.equal(torch.isnan(xd), torch.isnan(yd)) and torch.equal(xd[inf], yd[inf])
    _expect(same_special, f"{codec.spec}: {what}: NaN/Inf elements were not preserved")
    err = (yd[finite] - xd[finite]).abs()
    _expect(bool(torch.isfinite(err).all()), f"{codec.spec}: {what}: a finite input decoded to NaN/Inf")
    observed = float(err.max()) if err.numel() else 0.0
    if observed > bound:
        worst = int(err.argmax())
        raise AssertionError(
            f"{codec.spec}: {what}: error {observed!r} exceeds bound {bound!r} "
            f"(input {float(xd[finite][worst])!r}, decoded {float(yd[finite][worst])!r})"
        )
    return observed


def _check_no_alias(codec: Codec, payload: bytes, y: torch.Tensor) -> None:
    buf = bytearray(payload)
    z = _decode(buf, "a bytearray")
    buf[:] = bytes(len(buf))
    _expect(_same_bits(z, y), f"{codec.spec}: the decoded tensor aliases the payload buffer")
    if z.numel():
        flat = z.reshape(-1)
        flat[0] = flat[-1]  # must be allowed: decoded tensors are writable


def _check_limits(codec: Codec, payload: bytes, numel: int, nbytes: int) -> None:
    if numel:
        _expect_refused(codec, payload, f"limit of {numel - 1} elements", DecodeLimits(max_elements=numel - 1))
    if nbytes:
        _expect_refused(codec, payload, f"limit of {nbytes - 1} bytes", DecodeLimits(max_bytes=nbytes - 1))


def _spread(n: int, cap: int | None) -> list[int]:
    if cap is None or n <= cap:
        return list(range(n))
    return sorted({round(i * (n - 1) / (cap - 1)) for i in range(cap)})


def _truncations(payload: bytes, cap: int | None) -> list[tuple[str, bytes]]:
    """Every (or ``cap`` spread) prefix of the payload, and of the body under a resealed header."""
    out = [(f"payload truncated to {n} of {len(payload)} bytes", payload[:n]) for n in _spread(len(payload), cap)]
    header, params, body = split_payload(payload, _UNLIMITED)
    for n in _spread(len(body), cap):
        bad = pack_payload(header.codec_id, header.dtype, header.shape, bytes(params), body[:n])
        out.append((f"body truncated to {n} of {len(body)} bytes, header resealed", bad))
    return out


def _corrupt(payload: bytes, rng: random.Random, resealed: bool) -> tuple[str, bytes]:
    if not resealed:
        bad = bytearray(payload)
        where = sorted(rng.sample(range(len(bad)), k=min(len(bad), rng.randint(1, 3))))
        for i in where:
            bad[i] ^= rng.randint(1, 255)
        return f"bytes {where} of {len(payload)} flipped", bytes(bad)
    header, params, body = split_payload(payload, _UNLIMITED)
    tail = bytearray(bytes(params) + bytes(body))
    if not tail:
        return "empty params and body, resealed", payload
    i = rng.randrange(len(tail))
    tail[i] ^= rng.randint(1, 255)
    np_ = len(params)
    bad = pack_payload(header.codec_id, header.dtype, header.shape, bytes(tail[:np_]), bytes(tail[np_:]))
    return f"byte {i} of params+body flipped, header resealed", bad


def _lies(payload: bytes) -> list[tuple[str, bytes]]:
    """Payloads whose header and body disagree, bombs, and absurd shapes (all resealed: valid CRC)."""
    header, params, body = split_payload(payload, _UNLIMITED)
    reseal: Callable[..., bytes] = functools.partial(pack_payload, header.codec_id, header.dtype)
    p, b = bytes(params), bytes(body)
    out = [(f"{name} as the body", reseal(header.shape, p, frame)) for name, frame in zstd_bomb_frames().items()]
    out.append(("body followed by a second zstd frame", reseal(header.shape, p, b + zstandard.compress(b"\0" * 64))))
    out.append(("body followed by junk", reseal(header.shape, p, b + b"junk")))
    if header.shape and header.numel:
        # 8 more rows, or none: the body no longer fits even when codecs pack up to 8 values per byte
        for rows in (header.shape[0] + 8, 0):
            shape = (rows, *header.shape[1:])
            out.append((f"header shape {shape} for a body of shape {header.shape}", reseal(shape, p, b)))
    huge = (2**31, 2**31, *header.shape[2:])
    out.append((f"absurd header shape {huge}", reseal(huge, p, b)))
    raw = reseal(header.shape, p, b)
    ndim_at = 7  # patch ndim beyond MAX_NDIM; the CRC is then stale, which is fine: either check must fire
    out.append(("ndim 200", raw[:ndim_at] + bytes([200]) + raw[ndim_at + 1 :]))
    out.append(("negative dimension", reseal((-1, *header.shape[1:]), p, b)))
    out.append(("unknown version", raw[:4] + bytes([99]) + raw[5:]))
    out.append(("wrong magic", b"XXXX" + raw[4:]))
    return out


@functools.lru_cache(maxsize=1)
def zstd_bomb_frames() -> dict[str, bytes]:
    """zstd frames that must never be decompressed into a small tensor.

    Returns:
        ``{description: frame}``: a 24-byte frame declaring 1 TiB, and a ~2 KiB frame that holds
        64 MiB of zeros without declaring its size.
    """
    # Frame_Header_Descriptor 0xE4: 8-byte content size, single segment, content checksum.
    declared = b"\x28\xb5\x2f\xfd" + bytes([0xE4]) + struct.pack("<Q", 2**40)
    rle_block = struct.pack("<I", ((128 * 1024) << 3) | (1 << 1) | 1)[:3] + b"\0"  # last, RLE, 128 KiB
    frames = {"zstd frame declaring 1 TiB": declared + rle_block + b"\0\0\0\0"}
    cctx = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=False)
    chunk, sink = bytes(1 << 20), cctx.compressobj()
    undeclared = b"".join(sink.compress(chunk) for _ in range(64)) + sink.flush()
    frames["zstd frame of 64 MiB without declared size"] = undeclared
    return frames
