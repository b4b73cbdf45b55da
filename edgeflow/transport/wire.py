"""Protobuf wire framing for messages whose big ``bytes`` fields travel without protobuf copies.

gRPC handlers here use identity (de)serializers: a message is one ``bytes`` object. To send, the small
metadata message is serialised with protobuf and each raw payload is appended as a length-delimited field
(``tag + varint length + bytes``); protobuf allows a message's fields in any order and concatenated, so the
result is an ordinary encoding of the .proto message and any standard client can read it. To receive, the
top-level fields are scanned: payload fields become zero-copy ``memoryview`` slices of the received buffer and
only the rest (small) goes through protobuf. Declared lengths are checked against the buffer before slicing.

This module is a pure function of bytes (no I/O), tested directly with canned and fuzzed input.
"""

from __future__ import annotations

from typing import Sequence

from edgeflow.core.codecs.format import PayloadParts
from edgeflow.errors import InvalidRequest, RequestTooLarge

__all__ = ["encode_varint", "frame", "split_fields"]

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5
_MAX_FIELD = (1 << 29) - 1


def encode_varint(value: int) -> bytes:
    """Base-128 varint of a non-negative int (protobuf encoding)."""
    if value < 0:
        raise ValueError(f"varint of negative value {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def frame(meta: bytes, field: int, payloads: Sequence[bytes | bytearray | memoryview | PayloadParts]) -> bytes:
    """Append ``payloads`` as repeated ``bytes`` field ``field`` to the serialised message ``meta``.

    One copy of each payload, into the returned ``bytes`` (gRPC Python sends one ``bytes`` object, so this copy is
    the least there is). A payload given as its :class:`PayloadParts` (a codec's header and body) is written part
    by part: the copy that joining them would make first is saved.
    """
    tag = encode_varint((field << 3) | _WIRE_LEN)
    parts: list[bytes | bytearray | memoryview] = [meta]
    for p in payloads:
        parts.append(tag)
        if isinstance(p, PayloadParts):
            parts.append(encode_varint(p.nbytes))
            parts.extend(p.parts)
        else:
            parts.append(encode_varint(memoryview(p).nbytes))
            parts.append(p)
    return b"".join(parts)


def _read_varint(buf: memoryview, pos: int, end: int, what: str) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise InvalidRequest(f"malformed message: truncated varint in {what} at byte {pos}")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise InvalidRequest(f"malformed message: varint longer than 10 bytes in {what} at byte {pos}")


def split_fields(
    data: bytes | memoryview,
    raw_field: int,
    *,
    max_payloads: int,
    max_payload_nbytes: int,
    max_fields: int = 4096,
) -> tuple[bytes | memoryview, list[memoryview]]:
    """Separate the raw payload field from the rest of a serialised message.

    Args:
        data: one serialised message.
        raw_field: number of the repeated ``bytes`` field to take out (e.g. 15, ``raw_input_contents``).
        max_payloads: most payload entries accepted.
        max_payload_nbytes: largest payload accepted (checked before slicing; a declared length past the
            end of ``data`` is malformed, whatever the limit).
        max_fields: most top-level fields scanned (bounds the work on hostile input).

    Returns:
        ``(rest, payloads)``: ``rest`` holds every other field (a zero-copy slice when they are contiguous,
        as when :func:`frame` built the message), ready for ``Message.ParseFromString``; ``payloads`` are
        zero-copy slices of ``data`` in wire order.

    Raises:
        InvalidRequest: malformed wire format (truncated, bad wire type, field 0, length past the end).
        RequestTooLarge: more payloads, or a longer one, than allowed.
    """
    buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    end = buf.nbytes
    pos = 0
    payloads: list[memoryview] = []
    spans: list[tuple[int, int]] = []  # [start, stop) of the other fields, merged when adjacent
    count = 0
    while pos < end:
        count += 1
        if count > max_fields:
            raise InvalidRequest(f"malformed message: more than {max_fields} top-level fields")
        field_start = pos
        key, pos = _read_varint(buf, pos, end, "field key")
        field, wire = key >> 3, key & 7
        if field == 0 or field > _MAX_FIELD:
            raise InvalidRequest(f"malformed message: invalid field number {field} at byte {field_start}")
        if wire == _WIRE_VARINT:
            _, pos = _read_varint(buf, pos, end, f"field {field}")
        elif wire == _WIRE_I64:
            pos += 8
        elif wire == _WIRE_I32:
            pos += 4
        elif wire == _WIRE_LEN:
            length, pos = _read_varint(buf, pos, end, f"length of field {field}")
            if field == raw_field:
                if len(payloads) >= max_payloads:
                    raise RequestTooLarge(f"message carries more than {max_payloads} raw payloads")
                if pos + length > end:  # checked first: the whole message is here, so this is a lie
                    raise InvalidRequest(
                        f"malformed message: raw payload {len(payloads)} declares {length} bytes, "
                        f"only {end - pos} left"
                    )
                if length > max_payload_nbytes:
                    raise RequestTooLarge(
                        f"raw payload {len(payloads)} is {length} bytes > limit {max_payload_nbytes}"
                    )
                payloads.append(buf[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise InvalidRequest(f"malformed message: unsupported wire type {wire} for field {field} at byte {field_start}")
        if pos > end:
            raise InvalidRequest(f"malformed message: field {field} runs past the end ({pos} > {end} bytes)")
        if spans and spans[-1][1] == field_start:
            spans[-1] = (spans[-1][0], pos)
        else:
            spans.append((field_start, pos))
    if not spans:
        rest: bytes | memoryview = b""
    elif len(spans) == 1:
        rest = buf[spans[0][0] : spans[0][1]]
    else:
        rest = b"".join(buf[a:b] for a, b in spans)
    return rest, payloads
