"""Codecs: the conformance suite over hypothesis-drawn tensors, then each error path by name."""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeflow.core.codecs import (
    CODEC_NAMES,
    Codec,
    DecodeLimits,
    codec_from_spec,
    decode,
    get_codec,
    read_header,
)
from edgeflow.core.codecs.format import CODEC_IDS, DTYPE_CODES, pack_payload
from edgeflow.errors import CodecError
from edgeflow.testing.codecs import check_codec, zstd_bomb_frames

# Each example runs the whole suite (hundreds of malformed payloads), so a few dozen examples per
# property keep this file well under its 30 s budget on 2 cores.
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
TENSOR_CODECS = [n for n in CODEC_NAMES if n not in ("png", "jpeg", "learned")]  # learned: test_codecs_learned.py
QUANT_CODECS = ["int8", "int8c", "int4", "int2"]
SMALL_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


def _relu_activation(shape: tuple[int, ...], seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(shape, generator=g)) * scale


def _raw_payload(
    codec_id: int,
    dtype_code: int,
    shape: tuple[int, ...],
    params: bytes = b"",
    body: bytes = b"",
    *,
    magic: bytes = b"EFTC",
    version: int = 1,
) -> bytes:
    """Builds a payload from the layout documented in format.py, independently of pack_payload."""
    fixed = struct.pack("<4sBBBBIQ", magic, version, codec_id, dtype_code, len(shape), len(params), len(body))
    shape_bytes = struct.pack(f"<{len(shape)}q", *shape)
    crc = zlib.crc32(fixed + shape_bytes + params)
    return fixed + struct.pack("<I", crc) + shape_bytes + params + body


def _refused(payload: object, *fragments: str, limits: DecodeLimits | None = None) -> str:
    with pytest.raises(CodecError) as info:
        decode(payload, limits)  # type: ignore[arg-type]
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- conformance over drawn inputs -------------------------------------------------------------


@st.composite
def _any_dtype_tensor(draw: st.DrawFn) -> torch.Tensor:
    dtype = draw(st.sampled_from(sorted(DTYPE_CODES, key=str)))
    shape = draw(SMALL_SHAPES)
    numel = int(np.prod(shape, dtype=np.int64))
    if dtype == torch.bool:
        bools = draw(st.lists(st.booleans(), min_size=numel, max_size=numel))
        return torch.tensor(bools, dtype=torch.bool).reshape(shape)
    raw = draw(st.binary(min_size=numel * dtype.itemsize, max_size=numel * dtype.itemsize))
    return torch.frombuffer(bytearray(raw) or bytearray(1), dtype=torch.uint8)[: len(raw)].view(dtype).reshape(shape)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@FAST
@given(_any_dtype_tensor())
def test_lossless_round_trips_any_dtype_bit_exactly(t: torch.Tensor) -> None:
    report = check_codec(get_codec("lossless"), t, num_corruptions=8)
    assert report.bound == 0.0 and report.observed_error == 0.0


def _floats(dtype: np.dtype, *, finite: bool) -> st.SearchStrategy:
    width = {np.float16: 16, np.float32: 32, np.float64: 64}[dtype]
    return st.floats(width=width, allow_nan=not finite, allow_infinity=not finite)


@st.composite
def _float_tensor(draw: st.DrawFn, *, finite: bool) -> torch.Tensor:
    kind = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64"]))
    np_dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32, "float64": np.float32}[kind]
    array = draw(hnp.arrays(np_dtype, SMALL_SHAPES, elements=_floats(np_dtype, finite=finite)))
    t = torch.from_numpy(array.copy()).to(getattr(torch, kind))  # float64 drawn within float32 range
    return t


@pytest.mark.parametrize("name", ["fp16", "bf16"])
@FAST
@given(t=_float_tensor(finite=False), shuffle=st.booleans())
def test_half_codecs_within_bound_or_refuse_overflow(name: str, t: torch.Tensor, shuffle: bool) -> None:
    codec = get_codec(name, shuffle=shuffle)
    target = torch.float16 if name == "fp16" else torch.bfloat16
    overflows = bool((torch.isinf(t.to(target)) & torch.isfinite(t)).any())
    if overflows:
        with pytest.raises(CodecError, match="overflow"):
            codec.encode(t)
        return
    check_codec(codec, t, num_corruptions=8)


@pytest.mark.parametrize("name", QUANT_CODECS)
@FAST
@given(t=_float_tensor(finite=False))
def test_quantizers_within_bound_or_refuse_non_finite(name: str, t: torch.Tensor) -> None:
    codec = get_codec(name)
    if not bool(torch.isfinite(t).all()):
        with pytest.raises(CodecError, match="NaN/Inf"):
            codec.encode(t)
        with pytest.raises(CodecError, match="NaN/Inf"):
            codec.max_abs_error(t)
        return
    check_codec(codec, t, num_corruptions=8)


@pytest.mark.parametrize("name", TENSOR_CODECS)
@FAST
@given(shape=SMALL_SHAPES, seed=st.integers(0, 2**16), log_scale=st.floats(-24, 12))  # fp16 overflows past 2^16
def test_tensor_codecs_on_activations(name: str, shape: tuple[int, ...], seed: int, log_scale: float) -> None:
    check_codec(get_codec(name), _relu_activation(shape, seed, 2.0**log_scale), num_corruptions=8)


@st.composite
def _image_batch(draw: st.DrawFn) -> torch.Tensor:
    shape = (draw(st.integers(0, 2)), draw(st.sampled_from([1, 3])), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    pixels = draw(hnp.arrays(np.uint8, shape))
    t = torch.from_numpy(pixels)
    kind = draw(st.sampled_from(["uint8", "float32", "float64", "float16"]))
    return t if kind == "uint8" else t.to(getattr(torch, kind)).div_(255)


@pytest.mark.parametrize("codec", [get_codec("png"), get_codec("png", level=9), get_codec("jpeg", quality=75)])
@FAST
@given(t=_image_batch())
def test_image_codecs_on_image_batches(codec: Codec, t: torch.Tensor) -> None:
    report = check_codec(codec, t, num_corruptions=8)
    assert report.bound == (0.0 if codec.name == "png" else None)


# --- names, specs, parameters ------------------------------------------------------------------


def test_codec_names_are_the_documented_ones() -> None:
    assert CODEC_NAMES == ("lossless", "fp16", "bf16", "int8", "int8c", "int4", "int2", "png", "jpeg", "dct", "learned")
    for name in CODEC_NAMES:
        codec = get_codec(name)
        assert codec.name == name and isinstance(codec.lossless, bool)
        assert codec.lossless == (name in ("lossless", "png"))
        assert codec.image_only == (name in ("png", "jpeg"))


@pytest.mark.parametrize(
    ("codec", "spec"),
    [
        (get_codec("int8"), "int8:z1"),
        (get_codec("lossless", level=19), "lossless:z19"),
        (get_codec("fp16", shuffle=True), "fp16:z1:s1"),
        (get_codec("int8c", level=-3, axis=-1), "int8c:z-3:a-1"),
        (get_codec("png", level=6), "png:z6"),
        (get_codec("jpeg"), "jpeg:q90"),
        (get_codec("jpeg", quality=50), "jpeg:q50"),
    ],
)
def test_spec_is_short_and_parses_back(codec: Codec, spec: str) -> None:
    assert codec.spec == spec == str(codec)
    assert codec_from_spec(spec) == codec


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: get_codec("int9"), "unknown codec 'int9'"),
        (lambda: get_codec("int8", level=0), "got 0"),
        (lambda: get_codec("int8", level=23), "got 23"),
        (lambda: get_codec("int8", level=True), "got True"),
        (lambda: get_codec("jpeg", level=1), "no parameter level; it takes: quality"),
        (lambda: get_codec("jpeg", quality=101), "got 101"),
        (lambda: get_codec("png", level=10), "got 10"),
        (lambda: get_codec("int8c", axis="c"), "axis must be an int"),
        (lambda: get_codec("fp16", shuffle=1), "shuffle must be a bool"),
        (lambda: codec_from_spec("int8:x1"), "token 'x1'"),
        (lambda: codec_from_spec("int8:z1:z2"), "token 'z2'"),
        (lambda: codec_from_spec("int8:zz"), "token 'zz'"),
        (lambda: DecodeLimits(max_elements=-1), "max_elements"),
    ],
)
def test_bad_parameters_raise_codec_error_naming_the_value(make, fragment: str) -> None:
    with pytest.raises(CodecError) as info:
        make()
    assert fragment in str(info.value)


# --- documented behaviour ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["fp16", "bf16", *QUANT_CODECS])
def test_lossy_codecs_pass_non_float_tensors_through_losslessly(name: str) -> None:
    codec = get_codec(name)
    for t in (torch.arange(-5, 5), torch.tensor([True, False]), torch.arange(6, dtype=torch.uint8).reshape(2, 3)):
        payload = codec.encode(t)
        assert read_header(payload).codec_name == "lossless"
        assert codec.max_abs_error(t) == 0.0
        assert torch.equal(decode(payload), t)


def test_bounds_match_the_documented_formulas() -> None:
    x = torch.tensor([-1000.0, 0.0, 24.0, 1000.0])
    assert get_codec("lossless").max_abs_error(x) == 0.0
    assert get_codec("fp16").max_abs_error(x) == pytest.approx(1000 * 2**-11, rel=1e-3)
    assert get_codec("bf16").max_abs_error(x) == pytest.approx(1000 * 2**-8, rel=1e-3)
    for name, levels in [("int8", 255), ("int4", 15), ("int2", 3)]:
        assert get_codec(name).max_abs_error(x) == pytest.approx(2000 / levels / 2, rel=1e-3)
    assert get_codec("fp16").max_abs_error(x.half()) == 0.0  # already in the target format
    assert get_codec("jpeg").max_abs_error(torch.zeros(1, 3, 4, 4)) is None


def test_int8c_scales_each_channel() -> None:
    magnitudes = 10.0 ** torch.linspace(-3, 3, 16)
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(1)) * magnitudes.view(1, 16, 1, 1)
    per_channel, per_tensor = get_codec("int8c"), get_codec("int8")
    errors = {c.name: (decode(c.encode(x)) - x).abs().amax(dim=(0, 2, 3)) for c in (per_channel, per_tensor)}
    assert bool((errors["int8c"] <= 2e-2 * magnitudes).all())
    assert float(errors["int8c"][0]) < float(errors["int8"][0]) / 1000
    assert read_header(per_channel.encode(x)).params_nbytes == 1 + 8 * 16


def test_int8c_axis_choices() -> None:
    tokens = _relu_activation((1, 197, 192))
    assert read_header(get_codec("int8c").encode(tokens)).params_nbytes == 1 + 8 * 197
    assert read_header(get_codec("int8c", axis=-1).encode(tokens)).params_nbytes == 1 + 8 * 192
    vector = _relu_activation((7,))
    assert read_header(get_codec("int8c").encode(vector)).params_nbytes == 1 + 8  # ndim < 2: one channel
    with pytest.raises(CodecError, match="axis 5 out of range"):
        get_codec("int8c", axis=5).encode(tokens)


def test_quantizers_shrink_activations_in_order() -> None:
    x = _relu_activation((1, 64, 28, 28))
    sizes = {name: len(get_codec(name).encode(x)) for name in TENSOR_CODECS}
    assert sizes["int2"] < sizes["int4"] < sizes["int8"] < sizes["fp16"] < sizes["lossless"] < x.numel() * 4
    assert sizes["int8"] * 4 < x.numel() * 4


def test_png_is_exact_for_k_over_255_images_and_refuses_others() -> None:
    pixels = torch.randint(0, 256, (2, 3, 5, 4), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    for dtype in (torch.float32, torch.float64, torch.float16):
        x = pixels.to(dtype) / 255
        y = decode(get_codec("png").encode(x))
        assert y.dtype == dtype and torch.equal(y, x)
    with pytest.raises(CodecError, match="k/255"):
        get_codec("png").encode(torch.full((1, 3, 4, 4), 0.1234))
    with pytest.raises(CodecError, match=r"\[0, 1\]"):
        get_codec("png").encode(pixels.float())
    with pytest.raises(CodecError, match=r"C in \{1, 3\}"):
        get_codec("jpeg").encode(torch.zeros(1, 4, 8, 8))
    with pytest.raises(CodecError, match="uint8 or float"):
        get_codec("png").encode(torch.zeros(1, 1, 8, 8, dtype=torch.int32))


def test_jpeg_quality_trades_size_for_error_on_a_smooth_image() -> None:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    image = torch.stack([yy, xx, (yy + xx) / 2]).unsqueeze(0)
    image = (image * 255).round() / 255
    results = {}
    for quality in (20, 95):
        payload = get_codec("jpeg", quality=quality).encode(image)
        results[quality] = (len(payload), float((decode(payload) - image).abs().mean()))
    assert results[20][0] < results[95][0] and results[95][1] < results[20][1] < 0.05


def test_encode_accepts_views_and_autograd_tensors() -> None:
    x = _relu_activation((3, 4, 5)).requires_grad_()
    for t in (x, x.transpose(0, 2), x[:, ::2]):
        y = decode(get_codec("lossless").encode(t))
        assert torch.equal(y, t.detach()) and not y.requires_grad


@pytest.mark.parametrize("bad", ["text", [1, 2], torch.zeros(3).to_sparse()])
def test_encode_refuses_non_tensors_and_sparse(bad: object) -> None:
    with pytest.raises(CodecError):
        get_codec("lossless").encode(bad)  # type: ignore[arg-type]


_F32_MAX = float(np.finfo(np.float32).max)


@pytest.mark.parametrize(
    "t",
    [
        torch.tensor([_F32_MAX, -_F32_MAX, 0.0, 1.0, _F32_MAX / 3]),
        torch.tensor([_F32_MAX, _F32_MAX * 0.999999]),
        torch.tensor([1e6, 1e6 + 0.0625, 1e6 + 0.125]),  # range of a few ulps
        torch.tensor([1e-45, 2e-45, 0.0]),  # subnormal range
        torch.tensor([1e-40, 3e-39, -1e-41]),
        torch.tensor([1.0, 1.0 + 2**-23]),
        torch.tensor([65504.0, -65504.0, 3.0, float("inf")]).half(),
        torch.tensor([3.38e38, -3.38e38, 1.0]).bfloat16(),
        torch.tensor([_F32_MAX, -_F32_MAX], dtype=torch.float64),
    ],
    ids=str,
)
@pytest.mark.parametrize("name", ["fp16", "bf16", *QUANT_CODECS])
def test_extreme_values_stay_within_bound_or_are_refused(name: str, t: torch.Tensor) -> None:
    codec = get_codec(name)
    try:
        codec.max_abs_error(t)
    except CodecError as e:  # NaN/Inf under a quantizer, or fp16 overflow: refused, and encode agrees
        assert "NaN/Inf" in str(e) or "overflow" in str(e)
        with pytest.raises(CodecError):
            codec.encode(t)
        return
    check_codec(codec, t.reshape(1, -1), num_corruptions=4, max_truncations=8)


def test_bf16_keeps_fp16_extremes_finite() -> None:
    x = torch.tensor([65504.0, -65504.0, 65500.0, float("inf"), 1.0]).half()
    y = decode(get_codec("bf16").encode(x))
    assert y.tolist() == [65504.0, -65504.0, 65504.0, float("inf"), 1.0]


def test_the_suite_catches_an_overconfident_bound() -> None:
    class Overconfident(type(get_codec("int8"))):  # claims half the error it can make
        def max_abs_error(self, tensor: torch.Tensor) -> float:
            return super().max_abs_error(tensor) / 2

    with pytest.raises(AssertionError, match="exceeds bound"):
        check_codec(Overconfident(), _relu_activation((4, 64)))


def test_fp16_overflow_names_the_value() -> None:
    with pytest.raises(CodecError, match=r"100000.*65504"):
        get_codec("fp16").encode(torch.tensor([1.0, 1e5]))


def test_quantizers_refuse_nan_and_float64_beyond_float32() -> None:
    with pytest.raises(CodecError, match="1 NaN/Inf"):
        get_codec("int8").encode(torch.tensor([1.0, float("nan")]))
    with pytest.raises(CodecError, match="float32 range"):
        get_codec("int4").encode(torch.tensor([1.0, 1e300], dtype=torch.float64))


def test_payload_buffers_of_every_kind_decode() -> None:
    x = _relu_activation((2, 3))
    payload = get_codec("int8").encode(x)
    expected = decode(payload)
    array = np.frombuffer(payload, dtype=np.uint8)
    for buf in (bytearray(payload), memoryview(payload), array, memoryview(b"..." + payload)[3:]):
        assert torch.equal(decode(buf), expected)
    _refused("text", "bytes-like, got str")
    _refused([1, 2], "bytes-like")
    _refused(np.zeros((4, 4), np.uint8)[:, ::2], "contiguous")


def test_concurrent_encode_and_decode_agree() -> None:
    xs = [_relu_activation((1, 8, 16, 16), seed) for seed in range(16)]
    serial = [get_codec("int4", level=3).encode(x) for x in xs]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(get_codec("int4", level=3).encode, xs))
        decoded = list(pool.map(decode, parallel))
    assert parallel == serial
    assert all(torch.equal(d, decode(p)) for d, p in zip(decoded, serial))


# --- hostile payloads, one check at a time -----------------------------------------------------

_LOSSLESS, _INT8, _INT8C, _FP16, _PNG = (CODEC_IDS[n] for n in ("lossless", "int8", "int8c", "fp16", "png"))
_F32, _BOOL, _U8 = DTYPE_CODES[torch.float32], DTYPE_CODES[torch.bool], DTYPE_CODES[torch.uint8]


def _zstd(data: bytes, **options: object) -> bytes:
    return zstandard.ZstdCompressor(level=1, write_checksum=True, **options).compress(data)


def test_framing_errors_name_the_problem() -> None:
    good = _raw_payload(_LOSSLESS, _F32, (2,), b"", _zstd(bytes(8)))
    assert torch.equal(decode(good), torch.zeros(2))
    _refused(good[:10], "truncated", "10 bytes")
    _refused(good[:-1], "truncated", f"{len(good) - 1} bytes", f"declares {len(good)}")
    _refused(good + b"\0", "trailing bytes")
    _refused(b"XXXX" + good[4:], "magic b'XXXX'")
    _refused(_raw_payload(_LOSSLESS, _F32, (2,), b"", _zstd(bytes(8)), version=2), "version 2")
    _refused(good[:20] + bytes([good[20] ^ 1]) + good[21:], "corrupt header", "CRC-32")
    _refused(good[:24] + bytes([good[24] ^ 1]) + good[25:], "corrupt header")  # shape byte flipped
    _refused(_raw_payload(77, _F32, (2,), b"", _zstd(bytes(8))), "unknown codec id 77")
    _refused(_raw_payload(_LOSSLESS, 99, (2,), b"", _zstd(bytes(8))), "unknown dtype code 99")
    _refused(_raw_payload(_LOSSLESS, _F32, (0,) * 40, b"", b""), "ndim 40")
    _refused(_raw_payload(_LOSSLESS, _F32, (-3, 4), b"", b""), "negative dimension", "(-3, 4)")


def test_declared_sizes_are_checked_before_allocation() -> None:
    _refused(_raw_payload(_LOSSLESS, _F32, (2**40,), b"", _zstd(b"")), f"{2**40} elements", "limit of")
    _refused(_raw_payload(_LOSSLESS, _F32, (2**31, 2**31, 2**31), b"", b""), "elements")
    small = DecodeLimits(max_elements=1000, max_bytes=100)
    _refused(_raw_payload(_LOSSLESS, _F32, (26,), b"", _zstd(bytes(104))), "104 bytes", "limit of 100", limits=small)
    # within limits, but a 22-byte body cannot expand to 400 MB: refused before the buffer exists
    _refused(_raw_payload(_LOSSLESS, _F32, (10**8,), b"", _zstd(b"")), "cannot hold the 400000000 bytes")


def test_lying_bodies_are_refused() -> None:
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", _zstd(bytes(44))), "declares 44 bytes, header implies 40")
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", _zstd(bytes(40), write_content_size=False)), "content size")
    no_checksum = zstandard.ZstdCompressor(level=1, write_checksum=False).compress(bytes(40))
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", no_checksum), "checksum")
    frame = _zstd(bytes(40))
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", frame[:-2]), "truncated")
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", frame + _zstd(b"x")), "trailing bytes", "zstd frame is 21")
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", b"not zstd at all"), "not a zstd frame")
    _refused(_raw_payload(_LOSSLESS, _F32, (10,), b"", frame[:-1] + bytes([frame[-1] ^ 1])), "checksum")
    _refused(_raw_payload(_LOSSLESS, _BOOL, (2,), b"", _zstd(b"\x01\x02")), "byte value 2")


@pytest.mark.parametrize("name", sorted(zstd_bomb_frames()))
def test_zstd_bombs_are_refused(name: str) -> None:
    bomb = zstd_bomb_frames()[name]
    _refused(_raw_payload(_LOSSLESS, _F32, (4,), b"", bomb))
    _refused(_raw_payload(_LOSSLESS, _F32, (2**20,), b"", bomb))  # 4 MiB: allowed, but not by this frame


def test_bad_codec_params_are_refused() -> None:
    body = _zstd(bytes(4))
    ok = struct.pack("<ff", 0.0, 0.5)
    assert decode(_raw_payload(_INT8, _F32, (4,), ok, body)).tolist() == [0.0] * 4
    _refused(_raw_payload(_INT8, _F32, (4,), struct.pack("<ff", 0.0, float("nan")), body), "not finite")
    _refused(_raw_payload(_INT8, _F32, (4,), struct.pack("<ff", float("inf"), 1.0), body), "not finite")
    _refused(_raw_payload(_INT8, _F32, (4,), struct.pack("<ff", 0.0, -1.0), body), "negative scale")
    _refused(_raw_payload(_INT8, _F32, (4,), struct.pack("<ff", 3e38, 1e37), body), "beyond float32 range")
    _refused(_raw_payload(_INT8, _F32, (4,), ok[:4], body), "8 bytes")
    _refused(_raw_payload(_INT8, DTYPE_CODES[torch.int64], (4,), ok, body), "only encodes floats")
    channel_params = bytes([1]) + struct.pack("<4f", 0, 0, 1, 1)
    good_c = _raw_payload(_INT8C, _F32, (1, 2, 2), channel_params, body)
    assert decode(good_c).shape == (1, 2, 2)
    _refused(_raw_payload(_INT8C, _F32, (1, 3, 2), channel_params, _zstd(bytes(6))), "3 channels need 25")
    _refused(_raw_payload(_INT8C, _F32, (1, 2, 2), bytes([3]) + channel_params[1:], body), "axis 3")
    _refused(_raw_payload(_FP16, _F32, (2,), b"\x02", body), "flag byte")


def test_bad_image_payloads_are_refused() -> None:
    image = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    payload = get_codec("png").encode(image)
    header = read_header(payload)
    body = payload[-header.body_nbytes :]
    params = payload[-header.body_nbytes - header.params_nbytes : -header.body_nbytes]
    _refused(_raw_payload(_PNG, _U8, (1, 3, 9, 8), params, body), "header says RGB 8x9")
    _refused(_raw_payload(_PNG, _U8, (1, 1, 8, 8), params, body), "header says L 8x8")
    _refused(_raw_payload(_PNG, _U8, (2, 3, 8, 8), params, body), "2 images need 16")
    _refused(_raw_payload(_PNG, _U8, (1, 3, 8, 8), params, body + b"x"), "sum to")
    _refused(_raw_payload(_PNG, _U8, (3, 8, 8), b"", b""), "(B, C, H, W)")
    flipped = body[:40] + bytes([body[40] ^ 1]) + body[41:]
    _refused(_raw_payload(_PNG, _U8, (1, 3, 8, 8), params, flipped), "CRC-32")
    jpeg_body = get_codec("jpeg").encode(image)[-len(body) :]  # not a PNG, even with a matching CRC
    entry = struct.pack("<II", len(jpeg_body), zlib.crc32(jpeg_body))
    _refused(_raw_payload(_PNG, _U8, (1, 3, 8, 8), entry, jpeg_body), "corrupt")


def test_pack_payload_matches_the_documented_layout() -> None:
    body = _zstd(bytes(8))
    assert pack_payload(_LOSSLESS, torch.float32, (2,), b"", body) == _raw_payload(_LOSSLESS, _F32, (2,), b"", body)
