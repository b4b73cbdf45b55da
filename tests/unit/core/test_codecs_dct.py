"""The dct codec: conformance, what it buys, its spec in plans, and every bound on a hostile payload by name."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeflow.core.codecs import CODEC_NAMES, OPT_IN_CODECS, DctCodec, DecodeLimits, codec_from_spec, decode, get_codec
from edgeflow.core.codecs.dct import band_edges
from edgeflow.core.codecs.format import pack_payload, split_payload
from edgeflow.core.plan import Plan
from edgeflow.errors import CodecError, PlanError
from edgeflow.testing.codecs import check_codec

_UNLIMITED = DecodeLimits(max_elements=2**40, max_bytes=2**42)
_FIXED = struct.Struct("<BfHIIB")  # the params' fixed part, as documented in dct.py


def _smooth_relu(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A post-ReLU activation with spatial structure: upsampled noise, as conv features are."""
    g = torch.Generator().manual_seed(seed)
    *lead, h, w = shape
    coarse = torch.randn(math.prod(lead) or 1, 1, max(h // 4, 1), max(w // 4, 1), generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return torch.relu(fine + 0.05 * torch.randn(fine.shape, generator=g)).reshape(shape)


def _parts(payload: bytes) -> tuple[object, bytes, bytes]:
    header, params, body = split_payload(payload, _UNLIMITED)
    return header, bytes(params), bytes(body)


def _reseal(payload: bytes, params: bytes, body: bytes, shape: tuple[int, ...] | None = None) -> bytes:
    header, _, _ = _parts(payload)
    return pack_payload(header.codec_id, header.dtype, shape or header.shape, params, body)


def _with_fixed(params: bytes, **changes: object) -> bytes:
    names = ("version", "step", "qmax", "numel", "crc", "nbands")
    values = dict(zip(names, _FIXED.unpack_from(params, 0)))
    values.update(changes)
    return _FIXED.pack(*(values[n] for n in names)) + params[_FIXED.size :]


# --- conformance and behaviour -------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(1, 8, 16, 16), (2, 3, 5, 7), (1, 16, 8, 8), (1, 64), (5,), (), (0, 3, 4), (1, 1, 1, 1)]
)
@pytest.mark.parametrize("step", [1, 15, 200])
def test_conformance_on_activations(shape: tuple[int, ...], step: int) -> None:
    t = _smooth_relu(shape) if len(shape) >= 2 and math.prod(shape) else torch.relu(torch.randn(shape))
    report = check_codec(get_codec("dct", step=step), t, num_corruptions=16, max_truncations=24)
    assert report.bound is not None and report.observed_error <= report.bound


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(
    seed=st.integers(0, 2**16),
    log_scale=st.floats(-20, 20),
    signed=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64]),
)
def test_round_trip_within_bound_at_any_scale_and_dtype(seed: int, log_scale: float, signed: bool, dtype) -> None:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(1, 4, 6, 5, generator=g) * 2.0**log_scale
    t = (t if signed else torch.relu(t)).to(dtype)
    if dtype == torch.float16 and not torch.isfinite(t).all():
        return
    check_codec(get_codec("dct"), t, num_corruptions=8, max_truncations=12)


def test_long_axes_are_not_transformed_so_no_side_squared_matrix_is_built() -> None:
    # A (100000, 100000) DCT matrix would be 40 GB: an axis over 256 is coded untransformed, either side.
    x = torch.relu(torch.randn(2, 100_000, generator=torch.Generator().manual_seed(0)))
    report = check_codec(get_codec("dct"), x, num_corruptions=4, max_truncations=6)
    assert report.observed_error <= report.bound


def test_non_finite_is_refused_and_other_dtypes_pass_through() -> None:
    with pytest.raises(CodecError, match="NaN/Inf"):
        get_codec("dct").encode(torch.tensor([[1.0, float("nan")]]))
    ints = torch.arange(12, dtype=torch.int32).reshape(3, 4)
    assert torch.equal(decode(get_codec("dct").encode(ints)), ints)


def test_smooth_maps_cost_fewer_bytes_than_int2_at_a_finer_error() -> None:
    x = _smooth_relu((1, 8, 16, 16))
    dct, int2 = get_codec("dct").encode(x), get_codec("int2").encode(x)
    assert len(dct) < len(int2)
    err_dct = float((decode(dct) - x).abs().mean())
    err_int2 = float((decode(int2) - x).abs().mean())
    assert err_dct < err_int2


def test_larger_steps_make_smaller_payloads() -> None:
    x = _smooth_relu((1, 8, 16, 16), seed=3)
    sizes = [len(get_codec("dct", step=s).encode(x)) for s in (5, 15, 40)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_an_all_zero_tensor_has_an_empty_body() -> None:
    payload = get_codec("dct").encode(torch.zeros(1, 4, 8, 8))
    _, params, body = _parts(payload)
    assert body == b"" and _FIXED.unpack_from(params, 0)[2] == 0  # qmax 0
    assert torch.equal(decode(payload), torch.zeros(1, 4, 8, 8))


def test_band_edges_grow_geometrically_and_cover_every_frequency() -> None:
    assert band_edges(16, 16) == [0, 1, 2, 3, 5, 7, 10, 15, 22]  # u + v runs to 30
    assert band_edges(1, 1) == [0]
    big = band_edges(112, 112)
    assert len(big) == 14 and big[-1] < 223 <= big[-1] * 3 // 2  # the last band reaches u + v = 222


# --- names, specs, plans -------------------------------------------------------------------------


def test_spec_round_trips_and_bad_parameters_are_named() -> None:
    assert "dct" in CODEC_NAMES and "dct" in OPT_IN_CODECS
    assert codec_from_spec("dct:d25") == DctCodec(step=25) and DctCodec(25).spec == "dct:d25"
    assert get_codec("dct").spec == "dct:d15"
    for bad in ("dct:d0", "dct:d1001"):
        with pytest.raises(CodecError, match="step must be an int in 1..1000"):
            codec_from_spec(bad)
    with pytest.raises(CodecError, match="takes no parameter level"):
        codec_from_spec("dct:z3")


def test_plans_parse_and_check_the_dct_spec() -> None:
    plan = Plan.parse("device[0:20]|dct:d18 > cloud[20:]")
    assert plan.stages[0].codec == "dct:d18" and str(plan) == "device[0:20]|dct:d18 > cloud[20:]"
    plan.check(70, list(range(1, 70)), codecs=CODEC_NAMES)
    with pytest.raises(PlanError, match="unknown codec"):
        Plan.parse("device[0:20]|dct:d18 > cloud[20:]").check(70, list(range(1, 70)), codecs=("int8",))


# --- hostile payloads: each bound by name ----------------------------------------------------------


@pytest.fixture(scope="module")
def payload() -> bytes:
    return get_codec("dct").encode(_smooth_relu((1, 8, 16, 16), seed=1))


def test_params_declaring_more_symbols_than_the_shape_are_refused(payload: bytes) -> None:
    header, params, body = _parts(payload)
    bad = _reseal(payload, _with_fixed(params, numel=header.numel + 1), body)
    with pytest.raises(CodecError, match=r"declare 2049 symbols, shape \(1, 8, 16, 16\) has 2048"):
        decode(bad)


def test_a_shape_that_disagrees_with_the_params_is_refused(payload: bytes) -> None:
    _, params, body = _parts(payload)
    with pytest.raises(CodecError, match="dct params are"):
        decode(_reseal(payload, params, body, shape=(1, 9, 16, 16)))  # one more map gain expected
    with pytest.raises(CodecError, match="symbols"):
        decode(_reseal(payload, params, body, shape=(1, 8, 16, 17)))  # same maps and bands, more symbols


def test_a_body_over_24_bits_per_symbol_is_refused_before_decoding(payload: bytes) -> None:
    _, params, body = _parts(payload)
    huge = body + bytes(4 * 2048)
    with pytest.raises(CodecError, match="multiple of 4 in 4.."):
        decode(_reseal(payload, _with_fixed(params, crc=zlib.crc32(huge)), huge))


def test_truncated_or_corrupt_bodies_are_refused(payload: bytes) -> None:
    _, params, body = _parts(payload)
    with pytest.raises(CodecError, match="CRC-32"):
        decode(_reseal(payload, params, body[:-4]))
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0x40
    with pytest.raises(CodecError, match="corrupt dct body: CRC-32"):
        decode(_reseal(payload, params, bytes(flipped)))
    with pytest.raises(CodecError, match="multiple of 4"):
        decode(_reseal(payload, _with_fixed(params, crc=zlib.crc32(body[:-1])), body[:-1]))


def test_a_body_with_words_left_over_is_refused(payload: bytes) -> None:
    _, params, body = _parts(payload)
    # A word under the bottom of the ANS stack: its CRC matches, but decoding the declared symbols never reaches it.
    longer = struct.pack("<I", 0x12345678) + body
    with pytest.raises(CodecError, match="words remain after decoding the 2048 declared symbols"):
        decode(_reseal(payload, _with_fixed(params, crc=zlib.crc32(longer)), longer))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "model version 2"),
        ({"qmax": 40000}, "qmax 40000"),
        ({"step": float("nan")}, "step nan"),
        ({"step": -1.0}, "step -1.0"),
        ({"step": 0.0}, "step 0.0 with qmax"),
        ({"step": 3e38}, "beyond float32 range"),
        ({"nbands": 3}, "declare 3 bands"),
    ],
)
def test_lying_params_are_refused_by_name(payload: bytes, change: dict, message: str) -> None:
    _, params, body = _parts(payload)
    with pytest.raises(CodecError, match=message):
        decode(_reseal(payload, _with_fixed(params, **change), body))


def test_a_tiny_body_declaring_millions_of_symbols_is_refused_before_decoding(payload: bytes) -> None:
    header, params, body = _parts(payload)
    shape = (1, 1, 1024, 65536)  # 64 Mi symbols, within the default limits; neither axis is transformed
    nb = len(band_edges(1, 1))
    bands, gains = bytes([128] * nb), bytes([128])
    fixed = _FIXED.pack(1, 0.5, 3, 1024 * 65536, zlib.crc32(body), nb)
    with pytest.raises(CodecError, match=f"body of {len(body)} bytes cannot hold the 67108864 symbols"):
        decode(_reseal(payload, fixed + bands + gains, body, shape=shape))


def test_declared_sizes_over_the_limits_are_refused_before_decoding(payload: bytes) -> None:
    with pytest.raises(CodecError, match="over the limit"):
        decode(payload, DecodeLimits(max_elements=2047))
    header, params, body = _parts(payload)
    absurd = _reseal(payload, _with_fixed(params, numel=2**31), body, shape=(1, 8, 2**14, 2**14))
    with pytest.raises(CodecError, match="over the limit"):
        decode(absurd)  # 2^31 elements: refused from the header, before params or body are read


def test_a_dtype_that_dct_never_writes_is_refused(payload: bytes) -> None:
    header, params, body = _parts(payload)
    bad = pack_payload(header.codec_id, torch.int32, header.shape, params, body)
    with pytest.raises(CodecError, match="only encodes floats"):
        decode(bad)


def test_decoded_values_depend_only_on_the_payload(payload: bytes) -> None:
    a, b = decode(payload), decode(bytearray(payload))
    assert torch.equal(a, b) and a.dtype == torch.float32 and np.isfinite(a.numpy()).all()
