"""Text on the wire: a ``BYTES`` tensor, KServe v2's layout for strings (docs/WIRE.md, *Text*).

A ``BYTES`` tensor has shape ``[B]``, one UTF-8 string per batch row; its payload (``raw_input_contents``) is
the strings one after another, each a 4-byte little-endian unsigned length and then its bytes, as KServe v2 and
Triton lay out raw ``BYTES`` contents. It carries no codec. Only a model that carries a tokenizer takes it, at
position 0, on the tier that tokenizes (:mod:`edgeflow.agent.textin`).

This module is a pure function of bytes (no I/O).
"""

from __future__ import annotations

import struct
from typing import Sequence

from edgeflow.errors import InvalidRequest

__all__ = ["BYTES", "MAX_STRING_BYTES", "encode_strings", "decode_strings"]

BYTES = "BYTES"
MAX_STRING_BYTES = 16 * 1024  # one row's UTF-8 bytes: a sentence, a paragraph; not a document
_LEN = struct.Struct("<I")


def encode_strings(strings: Sequence[str]) -> bytes:
    """The payload of a ``BYTES`` tensor holding ``strings`` (each UTF-8 encoded)."""
    parts = []
    for s in strings:
        b = s.encode("utf-8")
        parts += [_LEN.pack(len(b)), b]
    return b"".join(parts)


def decode_strings(payload: bytes | memoryview, count: int, label: str, *,
                   max_string_bytes: int = MAX_STRING_BYTES) -> list[str]:  # fmt: skip
    """The ``count`` strings of a ``BYTES`` payload.

    Args:
        payload: the raw contents.
        count: strings declared (the tensor's shape ``[count]``).
        label: the tensor as messages name it (``model input 'text'``).
        max_string_bytes: the longest row accepted, in UTF-8 bytes.

    Raises:
        InvalidRequest: naming ``label`` and the row: a length past the payload's end, a row over
            ``max_string_bytes``, a row that is not UTF-8, or more or fewer strings than ``count``.
    """
    view = memoryview(payload).cast("B")
    out: list[str] = []
    pos = 0
    while pos < len(view):
        if len(out) == count:
            raise InvalidRequest(f"{label}: declares {count} strings, the payload holds more")
        if pos + 4 > len(view):
            raise InvalidRequest(f"{label}: row {len(out)}: truncated length prefix at byte {pos}")
        (n,) = _LEN.unpack_from(view, pos)
        pos += 4
        if n > max_string_bytes:
            raise InvalidRequest(f"{label}: row {len(out)} is {n} bytes long, limit {max_string_bytes}")
        if pos + n > len(view):
            raise InvalidRequest(f"{label}: row {len(out)} declares {n} bytes, {len(view) - pos} are left")
        try:
            out.append(str(view[pos : pos + n], "utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidRequest(f"{label}: row {len(out)} is not UTF-8 ({e.reason} at byte {e.start})") from None
        pos += n
    if len(out) != count:
        raise InvalidRequest(f"{label}: declares {count} strings, the payload holds {len(out)}")
    return out
