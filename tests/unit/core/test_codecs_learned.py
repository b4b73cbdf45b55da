"""learned:b<cut>: a trained bottleneck shipped in an artifact; round trips, bounds, fingerprint binding."""

from __future__ import annotations

import struct
import zlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from edgeflow.core.artifact import load_artifact, save_artifact
from edgeflow.core.codecs import DecodeLimits, codec_from_spec, decode, get_codec
from edgeflow.core.codecs.format import CODEC_IDS, pack_payload, split_payload
from edgeflow.core.codecs.learned import (
    Bottleneck,
    LearnedCodec,
    bottleneck_tensors,
    bottlenecks_from_tensors,
    install_bottlenecks,
    installed_bottlenecks,
    uninstall_bottlenecks,
)
from edgeflow.core.data import DEMO_WEIGHTS
from edgeflow.core.profile import _offered_at
from edgeflow.errors import ArtifactError, CodecError

FP_A = "a1" * 32
FP_B = "b2" * 32
BOTTLENECK_WEIGHTS = DEMO_WEIGHTS.with_name("demo_bottleneck.safetensors")


@pytest.fixture(autouse=True)
def _clean():
    uninstall_bottlenecks()
    yield
    uninstall_bottlenecks()


def _bottleneck(seed: int = 0, latent: int = 2, levels: int = 4) -> Bottleneck:
    torch.manual_seed(seed)
    b = Bottleneck(8, 16, 16, latent, levels, 8).eval()
    with torch.no_grad():
        b.enc[2].bias.fill_(1.0)  # symbols spread over the levels, not all 0
        b.pmf.copy_(torch.tensor([[0.4, 0.3, 0.2, 0.1]] * latent)[:, :levels])
    return b


def _act(batch: int = 1, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, 16, 16, generator=g).relu()


def _params(payload: bytes) -> tuple[tuple[int, ...], bytes, bytes]:
    header, params, body = split_payload(payload, DecodeLimits())
    return header.shape, bytes(params), bytes(body)


def _repack(shape, params: bytes, body: bytes) -> bytes:
    return pack_payload(CODEC_IDS["learned"], torch.float32, tuple(shape), params, body)


@pytest.mark.parametrize("batch", [1, 3])
def test_round_trip_is_the_bottleneck_forward(batch):
    b = _bottleneck()
    install_bottlenecks(FP_A, {20: b})
    x = _act(batch)
    payload = LearnedCodec(20).encode(x)
    y = decode(payload)
    assert y.shape == x.shape and y.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(y, b(x), atol=1e-6)
    assert LearnedCodec(20).max_abs_error(x) is None


def test_spec_and_registry():
    c = codec_from_spec("learned:b20")
    assert c == LearnedCodec(20) == get_codec("learned", cut=20) and c.spec == "learned:b20"
    assert codec_from_spec("learned:b36").only_at == 36
    with pytest.raises(CodecError, match="cut"):
        LearnedCodec(-1)
    assert _offered_at(c, 20) and not _offered_at(c, 12) and _offered_at(get_codec("int8"), 12)


def test_bytes_are_small():
    install_bottlenecks(FP_A, {20: _bottleneck()})
    payload = LearnedCodec(20).encode(_act())
    # 56-byte header + 20 params + rANS words for 128 symbols of at most 2 bits each (+ the coder's 1-2 words).
    assert len(payload) <= 56 + 20 + 4 * (128 * 2 // 32 + 2)


def test_encode_refusals():
    with pytest.raises(CodecError, match="no bottleneck at cut 20"):
        LearnedCodec(20).encode(_act())
    install_bottlenecks(FP_A, {20: _bottleneck()})
    with pytest.raises(CodecError, match=r"\(B, 8, 16, 16\)"):
        LearnedCodec(20).encode(torch.zeros(1, 8, 8, 8))
    with pytest.raises(CodecError, match="float32"):
        LearnedCodec(20).encode(_act().double())
    with pytest.raises(CodecError, match="NaN"):
        LearnedCodec(20).encode(torch.full((1, 8, 16, 16), float("nan")))
    install_bottlenecks(FP_B, {20: _bottleneck(1)})
    with pytest.raises(CodecError, match="2 artifacts"):
        LearnedCodec(20).encode(_act())


def test_another_artifacts_payload_is_refused():
    install_bottlenecks(FP_A, {20: _bottleneck()})
    payload = LearnedCodec(20).encode(_act())
    uninstall_bottlenecks(FP_A)
    install_bottlenecks(FP_B, {20: _bottleneck(1)})
    with pytest.raises(CodecError, match="encoded by artifact a1a1"):
        decode(payload)
    uninstall_bottlenecks()
    with pytest.raises(CodecError, match="none"):
        decode(payload)
    assert installed_bottlenecks() == []


def test_truncated_and_corrupt_payloads_are_refused():
    install_bottlenecks(FP_A, {20: _bottleneck()})
    payload = LearnedCodec(20).encode(_act())
    for n in range(len(payload)):
        with pytest.raises(CodecError):
            decode(payload[:n])
    for i in range(len(payload)):
        for flip in (0x01, 0x80):
            bad = bytearray(payload)
            bad[i] ^= flip
            with pytest.raises(CodecError):
                decode(bytes(bad))


def test_lying_params_are_refused_before_decoding():
    install_bottlenecks(FP_A, {20: _bottleneck()})
    shape, params, body = _params(LearnedCodec(20).encode(_act()))
    version, cut, prefix, numel, crc = struct.unpack("<BH8sII", params)
    lie = struct.pack("<BH8sII", version, cut, prefix, numel * 1000, crc)  # more symbols than the shape has
    with pytest.raises(CodecError, match="declare 128000 symbols; shape"):
        decode(_repack(shape, lie, body))
    huge = bytes(4 * 200)  # longer than 128 symbols at 24 bits each can take
    with pytest.raises(CodecError, match="multiple of 4 in 0..392"):
        decode(_repack(shape, struct.pack("<BH8sII", version, cut, prefix, numel, zlib.crc32(huge)), huge))
    with pytest.raises(CodecError, match="multiple of 4"):
        decode(_repack(shape, struct.pack("<BH8sII", version, cut, prefix, numel, zlib.crc32(body[:-1])), body[:-1]))
    with pytest.raises(CodecError, match="corrupt learned body"):
        decode(_repack(shape, struct.pack("<BH8sII", version, cut, prefix, numel, crc ^ 1), body))
    with pytest.raises(CodecError, match="version 9"):
        decode(_repack(shape, struct.pack("<BH8sII", 9, cut, prefix, numel, crc), body))
    with pytest.raises(CodecError, match="params are 18 bytes, expected 19"):
        decode(_repack(shape, params[:-1], body))
    with pytest.raises(CodecError, match=r"carries float32 \(B, 8, 16, 16\)"):
        decode(_repack((1, 8, 16, 17), params, body))
    with pytest.raises(CodecError, match="cut 21"):  # no bottleneck there
        decode(_repack(shape, struct.pack("<BH8sII", version, 21, prefix, numel, crc), body))
    # A batch beyond the limits is refused from the header, before any symbol array exists.
    with pytest.raises(CodecError, match="over the limit"):
        decode(_repack((10**6, 8, 16, 16), params, body), DecodeLimits(max_elements=2**20))
    # An empty body is a valid stack (every symbol 0, the first of each model): it decodes to the decoder's output.
    empty = _repack(shape, struct.pack("<BH8sII", version, cut, prefix, numel, zlib.crc32(b"")), b"")
    with torch.no_grad():
        assert torch.equal(decode(empty), _bottleneck().dec(torch.zeros(1, 2, 8, 8)))
    # Garbage words with a matching CRC: decoded (the count is bounded by the shape), then refused.
    junk = bytes(range(40))
    with pytest.raises(CodecError, match="corrupt learned body"):
        decode(_repack(shape, struct.pack("<BH8sII", version, cut, prefix, numel, zlib.crc32(junk)), junk))


def _demo_with_bottleneck(tmp_path, b: Bottleneck):
    art = load_artifact(DEMO_WEIGHTS)
    path = tmp_path / "bn.safetensors"
    fp = save_artifact(path, art.model, art.arch, art.config, list(art.exits), art.calibration,
                       extra=bottleneck_tensors(20, b))
    return art, path, fp


def test_artifact_carries_the_bottleneck_under_its_fingerprint(tmp_path):
    b = _bottleneck()
    demo, path, fp = _demo_with_bottleneck(tmp_path, b)
    art = load_artifact(path)
    assert art.fingerprint == fp != demo.fingerprint
    assert sorted(art.bottlenecks) == [20]
    install_bottlenecks(art.fingerprint, art.bottlenecks)
    x = _act()
    with torch.no_grad():
        assert torch.allclose(decode(LearnedCodec(20).encode(x)), b(x), atol=1e-6)
    # Other bottleneck weights, same metadata (stored fingerprint): refused on load.
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["bottleneck.b20.dec.5.weight"] = tensors["bottleneck.b20.dec.5.weight"] * 1.01
    save_file(tensors, str(tmp_path / "tampered.safetensors"), metadata=meta)
    with pytest.raises(ArtifactError, match="does not match the stored"):
        load_artifact(tmp_path / "tampered.safetensors")
    # A pinned fingerprint (the demo's) refuses the bottleneck artifact.
    with pytest.raises(ArtifactError, match="differs from the pinned"):
        load_artifact(path, expect_fingerprint=demo.fingerprint)


def test_malformed_bottleneck_tensors_are_refused(tmp_path):
    good = bottleneck_tensors(20, _bottleneck())
    bad_geo = dict(good, **{"bottleneck.b20.geometry": torch.tensor([8, 16, 16, 2, 4, 9])})
    with pytest.raises(ValueError, match=r"b20.enc.0.weight: expected torch.float32 \(9, 8, 3, 3\)"):
        bottlenecks_from_tensors(bad_geo)
    with pytest.raises(ValueError, match="bad bottleneck tensor name"):
        bottlenecks_from_tensors({"bottleneck.x.y": torch.zeros(1)})
    with pytest.raises(ValueError, match="pmf"):
        bottlenecks_from_tensors(dict(good, **{"bottleneck.b20.pmf": torch.zeros(2, 4)}))
    with pytest.raises(ValueError, match="levels must be in"):
        bottlenecks_from_tensors(dict(good, **{"bottleneck.b20.geometry": torch.tensor([8, 16, 16, 2, 10**6, 8])}))
    art = load_artifact(DEMO_WEIGHTS)
    with pytest.raises(ArtifactError, match="does not start with"):
        save_artifact(tmp_path / "x.safetensors", art.model, art.arch, art.config, extra={"other.x": torch.zeros(1)})
    # Geometry that disagrees with the weights, saved as an artifact: refused on load as an ArtifactError.
    path = tmp_path / "badgeo.safetensors"
    save_artifact(path, art.model, art.arch, art.config, list(art.exits), art.calibration, extra=bad_geo)
    with pytest.raises(ArtifactError, match="malformed bottleneck"):
        load_artifact(path)


@pytest.mark.skipif(not BOTTLENECK_WEIGHTS.is_file(), reason="demo_bottleneck.safetensors not built")
def test_shipped_bottleneck_is_64x_and_keeps_the_answers():
    """The shipped artifact: >= 64x fewer bytes than fp32 at cut 20 (header included) on calibration images, and
    the answers mostly unchanged (the measured test-split loss is in benchmarks/results/cuts.json)."""
    from edgeflow.core.data import load_demo_dataset
    from edgeflow.core.partition import partition

    art = load_artifact(BOTTLENECK_WEIGHTS)
    assert art.fingerprint != load_artifact(DEMO_WEIGHTS).fingerprint
    install_bottlenecks(art.fingerprint, art.bottlenecks)
    x, _ = load_demo_dataset("calibration")
    x = x[:64]
    p = partition(art.model, x[:1])
    head, tail = p.range_module(0, 20), p.range_module(20, p.num_positions)
    codec = LearnedCodec(20)
    nbytes, same = 0, 0
    with torch.no_grad():
        ref = art.model(x).argmax(1)
        for i in range(len(x)):
            a = head(x[i : i + 1])
            payload = codec.encode(a)
            nbytes += len(payload)
            same += int(tail(decode(payload)).argmax(1)) == int(ref[i])
    assert 8192 * len(x) / nbytes >= 64
    assert same >= 0.9 * len(x)


@pytest.mark.parametrize("batch", [1, 2])
def test_conformance_suite(batch):
    from edgeflow.testing.codecs import check_codec

    install_bottlenecks(FP_A, {20: _bottleneck()})
    report = check_codec(LearnedCodec(20), _act(batch, seed=5), num_corruptions=16, max_truncations=12)
    assert report.bound is None
