"""Activation codecs: tensor -> self-describing payload -> tensor.

    codec = get_codec("int8", level=1)            # or codec_from_spec("int8:z1")
    payload = codec.encode(tensor)                # bytes: header + params + body
    tensor = decode(payload, DecodeLimits())      # codec read from the header; CodecError on bad input

==========  ==========================================  =============================================
name        what                                        max_abs_error(x)
==========  ==========================================  =============================================
lossless    zstd over native bytes, any dtype           0
fp16        cast to float16 (+ optional byte shuffle)   max|x| * 2^-11 + 2^-25 (NaN/Inf kept)
bf16        cast to bfloat16 (+ optional byte shuffle)  max|x| * 2^-8 + 2^-134 (NaN/Inf kept)
int8        affine min/max per tensor, 8 bits           scale / 2 + float rounding (see affine.py)
int8c       affine per channel (dim 1), 8 bits          max over channels of the same
int4        affine per tensor, 2 values per byte        scale / 2 + float rounding
int2        affine per tensor, 4 values per byte        scale / 2 + float rounding
dct         per-map DCT, one step, rANS (constriction)   sqrt(H*W) * 2.25 step + float rounding
learned     an artifact's trained bottleneck, rANS      None: measured accuracy cost (cuts.json)
png         lossless image batch (B, C in {1,3}, H, W)  0 (floats must be k/255, uint8 as is)
jpeg        lossy image batch, quality 1..100           None: JPEG has no hard bound
==========  ==========================================  =============================================

Every tensor codec finishes with zstd (``level``, default 1) with content size and checksum. Lossy
codecs pass tensors of non-float dtypes through losslessly. Decoding checks the header (magic, version,
CRC, codec id, dtype, shape) and the declared size against ``DecodeLimits`` and the body length before
allocating; see ``format.py`` for the wire layout and ``_zstd.py`` for bomb-safe decompression.
"""

from edgeflow.core.codecs.affine import Int2Codec, Int4Codec, Int8cCodec, Int8Codec
from edgeflow.core.codecs.base import CODEC_NAMES, OPT_IN_CODECS, Codec, codec_from_spec, decode, get_codec, read_header
from edgeflow.core.codecs.dct import DctCodec
from edgeflow.core.codecs.floats import Bf16Codec, Fp16Codec
from edgeflow.core.codecs.format import DEFAULT_LIMITS, DecodeLimits, PayloadHeader
from edgeflow.core.codecs.image import JpegCodec, PngCodec
from edgeflow.core.codecs.learned import LearnedCodec
from edgeflow.core.codecs.lossless import LosslessCodec

__all__ = [
    "CODEC_NAMES",
    "OPT_IN_CODECS",
    "DEFAULT_LIMITS",
    "Codec",
    "DecodeLimits",
    "PayloadHeader",
    "get_codec",
    "codec_from_spec",
    "decode",
    "read_header",
    "LosslessCodec",
    "Fp16Codec",
    "Bf16Codec",
    "Int8Codec",
    "Int8cCodec",
    "Int4Codec",
    "Int2Codec",
    "PngCodec",
    "JpegCodec",
    "DctCodec",
    "LearnedCodec",
]
