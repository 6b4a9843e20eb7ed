"""The tensor table of a GGUF file (names and types), read with the standard library.

llama.cpp trusts an adapter's tensor types: 0.3.36 loads a LoRA whose tensors are F64
and crashes the process on the first evaluation. Reading the header first lets the runtime
refuse such a file with an error. Layout (GGUF v2/v3, little-endian): magic, version,
tensor count, key-value count, the key-value pairs, then per tensor its name, its
dimensions, its type and its offset.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

__all__ = ["GgufError", "tensor_types"]

# ggml type ids for the tensors an adapter may hold
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0", 28: "F64", 30: "BF16"}
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
_MAX_COUNT = 1 << 24  # more tensors or keys than any model has: a corrupt header


class GgufError(ValueError):
    """The file is not a GGUF file, or its header is cut short or malformed."""


def tensor_types(handle: BinaryIO) -> dict[str, int]:
    """Each tensor's name and ggml type id, from the file's header."""
    if handle.read(4) != b"GGUF":
        raise GgufError("not a GGUF file")
    version, n_tensors, n_kv = _unpack(handle, "<IQQ")
    if version not in (2, 3) or n_tensors > _MAX_COUNT or n_kv > _MAX_COUNT:
        raise GgufError(f"an unsupported or corrupt GGUF header (version {version})")
    for _ in range(n_kv):
        _string(handle)
        _skip_value(handle, _unpack(handle, "<I")[0])
    types = {}
    for _ in range(n_tensors):
        name = _string(handle)
        (n_dims,) = _unpack(handle, "<I")
        if n_dims > 8:
            raise GgufError(f"tensor {name!r} has {n_dims} dimensions")
        _unpack(handle, f"<{n_dims}Q")
        ggml_type, _offset = _unpack(handle, "<IQ")
        types[name] = ggml_type
    return types


def _unpack(handle: BinaryIO, layout: str) -> tuple[int, ...]:
    size = struct.calcsize(layout)
    data = handle.read(size)
    if len(data) != size:
        raise GgufError("the GGUF header is truncated")
    return struct.unpack(layout, data)


def _string(handle: BinaryIO) -> str:
    (length,) = _unpack(handle, "<Q")
    if length > 1 << 20:
        raise GgufError("a GGUF string longer than 1 MiB: a corrupt header")
    data = handle.read(length)
    if len(data) != length:
        raise GgufError("the GGUF header is truncated")
    return data.decode("utf-8", errors="replace")


def _skip_value(handle: BinaryIO, kind: int) -> None:
    if kind in _SCALARS:
        _unpack(handle, "<" + _SCALARS[kind])
    elif kind == _STRING:
        _string(handle)
    elif kind == _ARRAY:
        item, count = _unpack(handle, "<IQ")
        if count > _MAX_COUNT:
            raise GgufError("a GGUF array too long to be real: a corrupt header")
        for _ in range(count):
            _skip_value(handle, item)
    else:
        raise GgufError(f"unknown GGUF value type {kind}")
