"""zstd framing for codec bodies, with decompression that cannot be made to over-allocate.

``ZstdDecompressor.decompress(max_output_size=N)`` ignores N when the frame declares its content size
(a 6.4 KB frame declaring 200 MiB decompressed to 200 MiB; see FIELD-NOTES.md). So a body must declare
exactly the size its header implies, carry a content checksum, and is read through a bounded
``stream_reader`` into a buffer of exactly that size; one more byte coming out is an error.
"""

from __future__ import annotations

import threading

import torch
import zstandard

from edgeflow.errors import CodecError

__all__ = ["MIN_LEVEL", "MAX_LEVEL", "MAX_RATIO", "check_level", "compress", "decompress_exact"]

MIN_LEVEL = -7  # negative levels trade ratio for speed
MAX_LEVEL = zstandard.MAX_COMPRESSION_LEVEL  # 22
# A 4-byte RLE block yields at most 128 KiB, so no valid frame expands more than 32768-fold: a body
# too small for its declared size is refused before the output is allocated.
MAX_RATIO = 32768

_local = threading.local()  # zstd contexts are not thread-safe; one per thread and level


def check_level(level: object) -> int:
    """Returns ``level`` if it is a valid zstd level, else raises CodecError."""
    if isinstance(level, bool) or not isinstance(level, int) or not (MIN_LEVEL <= level <= MAX_LEVEL) or level == 0:
        raise CodecError(f"zstd level must be an int in {MIN_LEVEL}..{MAX_LEVEL} other than 0, got {level!r}")
    return level


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = _local.__dict__.setdefault("compressors", {})
    cctx = cache.get(level)
    if cctx is None:
        cctx = cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True, write_content_size=True)
    return cctx


def _decompressor() -> zstandard.ZstdDecompressor:
    dctx = _local.__dict__.get("decompressor")
    if dctx is None:
        dctx = _local.decompressor = zstandard.ZstdDecompressor()
    return dctx


def compress(data: object, level: int) -> bytes:
    """Compresses a bytes-like object into one zstd frame with content size and checksum."""
    return _compressor(level).compress(data)


def _frame_nbytes(body: memoryview, what: str) -> int:
    """Size of the zstd frame at the start of ``body``, from its header and block headers (RFC 8878).

    The stream reader stops once it has the content and would not notice a missing checksum or
    trailing bytes, so the frame's extent is checked first. The walk costs one step per block
    (128 KiB of content each for frames that zstd writes).
    """
    n = len(body)
    descriptor = body[4] if n > 4 else 0
    single_segment = (descriptor >> 5) & 1
    pos = 5 + (1 - single_segment) + (0, 1, 2, 4)[descriptor & 3] + (single_segment, 2, 4, 8)[descriptor >> 6]
    while True:
        if pos + 3 > n:
            raise CodecError(f"{what}: zstd frame truncated at byte {n} (block header expected at {pos})")
        block = body[pos] | body[pos + 1] << 8 | body[pos + 2] << 16
        kind, size = (block >> 1) & 3, block >> 3
        if kind == 3:
            raise CodecError(f"{what}: zstd block at byte {pos} has the reserved type 3")
        pos += 3 + (1 if kind == 1 else size)  # RLE blocks store one byte
        if block & 1:  # last block
            return pos + 4 * ((descriptor >> 2) & 1)  # content checksum


def decompress_exact(body: memoryview, nbytes: int, what: str) -> torch.Tensor:
    """Decompresses one zstd frame that must hold exactly ``nbytes`` bytes.

    Args:
        body: The frame (any bytes-like object; not copied).
        nbytes: Exact decompressed size implied by the payload header (already checked against limits).
        what: Names the tensor in error messages, e.g. ``"int8 body of shape (1, 64)"``.

    Returns:
        A new, writable 1-D uint8 tensor of ``nbytes`` bytes.

    Raises:
        CodecError: The frame is malformed, does not declare ``nbytes``, has no checksum, fails its
            checksum, or yields more or fewer than ``nbytes`` bytes.
    """
    body_nbytes = len(body)
    if nbytes > MAX_RATIO * body_nbytes:
        raise CodecError(
            f"{what}: a {body_nbytes}-byte zstd body cannot hold the {nbytes} bytes the header declares"
        )
    try:
        frame = zstandard.get_frame_parameters(body)
    except zstandard.ZstdError as e:
        raise CodecError(f"{what}: body is not a zstd frame ({e})") from None
    if frame.content_size == zstandard.CONTENTSIZE_UNKNOWN:
        raise CodecError(f"{what}: zstd frame does not declare its content size ({nbytes} bytes expected)")
    if frame.content_size != nbytes:
        raise CodecError(f"{what}: zstd frame declares {frame.content_size} bytes, header implies {nbytes}")
    if not frame.has_checksum:
        raise CodecError(f"{what}: zstd frame has no content checksum")
    if frame.dict_id != 0:
        raise CodecError(f"{what}: zstd frame needs dictionary {frame.dict_id}; none is used")
    frame_nbytes = _frame_nbytes(body, what)
    if frame_nbytes != body_nbytes:
        what_is_wrong = "truncated" if frame_nbytes > body_nbytes else "trailing bytes"
        raise CodecError(f"{what}: {what_is_wrong}: zstd frame is {frame_nbytes} bytes, body is {body_nbytes}")
    out = torch.empty(nbytes, dtype=torch.uint8)
    target = memoryview(out.numpy())
    got = 0
    try:
        with _decompressor().stream_reader(body, read_across_frames=True) as reader:
            while got < nbytes:
                n = reader.readinto(target[got:])
                if n == 0:
                    break
                got += n
            extra = len(reader.read(1))
    except zstandard.ZstdError as e:
        raise CodecError(f"{what}: corrupt zstd body ({e})") from None
    if got != nbytes or extra:
        more = "more than" if extra else f"only {got} of"
        raise CodecError(f"{what}: zstd body decompressed to {more} the {nbytes} bytes the header implies")
    return out
