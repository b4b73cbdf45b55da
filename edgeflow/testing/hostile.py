"""Hostile messages for an agent, by class: seeded generators and the statuses each message may get.

Each class builds a :class:`FuzzCase` from a ``random.Random`` seeded by ``(seed, class, index)``
(:func:`build_case`), so a run is the same messages every time and any one can be rebuilt from its label.
A message may get a precise refusal (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, OUT_OF_RANGE),
and OK only where an oracle says it is in fact well formed (e.g. a bit flip that only changed the request id).
:mod:`edgeflow.testing.fuzz` sends them to a live agent.
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import torch
import zstandard

from edgeflow.core.codecs import CODEC_NAMES, codec_from_spec, get_codec
from edgeflow.core.plan import Plan
from edgeflow.errors import EdgeflowError
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import DATATYPES, WireLimits
from edgeflow.transport.wire import encode_varint, frame, split_fields

__all__ = ["OK", "REFUSALS", "FuzzTarget", "FuzzCase", "KINDS", "build_case", "plan_cases", "plan_ok", "valid_request"]

OK = "OK"
REFUSALS = frozenset({"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "OUT_OF_RANGE"})
_ANY = REFUSALS | {OK}
_BAD_ARG = frozenset({"INVALID_ARGUMENT"})
_TOO_BIG = frozenset({"RESOURCE_EXHAUSTED"})
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class FuzzTarget:
    """What the fuzzer knows about the agent's model, and the agent's limits.

    Attributes:
        fingerprint: the model's fingerprint.
        num_positions: N.
        position: valid requests carry the live values at this cut (one tensor).
        tensors: ``(name, datatype, shape)`` of the values at ``position``, batch 1.
        multi_position: a cut with two or more live values (duplicate-name cases), and ``multi_tensors`` theirs.
        compatible: positions whose live values look exactly like ``position``'s.
        exit_positions: positions with an exit head.
        max_message_bytes, max_tensors, max_batch: the agent's limits.
    """

    fingerprint: str
    num_positions: int
    cuts: tuple[int, ...]
    position: int
    tensors: tuple[tuple[str, str, tuple[int, ...]], ...]
    multi_position: int
    multi_tensors: tuple[tuple[str, str, tuple[int, ...]], ...]
    compatible: frozenset[int]
    exit_positions: frozenset[int]
    max_message_bytes: int
    max_tensors: int = 32
    max_batch: int = 64

    @classmethod
    def from_runtime(cls, runtime: Any, *, max_message_bytes: int, max_tensors: int = 32, max_batch: int = 64,
                     position: int | None = None) -> "FuzzTarget":  # fmt: skip
        """From an ``edgeflow.agent.runtime.ModelRuntime`` of the same artifact the agent serves.

        ``position`` defaults to the latest single-tensor cut before the model output.
        """
        n = runtime.num_positions

        def sig(p: int) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
            return tuple((i.name, DATATYPES[i.dtype], tuple(i.shape)) for i in runtime.cut_info(p).tensors)

        cuts = tuple(runtime.cuts)
        singles = [c for c in cuts if len(sig(c)) == 1 and len(sig(c)[0][2]) >= 2 and c < n - 2]
        pos = position if position is not None else singles[-1]
        multi = next(c for c in reversed(cuts) if len(sig(c)) >= 2)
        return cls(runtime.fingerprint, n, cuts, pos, sig(pos), multi, sig(multi),
                   frozenset(p for p in (0, *cuts) if sig(p) == sig(pos)), frozenset(runtime.exits),
                   max_message_bytes, max_tensors, max_batch)  # fmt: skip


@dataclass
class FuzzCase:
    """One hostile call: ``messages`` (one, or a stream's items) and the statuses each may get."""

    kind: str
    method: str  # Infer | InferStream | Describe | Probe
    messages: list[bytes]
    expect: list[frozenset[str]]


# ------------------------------------------------------------------------------------------ building blocks
def _values(shape: tuple[int, ...], r: random.Random) -> torch.Tensor:
    g = torch.Generator().manual_seed(r.randrange(2**31))
    return torch.randn(*shape, generator=g).abs_()  # post-ReLU-like


def _valid_msg(
    t: FuzzTarget, r: random.Random, *, multi: bool = False, codec: str = "lossless"
) -> tuple[Any, list[bytes]]:
    """A valid request: (InferRequest metadata, payloads)."""
    tensors = t.multi_tensors if multi else t.tensors
    msg = pb.InferRequest(id=f"fuzz-{r.randrange(10**9)}", model_fingerprint=t.fingerprint,
                          start=t.multi_position if multi else t.position)  # fmt: skip
    c = get_codec(codec)
    payloads = []
    for name, datatype, shape in tensors:
        m = msg.inputs.add(name=name, datatype=datatype, shape=shape)
        m.parameters["codec"].string_param = c.spec
        payloads.append(c.encode(_values(shape, r)))
    return msg, payloads


def _bytes(msg: Any, payloads: list[bytes]) -> bytes:
    return frame(msg.SerializeToString(), 15, payloads)


def _recrc(payload: bytes | bytearray) -> bytes:
    """Recompute a payload's header CRC after a mutation, so that the checks behind the CRC are reached."""
    b = bytearray(payload)
    if len(b) < 24:
        return bytes(b)
    ndim, params_nbytes = b[7], struct.unpack_from("<I", b, 8)[0]
    end = min(len(b), 24 + 8 * ndim + params_nbytes)
    struct.pack_into("<I", b, 20, zlib.crc32(bytes(b[24:end]), zlib.crc32(bytes(b[:20]))))
    return bytes(b)


def _header(codec_id: int, dtype_code: int, shape: tuple[int, ...], body: bytes, params: bytes = b"") -> bytes:
    fixed = struct.pack("<4sBBBBIQ", b"EFTC", 1, codec_id, dtype_code, len(shape), len(params), len(body))
    return _recrc(fixed + b"\0\0\0\0" + struct.pack(f"<{len(shape)}q", *shape) + params + body)


def _zstd_declaring(nbytes: int, *, checksum: bool = True) -> bytes:
    """A tiny zstd frame whose header declares ``nbytes`` of content (one RLE block of 128 KiB)."""
    descriptor = 0xE0 | (0x04 if checksum else 0)  # 8-byte content size, single segment
    rle = struct.pack("<I", ((128 * 1024) << 3) | (1 << 1) | 1)[:3] + b"\0"
    return b"\x28\xb5\x2f\xfd" + bytes([descriptor]) + struct.pack("<Q", nbytes) + rle + (b"\0" * 4 if checksum else b"")


@lru_cache(maxsize=1)
def _undeclared_64mib() -> bytes:
    sink = zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=False).compressobj()
    chunk = bytes(1 << 20)
    return b"".join(sink.compress(chunk) for _ in range(64)) + sink.flush()


def _garbage_text(r: random.Random, n: int = 24) -> str:
    alphabet = "abcxyzLOSSLESSint8:z-_/ \t\u00e9\u4e2d\U0001f600\x00"
    return "".join(r.choice(alphabet) for _ in range(r.randrange(n)))


# ------------------------------------------------------------------------------------------ classes
def _random_bytes(t: FuzzTarget, r: random.Random) -> FuzzCase:
    n = r.choice([r.randrange(0, 16), r.randrange(0, 256), r.randrange(0, 4096)])
    return FuzzCase("random bytes", "Infer", [r.randbytes(n)], [REFUSALS])


def _random_fields(t: FuzzTarget, r: random.Random) -> FuzzCase:
    out = bytearray()
    for _ in range(r.randrange(1, 12)):
        fnum = r.choice([1, 2, 3, 4, 5, 6, 15, r.randrange(1, 2**29)])
        wire = r.choice([0, 1, 2, 5, 2, 2, r.randrange(8)])
        out += encode_varint((fnum << 3) | wire)
        if wire == 0:
            out += encode_varint(r.randrange(2**64))
        elif wire in (1, 5):
            out += r.randbytes(8 if wire == 1 else 4)
        elif wire == 2:
            body = r.randbytes(r.randrange(64))
            declared = len(body) if r.random() < 0.7 else r.choice([len(body) + 1, 2**31, 2**63])
            out += encode_varint(declared) + body
    return FuzzCase("random protobuf fields", "Infer", [bytes(out)], [REFUSALS])


def _truncated(t: FuzzTarget, r: random.Random) -> FuzzCase:
    data = _bytes(*_valid_msg(t, r, multi=r.random() < 0.3))
    return FuzzCase("truncated", "Infer", [data[: r.randrange(len(data))]], [REFUSALS])


def _flip(data: bytes, lo: int, hi: int, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.choice([1, 1, 2, 3, 8])):
        b[r.randrange(lo, hi)] ^= 1 << r.randrange(8)
    return bytes(b)


def _flips_payload(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r, codec=r.choice(["lossless", "lossless", "int8", "fp16"]))
    p = payloads[0]
    payloads[0] = _flip(p, 0, len(p), r)  # header (CRC), params (CRC), body (zstd checksum)
    return FuzzCase("bit flips: payload", "Infer", [_bytes(msg, payloads)], [REFUSALS])


def _flips_anywhere(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    data = _bytes(msg, payloads)
    meta_len = len(msg.SerializeToString())
    bad = _flip(data, 0, meta_len if r.random() < 0.8 else len(data), r)
    return FuzzCase("bit flips: anywhere", "Infer", [bad], [_ANY if _same_work(bad, data, t) else REFUSALS])


def _same_work(bad: bytes, good: bytes, t: FuzzTarget) -> bool:
    """Oracle: the mutated request asks for the same computation (only the id or unknown fields changed)."""
    limits = WireLimits(max_message_bytes=t.max_message_bytes, max_tensors=t.max_tensors)
    try:
        b = _parsed(good, limits)
        a = _parsed(bad, limits, names=b[2])
    except Exception:  # noqa: BLE001 - anything the local parser refuses must be refused by the agent too
        return False
    return a == b


def _parsed(data: bytes, limits: WireLimits, names: tuple[str, ...] = ()) -> tuple[Any, ...]:
    rest, payloads = split_fields(data, 15, max_payloads=limits.max_tensors, max_payload_nbytes=limits.max_message_bytes)
    m = pb.InferRequest()
    m.ParseFromString(bytes(rest))
    m.id = ""
    m.DiscardUnknownFields()
    for i, tensor in enumerate(m.inputs):  # a payload is self-describing: the declared spec's level does not matter
        if not tensor.name and i < len(names):
            tensor.name = names[i]  # names are optional (positional)
        if "codec" in tensor.parameters:
            try:
                tensor.parameters["codec"].string_param = codec_from_spec(tensor.parameters["codec"].string_param).name
            except EdgeflowError:
                pass
    return m.SerializeToString(deterministic=True), tuple(bytes(p) for p in payloads), tuple(t.name for t in m.inputs)


def _wrong_datatype(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    good = msg.inputs[0].datatype
    msg.inputs[0].datatype = r.choice([d for d in DATATYPES.values() if d != good] + ["FP8", "", "fp32", "FLOAT",
                                                                                      _garbage_text(r)])  # fmt: skip
    if r.random() < 0.5:  # a payload that agrees with the lie
        dtype = r.choice([torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool])
        payloads[0] = get_codec("lossless").encode(torch.zeros(t.tensors[0][2], dtype=dtype))
    return FuzzCase("wrong datatype", "Infer", [_bytes(msg, payloads)], [_BAD_ARG])


def _wrong_shape(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    shape = list(t.tensors[0][2])
    how = r.randrange(5)
    if how == 0:  # another rank
        shape = [r.randrange(1, 5) for _ in range(r.choice([0, 1, 2, 3, 5, 8, 9, 64]))]
    elif how == 1:  # absurd or negative dims
        shape[r.randrange(len(shape))] = r.choice([-1, -(2**63), 2**62, 2**63 - 1, 0, 10**12])
    elif how == 2:  # off by one in a non-batch dim
        i = r.randrange(1, len(shape))
        shape[i] += r.choice([-1, 1])
    elif how == 3:  # batch 0, or over max_batch
        shape[0] = r.choice([0, t.max_batch + 1, 2**40])
    else:  # transposed
        shape = shape[:1] + shape[1:][::-1] if len(set(shape[1:])) > 1 else shape + [1]
    del msg.inputs[0].shape[:]
    msg.inputs[0].shape.extend(shape)
    small = 0 < len(shape) <= 8 and all(0 <= d < 4096 for d in shape) and torch.Size(shape).numel() < 1 << 20
    if small and r.random() < 0.3:
        payloads[0] = get_codec("lossless").encode(torch.zeros(shape))  # a payload that agrees with the lie
    return FuzzCase("wrong shape", "Infer", [_bytes(msg, payloads)], [_BAD_ARG | _TOO_BIG])


def _bad_range(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    n = t.num_positions
    if r.random() < 0.5:
        start = r.choice([-1, _INT32[0], _INT32[1], n, n + 1, 0, r.randrange(-1000, 1000)])
        while start in t.compatible:
            start = r.randrange(-(2**31), 2**31)
        msg.start = start
    else:
        backwards = r.randrange(1, t.position) if t.position > 1 else -5
        stop = r.choice([-1, _INT32[0], _INT32[1], n + 1, t.position, backwards])
        msg.stop = stop
    return FuzzCase("bad start/stop", "Infer", [_bytes(msg, payloads)], [_BAD_ARG])


def _lying_header(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    b = bytearray(payloads[0])
    ndim = b[7]
    what = r.randrange(6)
    if what == 0:  # version
        b[4] = r.choice([0, 2, 255])
    elif what == 1:  # codec id: unknown, or another codec than declared
        b[5] = r.choice([0, 10, 255, *range(2, 10)])
    elif what == 2:  # dtype code
        b[6] = r.choice([0, 2, 4, 5, 9, 10, 21, 255])
    elif what == 3:  # ndim
        b[7] = r.choice([d for d in (0, 1, 3, 5, 33, 255) if d != ndim])
    elif what == 4:  # params or body sizes
        struct.pack_into("<I", b, 8, r.choice([1, 2**32 - 1]))
    else:  # a dim
        i = r.randrange(ndim)
        old = struct.unpack_from("<q", b, 24 + 8 * i)[0]
        struct.pack_into("<q", b, 24 + 8 * i, r.choice([d for d in (-1, 0, 2, 3, 2**40, -(2**63)) if d != old]))
    payloads[0] = _recrc(b) if r.random() < 0.9 else bytes(b)
    return FuzzCase("lying payload header", "Infer", [_bytes(msg, payloads)], [REFUSALS])


def _zstd_bomb(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    name, datatype, shape = t.tensors[0]
    nbytes = torch.Size(shape).numel() * 4
    how = r.randrange(5)
    if how == 0:  # the frame declares gigabytes
        body = _zstd_declaring(r.choice([2**30, 2**33, 2**40, 2**63 - 1]))
    elif how == 1:  # no declared size, 64 MiB of zeros inside
        body = _undeclared_64mib()
    elif how == 2:  # declares the right size, but its blocks hold more
        body = _zstd_declaring(nbytes)
    elif how == 3:  # the right size, no checksum
        body = _zstd_declaring(nbytes, checksum=False)
    else:  # header and wire claim the largest batch; a tiny body claims to fill it
        shape = (t.max_batch, *shape[1:])
        body = _zstd_declaring(torch.Size(shape).numel() * 4)
        del msg.inputs[0].shape[:]
        msg.inputs[0].shape.extend(shape)
    payloads[0] = _header(1, 1, tuple(shape), body)  # lossless, float32
    return FuzzCase("zstd bomb", "Infer", [_bytes(msg, payloads)], [REFUSALS])


def _oversized(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    meta = len(_bytes(msg, payloads)) - len(payloads[0])
    pad = t.max_message_bytes - meta + r.randrange(1, 1024)
    payloads[0] = payloads[0] + bytes(max(pad - len(payloads[0]), 0) + 16)
    return FuzzCase("oversized", "Infer", [_bytes(msg, payloads)], [_TOO_BIG])


def _unknown_codec(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    spec = r.choice(["brotli", "gzip", "LOSSLESS", "", "safetensors", "int9", "lossless\x00", " lossless", _garbage_text(r),
                     "x" * r.choice([257, 5000])])  # fmt: skip
    if r.random() < 0.2:
        del msg.inputs[0].parameters["codec"]
        msg.inputs[0].parameters["codex"].string_param = "lossless"
    else:
        msg.inputs[0].parameters["codec"].string_param = spec
    return FuzzCase("unknown codec", "Infer", [_bytes(msg, payloads)], [_BAD_ARG])


def _wrong_fingerprint(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    fp = t.fingerprint
    msg.model_fingerprint = r.choice(["", fp[:-1], fp + "0", fp.upper() if fp.upper() != fp else "X" + fp,
                                      r.randbytes(16).hex(), "z" * 10_000])  # fmt: skip
    expect = frozenset({"FAILED_PRECONDITION"}) if len(msg.model_fingerprint) <= 256 else _BAD_ARG  # too long to echo
    return FuzzCase("wrong fingerprint", "Infer", [_bytes(msg, payloads)], [expect])


_PLAN_PIECES = ["device", "edge", "cloud", "gpu", "[", "]", ":", "|", ">", "int8", "int9", "lossless", " ", "exits@",
                "0.9", "1.5", "-1", ",", "0", "20", "52", "70", "71", "99999999999999999999", "nan",
                "\u00e9"]  # fmt: skip


def _bad_plan(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    n, p = t.num_positions, t.position
    templates = [
        "".join(r.choice(_PLAN_PIECES) for _ in range(r.randrange(1, 16))),
        f"device[0:{p}]|int8 > cloud[{p}:{n - 1}]",
        f"device[0:{p}]|int8 > cloud[{p}:{n + 5}]",
        f"device[0:{p}]|brotli > cloud[{p}:]",
        f"device[0:{p}] > edge[{p}:]",
        f"cloud[0:]  exits@{r.randrange(1, n)}:0.9",
        f"cloud[0:]  exits@{r.choice(sorted(t.exit_positions) or [1])}:{r.choice(['1.5', '-0.1', 'nan', 'inf'])}",
        f"device[0:{p}]|int8 > cloud[{p}:]" + " " * 2000,
        f"cloud[{p}:0]",
        f"device[0:{2**70}] > cloud[{2**70}:]",
        "device[0:20]|int8 > edge[20:52]|int8 > cloud[52:]"[: r.randrange(1, 50)],
    ]
    plan = r.choice(templates)
    msg.parameters["plan"].string_param = plan
    return FuzzCase("bad plan", "Infer", [_bytes(msg, payloads)], [_ANY if plan_ok(plan, t) else _BAD_ARG])


def plan_ok(text: str, t: FuzzTarget) -> bool:
    """Oracle: whether a cloud agent (no upstream) would take ``text`` as a request's plan."""
    try:
        plan = Plan.parse(text)
        plan.check(t.num_positions, t.cuts, codecs=CODEC_NAMES, exit_positions=t.exit_positions)
        plan = plan.resolved(t.num_positions)
    except EdgeflowError:
        return False
    except Exception:  # noqa: BLE001 - the agent must refuse what the parser chokes on
        return False
    return len(text) <= 4 * 256 and plan.stage("cloud") is not None and plan.upstream_of("cloud") is None


def _duplicate_names(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r, multi=True)
    i, j = r.sample(range(len(msg.inputs)), 2)
    msg.inputs[j].name = msg.inputs[i].name
    if r.random() < 0.3:  # the same tensor twice, in order
        msg.inputs[j].CopyFrom(msg.inputs[i])
        payloads[j] = payloads[i]
    return FuzzCase("duplicate tensor names", "Infer", [_bytes(msg, payloads)], [_BAD_ARG])


def _tensor_counts(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    how = r.randrange(4)
    if how == 0:  # too many tensor entries
        extra = r.choice([t.max_tensors, t.max_tensors + 1, 1000, 20_000])
        for _ in range(extra):
            msg.inputs.add().CopyFrom(msg.inputs[0])
    elif how == 1:  # too many payloads
        payloads = payloads * r.choice([t.max_tensors + 1, 200])
    elif how == 2:  # more of both, consistently
        k = r.choice([t.max_tensors + 1, 100])
        for _ in range(k - 1):
            msg.inputs.add().CopyFrom(msg.inputs[0])
        payloads = payloads * k
    else:  # thousands of tiny top-level fields
        return FuzzCase("huge tensor counts", "Infer", [b"\x18\x01" * r.choice([5000, 50_000])], [REFUSALS])
    return FuzzCase("huge tensor counts", "Infer", [_bytes(msg, payloads)], [REFUSALS])


def _batches(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r, multi=True)
    k = r.randrange(len(msg.inputs))
    b = r.choice([0, 2, 3, t.max_batch + 1])
    shape = (b, *msg.inputs[k].shape[1:])
    del msg.inputs[k].shape[:]
    msg.inputs[k].shape.extend(shape)
    if b <= t.max_batch:
        payloads[k] = get_codec("lossless").encode(torch.zeros(shape))
    return FuzzCase("batch mismatch", "Infer", [_bytes(msg, payloads)], [_BAD_ARG | _TOO_BIG])


def _bad_utf8(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    data = _bytes(msg, payloads)
    bad = r.choice([b"\xc3\x28", b"\xff\xfe", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    fnum = r.choice([1, 2])  # id or fingerprint, appended: the last occurrence of a field wins
    return FuzzCase("invalid UTF-8", "Infer", [data + encode_varint(fnum << 3 | 2) + encode_varint(len(bad)) + bad],
                    [_BAD_ARG])  # fmt: skip


def _hostile_values(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    shape = t.tensors[0][2]
    x = _values(shape, r)
    fill = r.choice([float("nan"), float("inf"), -float("inf"), 3.0e38, 1e-45, -0.0])
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(r.randrange(2**31))) < r.random()
    payloads[0] = get_codec("lossless").encode(torch.where(mask, torch.full(shape, fill), x))
    return FuzzCase("hostile values (well formed)", "Infer", [_bytes(msg, payloads)], [frozenset({OK})])


def _output_codec(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r)
    stops = [c for c in t.cuts if c > t.position] + [t.num_positions]
    msg.stop = r.choice(stops)
    spec = r.choice(["brotli", "int8:q3", "lossless:z99", "int8c:a" + str(r.randrange(-(10**6), 10**6)), "lossless:zz",
                     "int8:z1", "fp16", "lossless", _garbage_text(r), "jpeg"])  # fmt: skip
    msg.parameters["output_codec"].string_param = spec
    return FuzzCase("output codec", "Infer", [_bytes(msg, payloads)], [_ANY])


def _rechecked_params(t: FuzzTarget, r: random.Random) -> FuzzCase:
    msg, payloads = _valid_msg(t, r, codec=r.choice(["int8", "int8c", "int4", "int2"]))
    b = bytearray(payloads[0])
    ndim, params_nbytes = b[7], struct.unpack_from("<I", b, 8)[0]
    start = 24 + 8 * ndim
    if params_nbytes:
        for _ in range(r.randrange(1, 4)):
            i = start + r.randrange(params_nbytes)
            b[i] = r.choice([0x00, 0xFF, 0x7F, 0x80, b[i] ^ (1 << r.randrange(8))])
    payloads[0] = _recrc(b)  # past the CRC: the codec's own checks (NaN or negative scales...) must hold
    return FuzzCase("re-checksummed codec params", "Infer", [_bytes(msg, payloads)], [_ANY])


_STREAMABLE: list[Callable[[FuzzTarget, random.Random], FuzzCase]] = []


def _stream(t: FuzzTarget, r: random.Random) -> FuzzCase:
    items = [r.choice(_STREAMABLE)(t, r) for _ in range(r.randrange(4, 24))]
    return FuzzCase("stream items", "InferStream", [i.messages[0] for i in items], [i.expect[0] for i in items])


def _describe(t: FuzzTarget, r: random.Random) -> FuzzCase:
    if r.random() < 0.5:
        data = r.randbytes(r.randrange(64))
    else:
        data = pb.DescribeRequest(model_fingerprint=r.choice(["", t.fingerprint, "f" * 32, _garbage_text(r)]),
                                  caller_role=_garbage_text(r)).SerializeToString()  # fmt: skip
        data = _flip(data, 0, len(data), r) if data and r.random() < 0.3 else data
    m = pb.DescribeRequest()
    try:
        m.ParseFromString(data)
        ok = m.model_fingerprint in ("", t.fingerprint)
        expect = frozenset({OK}) if ok else frozenset({"FAILED_PRECONDITION"})
    except Exception:  # noqa: BLE001 - protobuf's DecodeError
        expect = _BAD_ARG
    return FuzzCase("Describe", "Describe", [data], [expect])


def _probe(t: FuzzTarget, r: random.Random) -> FuzzCase:
    how = r.randrange(3)
    if how == 0:
        data = r.randbytes(r.randrange(64))
    else:
        n = r.choice([0, 16, t.max_message_bytes - 1024, t.max_message_bytes, -1, 2**62, -(2**63)])
        payload = [r.randbytes(r.randrange(64))] * r.choice([0, 1, 1, 2])
        data = frame(pb.ProbeRequest(id="p", reply_nbytes=n, echo=how == 2).SerializeToString(), 15, payload)
    try:
        rest, payloads = split_fields(data, 15, max_payloads=1, max_payload_nbytes=t.max_message_bytes)
        m = pb.ProbeRequest()
        m.ParseFromString(bytes(rest))
    except EdgeflowError as e:
        expect = _TOO_BIG if type(e).__name__ == "RequestTooLarge" else _BAD_ARG
    except Exception:  # noqa: BLE001 - protobuf's DecodeError
        expect = _BAD_ARG
    else:
        fits = m.echo or 0 <= m.reply_nbytes <= t.max_message_bytes - 1024
        expect = frozenset({OK}) if fits else _TOO_BIG
    return FuzzCase("Probe", "Probe", [data], [expect])


# name -> (builder, weight); the weights split ``count`` between the classes
KINDS: dict[str, tuple[Callable[[FuzzTarget, random.Random], FuzzCase], float]] = {
    "random bytes": (_random_bytes, 10),
    "random protobuf fields": (_random_fields, 8),
    "truncated": (_truncated, 8),
    "bit flips: payload": (_flips_payload, 8),
    "bit flips: anywhere": (_flips_anywhere, 8),
    "wrong datatype": (_wrong_datatype, 5),
    "wrong shape": (_wrong_shape, 8),
    "bad start/stop": (_bad_range, 6),
    "lying payload header": (_lying_header, 8),
    "zstd bomb": (_zstd_bomb, 5),
    "oversized": (_oversized, 0.5),
    "unknown codec": (_unknown_codec, 5),
    "wrong fingerprint": (_wrong_fingerprint, 4),
    "bad plan": (_bad_plan, 5),
    "duplicate tensor names": (_duplicate_names, 3),
    "huge tensor counts": (_tensor_counts, 2),
    "batch mismatch": (_batches, 3),
    "invalid UTF-8": (_bad_utf8, 2),
    "hostile values (well formed)": (_hostile_values, 2),
    "output codec": (_output_codec, 3),
    "re-checksummed codec params": (_rechecked_params, 4),
    "stream items": (_stream, 3),  # each call carries 4..23 items: ~40 % of the messages
    "Describe": (_describe, 3),
    "Probe": (_probe, 3),
}
_STREAMABLE.extend(b for name, (b, _) in KINDS.items() if name not in ("oversized", "stream items", "Describe", "Probe"))


def plan_cases(calls: int, kinds: Any = None) -> list[tuple[str, int]]:
    """``(kind, index)`` for ``calls`` calls split by weight (each kind at least once), in a fixed order."""
    chosen = {k: KINDS[k] for k in (kinds or KINDS)}
    total = sum(w for _, w in chosen.values())
    out = [(k, i) for k, (_, w) in chosen.items() for i in range(max(1, round(calls * w / total)))]
    random.Random(0).shuffle(out)  # mix the classes, the same way every run
    return out


def build_case(target: FuzzTarget, kind: str, index: int, seed: int = 0) -> FuzzCase:
    """The ``index``-th case of class ``kind`` (deterministic)."""
    return KINDS[kind][0](target, random.Random(f"{seed}:{kind}:{index}"))




def valid_request(target: FuzzTarget, r: random.Random) -> bytes:
    """A well-formed request at ``target.position`` (random values)."""
    return _bytes(*_valid_msg(target, r))
