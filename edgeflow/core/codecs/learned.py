"""``learned``: a trained bottleneck at one cut of one artifact; the device runs its encoder, the next tier its decoder.

A :class:`Bottleneck` (after BottleNet++, Shao & Zhang 2020) maps the activation at its cut, (B, C, H, W), through a
strided conv to ``latent`` channels at (H/2, W/2), quantized to ``levels`` integers 0..levels-1 (trained with a
straight-through estimator, the rest of the model frozen: ``scripts/train_bottleneck.py``). The integers are coded
with rANS (``constriction``) under a learned per-channel categorical model (the symbol frequencies on the training
split, stored with the weights). The decoder, convs back to C channels at (H, W), stands in for the activation.

The weights ship inside an artifact under ``bottleneck.b<cut>.*`` keys, so the artifact's content fingerprint covers
them; :func:`install_bottlenecks` makes an artifact's bottlenecks usable in this process. A payload names the cut
and the first 8 bytes of the fingerprint of the artifact whose encoder wrote it: a tier whose artifact differs
refuses it (``CodecError``), since another decoder would turn the symbols into garbage.

Payload params (little-endian)::

    u8   version (1)
    u16  cut
    8s   artifact fingerprint, first 8 bytes
    u32  number of latent symbols (must equal B * latent * H/2 * W/2 for the header's shape)
    u32  CRC-32 of the body

Body: the ANS stack as little-endian u32 words. Decoding checks the header's shape against the installed bottleneck,
the params, the symbol count, the body length (0..4 * ceil(24 * symbols / 32) + 8 bytes: no symbol costs more than
24 bits; ANS codes a run of the first symbol in no words at all) and the body CRC before it decodes; it allocates only arrays of the declared (shape-checked) size.

``max_abs_error`` is None: a learned codec has no hard bound; its measured accuracy cost is in
``benchmarks/results/cuts.json`` (codec names starting with ``learned``).
"""

from __future__ import annotations

import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from edgeflow.core.codecs.base import Codec, prepare_tensor, register
from edgeflow.core.codecs.format import PayloadHeader, pack_payload
from edgeflow.errors import CodecError

__all__ = [
    "Bottleneck",
    "LearnedCodec",
    "PREFIX",
    "bottleneck_tensors",
    "bottlenecks_from_tensors",
    "install_bottlenecks",
    "uninstall_bottlenecks",
    "installed_bottlenecks",
]

PREFIX = "bottleneck."
_VERSION = 1
_FIXED = struct.Struct("<BH8sII")  # version, cut, fingerprint prefix, symbols, body crc
_MAX_BITS_PER_SYMBOL = 24  # constriction's categorical precision: no symbol costs more
_MAX_LEVELS = 256
_MAX_CHANNELS = 4096
_MAX_SIDE = 4096


class Bottleneck(nn.Module):
    """Encoder (C -> latent at half resolution, quantized to 0..levels-1) and decoder (back to C at full resolution).

    Args:
        channels, height, width: the activation at the cut (without batch).
        latent: latent channels.
        levels: quantization levels.
        hidden: width of the hidden convs.
    """

    def __init__(self, channels: int, height: int, width: int, latent: int, levels: int, hidden: int) -> None:
        super().__init__()
        for name, v, top in (("channels", channels, _MAX_CHANNELS), ("height", height, _MAX_SIDE),
                             ("width", width, _MAX_SIDE), ("latent", latent, _MAX_CHANNELS),
                             ("levels", levels, _MAX_LEVELS), ("hidden", hidden, _MAX_CHANNELS)):  # fmt: skip
            if not 1 <= v <= top:
                raise ValueError(f"bottleneck {name} must be in 1..{top}, got {v}")
        if height % 2 or width % 2 or levels < 2:
            raise ValueError(f"bottleneck needs even sides and >= 2 levels, got {height}x{width}, {levels} levels")
        self.channels, self.height, self.width = channels, height, width
        self.latent, self.levels, self.hidden = latent, levels, hidden
        self.enc = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, 2, 1), nn.ReLU(), nn.Conv2d(hidden, latent, 1),
        )
        self.dec = nn.Sequential(
            nn.Conv2d(latent, hidden, 3, 1, 1), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1), nn.ReLU(),
        )
        # Symbol probabilities per latent channel (levels each), from the training split; float64 for constriction.
        self.register_buffer("pmf", torch.full((latent, levels), 1.0 / levels))

    def geometry(self) -> list[int]:
        return [self.channels, self.height, self.width, self.latent, self.levels, self.hidden]

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Latent integers as floats (straight-through gradient when training). (B, latent, H/2, W/2)"""
        z = self.enc(x)
        q = z.round().clamp(0, self.levels - 1)
        return z + (q - z).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(self.quantize(x))

    def symbols(self, x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.enc(x).round().clamp(0, self.levels - 1).to(torch.int32).numpy()

    def reconstruct(self, q: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return self.dec(torch.from_numpy(q).float())


def bottleneck_tensors(cut: int, b: Bottleneck) -> dict[str, torch.Tensor]:
    """Artifact tensors of a bottleneck at ``cut``: its weights, pmf and geometry under ``bottleneck.b<cut>.``."""
    key = f"{PREFIX}b{cut}."
    out = {key + k: v.detach().cpu().contiguous().clone() for k, v in b.state_dict().items()}
    out[key + "geometry"] = torch.tensor(b.geometry(), dtype=torch.int64)
    return out


def bottlenecks_from_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[int, Bottleneck]:
    """Builds the bottlenecks an artifact's ``bottleneck.*`` tensors describe, every shape checked first.

    Raises:
        ValueError: malformed keys, geometry, weights or pmf.
    """
    groups: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if not k.startswith(PREFIX):
            continue
        head, _, rest = k[len(PREFIX):].partition(".")
        if not (head[:1] == "b" and head[1:].isdigit() and len(head) <= 6 and rest):
            raise ValueError(f"bad bottleneck tensor name {k!r} (expected bottleneck.b<cut>.<key>)")
        groups.setdefault(int(head[1:]), {})[rest] = v
    out: dict[int, Bottleneck] = {}
    for cut, group in sorted(groups.items()):
        geo = group.pop("geometry", None)
        if geo is None or geo.dtype != torch.int64 or tuple(geo.shape) != (6,):
            raise ValueError(f"bottleneck b{cut}: geometry must be 6 int64 values")
        with torch.device("meta"):  # shapes first, no storage
            expected = Bottleneck(*(int(v) for v in geo.tolist())).state_dict()
        missing, extra = sorted(set(expected) - set(group)), sorted(set(group) - set(expected))
        if missing or extra:
            raise ValueError(f"bottleneck b{cut}: missing {missing[:8]}, unexpected {extra[:8]}")
        for k, v in expected.items():
            if group[k].shape != v.shape or group[k].dtype != v.dtype:
                raise ValueError(f"bottleneck b{cut}.{k}: expected {v.dtype} {tuple(v.shape)}, "
                                 f"got {group[k].dtype} {tuple(group[k].shape)}")
        pmf = group["pmf"]
        if not bool(torch.isfinite(pmf).all()) or bool((pmf <= 0).any()):
            raise ValueError(f"bottleneck b{cut}: pmf must be finite and positive")
        b = Bottleneck(*(int(v) for v in geo.tolist()))
        b.load_state_dict(group, strict=True)
        out[cut] = b.eval()
    return out


_LOCK = threading.Lock()
_INSTALLED: dict[tuple[str, int], Bottleneck] = {}  # (fingerprint, cut) -> bottleneck


def install_bottlenecks(fingerprint: str, bottlenecks: Mapping[int, Bottleneck]) -> list[int]:
    """Makes an artifact's bottlenecks usable by ``learned:b<cut>`` in this process. Returns their cuts."""
    with _LOCK:
        for cut, b in bottlenecks.items():
            _INSTALLED[(fingerprint, int(cut))] = b
    return sorted(bottlenecks)


def uninstall_bottlenecks(fingerprint: str | None = None) -> None:
    """Forgets one artifact's bottlenecks (all when ``fingerprint`` is None)."""
    with _LOCK:
        for key in [k for k in _INSTALLED if fingerprint is None or k[0] == fingerprint]:
            del _INSTALLED[key]


def installed_bottlenecks() -> list[tuple[str, int]]:
    """(fingerprint, cut) of every installed bottleneck."""
    with _LOCK:
        return sorted(_INSTALLED)


def _for_encode(cut: int) -> tuple[str, Bottleneck]:
    with _LOCK:
        found = [(fp, b) for (fp, c), b in _INSTALLED.items() if c == cut]
    if not found:
        raise CodecError(f"learned:b{cut}: no bottleneck at cut {cut} is installed (load an artifact that has one)")
    if len({fp for fp, _ in found}) > 1:
        raise CodecError(f"learned:b{cut}: bottlenecks at cut {cut} from {len(found)} artifacts are installed")
    return found[0]


def _for_decode(cut: int, prefix: bytes) -> tuple[str, Bottleneck]:
    with _LOCK:
        found = [(fp, b) for (fp, c), b in _INSTALLED.items() if c == cut]
    for fp, b in found:
        if bytes.fromhex(fp[:16]) == prefix:
            return fp, b
    have = ", ".join(fp[:16] for fp, _ in found) or "none"
    raise CodecError(
        f"learned payload for cut {cut} was encoded by artifact {prefix.hex()}…; this process has the bottleneck "
        f"of artifact(s) {have} at that cut (another artifact's decoder would give garbage)"
    )


def _models(b: Bottleneck) -> list[Any]:
    from edgeflow.core.codecs.dct import _constriction

    c = _constriction()
    pmf = b.pmf.double().numpy()
    return [c.stream.model.Categorical(p / p.sum(), perfect=False) for p in pmf]


@register
@dataclass(frozen=True)
class LearnedCodec(Codec):
    """The trained bottleneck at ``cut`` of the installed artifact; spec ``learned:b<cut>``, e.g. ``learned:b20``."""

    cut: int = 20

    name: ClassVar[str] = "learned"
    lossless: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.cut, bool) or not isinstance(self.cut, int) or not 0 <= self.cut <= 65535:
            raise CodecError(f"learned: cut must be an int in 0..65535, got {self.cut!r}")

    @property
    def only_at(self) -> int:
        """The one cut this codec is offered at (profiles skip it elsewhere: a same-shaped tensor at another cut
        would encode, and decode to garbage)."""
        return self.cut

    def encode(self, tensor: torch.Tensor) -> bytes:
        t = prepare_tensor(tensor, self.name)
        fp, b = _for_encode(self.cut)
        _check_shape(self.cut, b, tuple(t.shape), t.dtype)
        if not bool(torch.isfinite(t).all()):
            raise CodecError(f"learned:b{self.cut}: tensor has NaN/Inf values")
        q = b.symbols(t)  # (B, latent, H/2, W/2) int32
        c = _constriction_mod()
        coder = c.stream.stack.AnsCoder()
        models = _models(b)
        for i in reversed(range(q.shape[0])):  # a stack: the last channel goes on first, comes off last
            for ch in reversed(range(q.shape[1])):
                coder.encode_reverse(np.ascontiguousarray(q[i, ch].reshape(-1)), models[ch])
        body = coder.get_compressed().astype("<u4").tobytes()
        params = _FIXED.pack(_VERSION, self.cut, bytes.fromhex(fp[:16]), q.size, zlib.crc32(body))
        return pack_payload(self.codec_id, t.dtype, tuple(t.shape), params, body)

    def max_abs_error(self, tensor: torch.Tensor) -> None:
        return None

    @classmethod
    def decode_parts(cls, header: PayloadHeader, params: memoryview, body: memoryview) -> torch.Tensor:
        if len(params) != _FIXED.size:
            raise CodecError(f"learned params are {len(params)} bytes, expected {_FIXED.size}")
        version, cut, prefix, numel, crc = _FIXED.unpack_from(params, 0)
        if version != _VERSION:
            raise CodecError(f"learned payload version {version}; this build reads {_VERSION}")
        _, b = _for_decode(cut, prefix)
        _check_shape(cut, b, header.shape, header.dtype)
        bsz = header.shape[0]
        hh, ww = b.height // 2, b.width // 2
        expected = bsz * b.latent * hh * ww
        if numel != expected:
            raise CodecError(f"learned params declare {numel} symbols; shape {header.shape} has {expected}")
        max_body = 4 * (-(-numel * _MAX_BITS_PER_SYMBOL // 32) + 2)
        if len(body) % 4 or len(body) > max_body:  # empty is valid: ANS codes a run of the first symbol in no words
            raise CodecError(f"learned body is {len(body)} bytes; {numel} symbols need a multiple of 4 in 0..{max_body}")
        if zlib.crc32(body) != crc:
            raise CodecError(f"corrupt learned body: CRC-32 is {zlib.crc32(body):#010x}, params say {crc:#010x}")
        c = _constriction_mod()
        words = np.frombuffer(body, dtype="<u4").astype(np.uint32)
        out = np.empty((bsz, b.latent, hh * ww), np.int32)
        try:
            coder = c.stream.stack.AnsCoder(words)
            models = _models(b)
            for i in range(bsz):
                for ch in range(b.latent):
                    out[i, ch] = coder.decode(models[ch], hh * ww)
            empty = coder.is_empty()
        except (ValueError, RuntimeError, AssertionError) as e:
            raise CodecError(f"corrupt learned body: {type(e).__name__}: {e}") from None
        if not empty:
            raise CodecError(f"corrupt learned body: words remain after decoding the {numel} declared symbols")
        return b.reconstruct(out.reshape(bsz, b.latent, hh, ww)).to(header.dtype)


def _constriction_mod() -> Any:
    from edgeflow.core.codecs.dct import _constriction

    return _constriction()


def _check_shape(cut: int, b: Bottleneck, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    want = (b.channels, b.height, b.width)
    if len(shape) != 4 or tuple(shape[1:]) != want or shape[0] < 1 or dtype != torch.float32:
        raise CodecError(
            f"learned:b{cut} carries float32 (B, {b.channels}, {b.height}, {b.width}) activations, "
            f"got {dtype} {tuple(shape)}"
        )
