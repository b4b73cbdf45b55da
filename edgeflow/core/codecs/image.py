"""``png`` and ``jpeg``: image batches (B, C, H, W), C in {1, 3}, one image file per batch item.

Accepted inputs: uint8 tensors, or float tensors in [0, 1] (what ``ToTensor()`` makes of a uint8
image). Floats are stored as ``round(255 * x)``; decoding returns the dtype that was encoded
(``k / 255`` in that dtype for floats). ``png`` is lossless and therefore refuses floats that are not
exactly ``k / 255``; ``jpeg`` is lossy with no hard error bound (``max_abs_error`` returns None).

Params hold, per image, its byte length and CRC-32 (JPEG data has no checksum of its own). Decoding
opens each file with only the expected Pillow plugin and checks its size and mode against the header
before decompressing pixels.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from PIL import Image

from edgeflow.core.codecs.base import FLOAT_DTYPES, Codec, prepare_tensor, register
from edgeflow.core.codecs.format import PayloadHeader, pack_payload
from edgeflow.errors import CodecError

__all__ = ["PngCodec", "JpegCodec"]

_ENTRY = struct.Struct("<II")  # per image: nbytes, crc32
_MODES = {1: "L", 3: "RGB"}
_MAX_SIDE = 65500  # JPEG's format limit (65535) less margin; PNG allows more but one rule is simpler


@dataclass(frozen=True)
class _ImageCodec(Codec):
    image_only = True
    _format: ClassVar[str]

    def encode(self, tensor: torch.Tensor) -> bytes:
        t = prepare_tensor(tensor, self.name)
        u8 = self._to_uint8(t)
        files = [self._save(_to_pil(u8[i])) for i in range(u8.shape[0])]
        params = b"".join(_ENTRY.pack(len(f), zlib.crc32(f)) for f in files)
        return pack_payload(self.codec_id, t.dtype, tuple(t.shape), params, b"".join(files))

    def _to_uint8(self, t: torch.Tensor) -> torch.Tensor:
        """Checks the image contract and returns the uint8 batch (B, C, H, W)."""
        _check_image_shape(self.name, tuple(t.shape))
        if t.dtype == torch.uint8:
            return t
        if t.dtype not in FLOAT_DTYPES:
            raise CodecError(f"{self.name}: expected uint8 or float images, got dtype {t.dtype}")
        if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):  # also False for NaN
            bad = t[~((t >= 0) & (t <= 1))]
            raise CodecError(
                f"{self.name}: float images must lie in [0, 1]; {bad.numel()} values do not (e.g. {float(bad[0]):g})"
            )
        return (t.double() * 255).round_().to(torch.uint8)

    def _save(self, im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format=self._format, **self._save_options())
        return buf.getvalue()

    def _save_options(self) -> dict[str, object]:
        raise NotImplementedError

    @classmethod
    def decode_parts(cls, header: PayloadHeader, params: memoryview, body: memoryview) -> torch.Tensor:
        shape = header.shape
        _check_image_shape(f"{cls.name} payload", shape)
        if header.dtype != torch.uint8 and header.dtype not in FLOAT_DTYPES:
            raise CodecError(f"{cls.name} payload declares dtype {header.dtype}; expected uint8 or a float")
        batch, channels, height, width = shape
        if len(params) != _ENTRY.size * batch:
            raise CodecError(f"{cls.name} params are {len(params)} bytes; {batch} images need {_ENTRY.size * batch}")
        entries = [_ENTRY.unpack_from(params, _ENTRY.size * i) for i in range(batch)]
        if sum(n for n, _ in entries) != len(body):
            raise CodecError(
                f"{cls.name} image sizes sum to {sum(n for n, _ in entries)} bytes, body has {len(body)}"
            )
        out = torch.empty(shape, dtype=torch.uint8)
        out_np = out.numpy()  # (B, C, H, W), shares memory with out
        start = 0
        for i, (nbytes, crc) in enumerate(entries):
            data = body[start : start + nbytes]
            start += nbytes
            if zlib.crc32(data) != crc:
                raise CodecError(f"{cls.name} image {i} of {batch} fails its CRC-32 ({nbytes} bytes)")
            out_np[i] = cls._load(data, i, (width, height), _MODES[channels]).transpose(2, 0, 1)
        if header.dtype == torch.uint8:
            return out
        return out.to(header.dtype).div_(255)

    @classmethod
    def _load(cls, data: memoryview, index: int, size: tuple[int, int], mode: str) -> np.ndarray:
        """Decodes one image file into a read-only (H, W, C) uint8 array of the expected size."""
        try:
            with Image.open(io.BytesIO(data), formats=[cls._format]) as im:
                if im.size != size or im.mode != mode:
                    raise CodecError(
                        f"{cls.name} image {index} is {im.mode} {im.size[0]}x{im.size[1]}, "
                        f"header says {mode} {size[0]}x{size[1]}"
                    )
                im.load()
                pixels = np.asarray(im)
        except CodecError:
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error...
            raise CodecError(f"{cls.name} image {index} is corrupt: {type(e).__name__}: {e}") from None
        return pixels.reshape(size[1], size[0], -1)


def _check_image_shape(name: str, shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or shape[1] not in _MODES:
        raise CodecError(f"{name}: expected an image batch (B, C, H, W) with C in {{1, 3}}, got shape {shape}")
    if not (1 <= shape[2] <= _MAX_SIDE and 1 <= shape[3] <= _MAX_SIDE):
        raise CodecError(f"{name}: image height and width must be in 1..{_MAX_SIDE}, got shape {shape}")


def _to_pil(chw: torch.Tensor) -> Image.Image:
    hwc = chw.permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
    return Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)


@register
@dataclass(frozen=True)
class PngCodec(_ImageCodec):
    """Lossless PNG per image; ``max_abs_error`` is 0.

    Args:
        level: zlib compression level 0..9 (Pillow's ``compress_level``).
    """

    level: int = 1

    name = "png"
    lossless = True
    _format = "PNG"

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or not 0 <= self.level <= 9:
            raise CodecError(f"png: level must be an int in 0..9, got {self.level!r}")

    def _to_uint8(self, t: torch.Tensor) -> torch.Tensor:
        u8 = super()._to_uint8(t)
        if u8 is not t and not torch.equal(u8.to(t.dtype).div_(255), t):
            raise CodecError(
                f"png is lossless only for float images whose values are k/255 in {t.dtype}; "
                "this tensor has others (use jpeg, or lossless)"
            )
        return u8

    def _save_options(self) -> dict[str, object]:
        return {"compress_level": self.level}

    def max_abs_error(self, tensor: torch.Tensor) -> float:
        self._to_uint8(prepare_tensor(tensor, self.name))  # raises as encode would
        return 0.0


@register
@dataclass(frozen=True)
class JpegCodec(_ImageCodec):
    """Lossy baseline JPEG per image (Pillow defaults: 4:2:0 chroma subsampling for RGB).

    Args:
        quality: 1..100 (Pillow's scale; above 95 grows files for little gain).
    """

    quality: int = 90

    name = "jpeg"
    lossless = False
    _format = "JPEG"

    def __post_init__(self) -> None:
        if isinstance(self.quality, bool) or not isinstance(self.quality, int) or not 1 <= self.quality <= 100:
            raise CodecError(f"jpeg: quality must be an int in 1..100, got {self.quality!r}")

    def _save_options(self) -> dict[str, object]:
        return {"quality": self.quality}

    def max_abs_error(self, tensor: torch.Tensor) -> None:
        """Always None: JPEG has no hard per-pixel bound (errors depend on image content)."""
        self._to_uint8(prepare_tensor(tensor, self.name))  # raises as encode would
        return None
