"""The slice of the protobuf wire format the vehicle protocol uses: varints, bytes, fixed32.

Our own ~100 lines instead of the `protobuf` runtime: the messages we send and read are a
handful of fields (universal_message, signatures, car_server), generated bindings would need
protoc and a pinned runtime on every install, and a reader this small is easy to audit. It
rejects what it does not understand (truncation, wire types 3/4/5-with-bad-length) with
`DecodeError` instead of guessing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5
_MAX_VARINT_BYTES = 10


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(value: int) -> bytes:
    """Base-128 varint; negative int32/int64 values are sent as 10-byte two's complement."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


class Writer:
    """Appends fields in the order given (we always write them in field-number order)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def uint(self, number: int, value: int, *, always: bool = False) -> Writer:
        """A varint field (uint32, int32, enum, bool); zero is left out as proto3 does."""
        if value or always:
            self._buf += _key(number, VARINT) + varint(value)
        return self

    def bytes_(self, number: int, value: bytes | None, *, always: bool = False) -> Writer:
        """A length-delimited field (bytes, string, sub-message); empty is left out."""
        if value is None or (not value and not always):
            return self
        self._buf += _key(number, LEN) + varint(len(value)) + value
        return self

    def message(self, number: int, value: bytes | None) -> Writer:
        """A sub-message: present (even when empty) unless None, as a set oneof member is."""
        return self.bytes_(number, value, always=True)

    def fixed32(self, number: int, value: int) -> Writer:
        """A fixed32 field (little-endian); zero is left out."""
        if value:
            self._buf += _key(number, FIXED32) + struct.pack("<I", value & 0xFFFFFFFF)
        return self

    def finish(self) -> bytes:
        """The encoded message."""
        return bytes(self._buf)


@dataclass
class Fields:
    """A decoded message: field number -> values in arrival order (last one wins for scalars)."""

    values: dict[int, list[int | bytes]] = field(default_factory=dict)

    def has(self, number: int) -> bool:
        """Whether the field was present on the wire."""
        return number in self.values

    def uint(self, number: int, default: int = 0) -> int:
        """A varint or fixed32 field's last value."""
        items = self.values.get(number)
        if not items:
            return default
        value = items[-1]
        if not isinstance(value, int):
            raise DecodeError(f"field {number}: expected a number, got bytes")
        return value

    def bytes_(self, number: int, default: bytes = b"") -> bytes:
        """A length-delimited field's last value."""
        items = self.values.get(number)
        if not items:
            return default
        value = items[-1]
        if not isinstance(value, bytes):
            raise DecodeError(f"field {number}: expected bytes, got a number")
        return value

    def message(self, number: int) -> Fields | None:
        """A sub-message, decoded; None when absent."""
        return decode(self.bytes_(number)) if self.has(number) else None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result, pos
    raise DecodeError("varint longer than 10 bytes")


def decode(data: bytes) -> Fields:
    """Split `data` into fields; unknown field numbers are kept, bad wire data raises."""
    out = Fields()
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        value: int | bytes
        if wire_type == VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type == LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise DecodeError(f"field {number}: length {length} runs past the end")
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == FIXED32:
            if pos + 4 > len(data):
                raise DecodeError(f"field {number}: truncated fixed32")
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        elif wire_type == FIXED64:
            if pos + 8 > len(data):
                raise DecodeError(f"field {number}: truncated fixed64")
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        else:
            raise DecodeError(f"field {number}: unsupported wire type {wire_type}")
        out.values.setdefault(number, []).append(value)
    return out


def int32(value: int) -> int:
    """A decoded varint read as int32 (negative numbers arrive as 64-bit two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    if value >= 1 << 63:
        value -= 1 << 64
    return value
