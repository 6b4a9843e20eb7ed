"""The tensors of a model file, read one at a time: GGUF (any type gguf-py dequantises)
and safetensors.

Only the header is parsed up front; :meth:`TensorFile.read` reads one tensor's bytes with
``pread`` into memory of its own, so a merge holds the tensors it works on and nothing
else of the inputs (a memory map would leave every page it touched resident).
:func:`check_compatible` refuses inputs of different architectures or tensor sets,
naming the first tensor that differs.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import MissingDependencyError, ModelError, ModelLoadError

__all__ = [
    "SAFETENSORS_TYPES",
    "GgufTensors",
    "SafetensorsFile",
    "TensorFile",
    "TensorInfo",
    "check_compatible",
    "import_gguf",
]

Array = npt.NDArray[Any]
SAFETENSORS_TYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip
_FLOATING = {"F32", "F16", "BF16", "F64"}
_MAX_HEADER = 100 << 20
_ROWS = 2048  # rows dequantised at once


def import_gguf() -> Any:
    """gguf-py, which reads and writes GGUF (the ``edge`` extra installs it)."""
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError.for_module("gguf", "edge") from None
    return gguf


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (rows first)
    kind: str  # the stored type: F32, Q4_1, BF16, I64, ...
    floating: bool  # merged as float32; anything else is copied from the first input


class TensorFile(Protocol):
    label: str
    architecture: str
    tensors: dict[str, TensorInfo]  # in file order

    def read(self, name: str) -> Array: ...

    def stored(self, name: str) -> bytes: ...

    def close(self) -> None: ...


class _Pread:
    def __init__(self, path: Path, label: str) -> None:
        self.label = label
        try:
            self._fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            raise ModelLoadError(f"cannot open {label} ({path}): {exc.strerror}") from exc
        self.size = os.fstat(self._fd).st_size

    def read_bytes(self, offset: int, count: int) -> bytes:
        data = os.pread(self._fd, count, offset)
        if len(data) != count:
            raise ModelLoadError(f"{self.label} is cut short: a tensor lies past its end")
        return data

    def span(self, name: str) -> tuple[int, int]:
        raise NotImplementedError

    def stored(self, name: str) -> bytes:
        """The tensor's bytes as the file stores them."""
        return self.read_bytes(*self.span(name))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class GgufTensors(_Pread):
    """A GGUF file's tensors; floating ones come back dequantised to float32."""

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        gguf = import_gguf()
        try:
            self.reader = gguf.GGUFReader(path)
            field = self.reader.fields["general.architecture"]
            self.architecture = str(field.contents())
        except (KeyError, ValueError, IndexError, struct.error) as exc:
            self.close()
            raise ModelLoadError(f"{label} is not a readable GGUF model: {exc}") from exc
        self._raw = {t.name: t for t in self.reader.tensors}
        self.tensors = {
            t.name: TensorInfo(
                t.name, tuple(int(x) for x in reversed(t.shape)), t.tensor_type.name, True
            )
            for t in self.reader.tensors
        }

    def span(self, name: str) -> tuple[int, int]:
        raw = self._raw[name]
        return int(raw.data_offset), int(raw.n_bytes)

    def stored_array(self, name: str) -> Array:
        """The stored bytes shaped as gguf-py writes a tensor of this type."""
        gguf = import_gguf()
        raw = self._raw[name]
        shape = gguf.quant_shape_to_byte_shape(self.tensors[name].shape, raw.tensor_type)
        stored: Array = np.frombuffer(self.stored(name), np.uint8).reshape(shape)
        return stored

    def read(self, name: str) -> Array:
        gguf = import_gguf()
        raw, shape = self._raw[name], self.tensors[name].shape
        data = np.frombuffer(self.stored(name), np.uint8)
        rows = data.view(raw.data.dtype).reshape(-1, raw.data.shape[-1])
        out = np.empty((rows.shape[0], shape[-1]), dtype=np.float32)
        # a few rows at a time: gguf-py's dequantisation makes several temporary copies
        for start in range(0, rows.shape[0], _ROWS):
            chunk = rows[start : start + _ROWS]
            out[start : start + _ROWS] = gguf.quants.dequantize(chunk, raw.tensor_type)
        return out.reshape(shape)


class SafetensorsFile(_Pread):
    """A safetensors file's tensors; F32/F16/BF16 come back as float32."""

    architecture = "safetensors"

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, label)
        try:
            self._entries, self._start = self._header()
        except ModelLoadError:
            self.close()
            raise
        self.tensors = {
            name: TensorInfo(name, tuple(e["shape"]), e["dtype"], e["dtype"] in _FLOATING)
            for name, e in self._entries.items()
        }

    def _header(self) -> tuple[dict[str, dict[str, Any]], int]:
        def corrupt(why: str) -> ModelLoadError:
            return ModelLoadError(f"{self.label} is not a valid safetensors file ({why})")

        (length,) = struct.unpack("<Q", self.read_bytes(0, 8)) if self.size >= 8 else (-1,)
        if not 0 < length <= min(_MAX_HEADER, self.size - 8):
            raise corrupt(f"header length {length} in a file of {self.size} bytes")
        try:
            header = json.loads(self.read_bytes(8, length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise corrupt(f"header is not JSON: {exc}") from exc
        entries = {k: v for k, v in header.items() if k != "__metadata__"}
        for name, entry in entries.items():
            try:
                begin, end = (int(x) for x in entry["data_offsets"])
                dtype = np.dtype(SAFETENSORS_TYPES[entry["dtype"]])
                count = int(np.prod(entry["shape"], dtype=np.int64))
            except (KeyError, TypeError, ValueError) as exc:
                raise corrupt(f"tensor {name!r}: {exc!r}") from exc
            if end - begin != count * dtype.itemsize or end > self.size - 8 - length:
                raise corrupt(f"tensor {name!r}: its offsets do not fit its shape or the file")
        return dict(sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0])), 8 + length

    def span(self, name: str) -> tuple[int, int]:
        begin, end = self._entries[name]["data_offsets"]
        return self._start + begin, end - begin

    def read(self, name: str) -> Array:
        entry = self._entries[name]
        data = self.stored(name)
        raw: Array = np.frombuffer(data, SAFETENSORS_TYPES[entry["dtype"]])
        if entry["dtype"] == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        values = raw.astype(np.float32) if self.tensors[name].floating else raw.copy()
        return values.reshape(self.tensors[name].shape)


def check_compatible(files: list[TensorFile]) -> None:
    """Refuse inputs that do not share an architecture and tensor names and shapes."""
    first = files[0]
    for other in files[1:]:
        where = f"{other.label} does not match {first.label}"
        if other.architecture != first.architecture:
            raise ModelError(
                f"{where}: architecture {other.architecture!r}, not {first.architecture!r}"
            )
        for name, info in first.tensors.items():
            theirs = other.tensors.get(name)
            if theirs is None:
                raise ModelError(f"{where}: it has no tensor {name!r}")
            if theirs.shape != info.shape:
                raise ModelError(
                    f"{where}: tensor {name!r} is {list(theirs.shape)} in {other.label}, "
                    f"{list(info.shape)} in {first.label}"
                )
        extra = [name for name in other.tensors if name not in first.tensors]
        if extra:
            raise ModelError(f"{where}: it has tensor {extra[0]!r}, which {first.label} lacks")
