"""Write a merged model tensor by tensor: GGUF (float32, metadata copied from the first
input, then llama.cpp's own quantizer) and safetensors (each tensor in the first input's
type).

A GGUF tensor the merge leaves as it was (every input stores the same bytes, or a LoRA
does not touch it) is written in its input's own type and bytes, and llama.cpp's quantizer
copies a tensor that already has the type it wants: requantising dequantised K-quants is
not exact, so an unchanged tensor would otherwise come back slightly changed.

Both formats put a table of every tensor before the data, and a merge knows every shape
before it computes anything, so the table is written first and each tensor is appended
as soon as it is merged: the writer never holds more than the tensor it is given. The
output depends only on the inputs and the recipe (no clock, no random state, names in
the input's order), so the same merge gives the same bytes.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ModelError
from .tensors import SAFETENSORS_TYPES, GgufTensors, TensorInfo, import_gguf

__all__ = ["GgufOut", "SafetensorsOut", "file_type", "file_type_name", "quantize_gguf"]

Array = npt.NDArray[Any]
_DROPPED_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")


class GgufOut:
    """A float32 GGUF file with the first input's metadata and tensor table."""

    def __init__(self, path: Path, template: GgufTensors, kept: Collection[str] = ()) -> None:
        gguf = import_gguf()
        self._writer = gguf.GGUFWriter(path, template.architecture)
        for name, field in template.reader.fields.items():
            if name.startswith("GGUF.") or name in _DROPPED_KEYS:
                continue
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            self._writer.add_key_value(name, field.contents(), field.types[0], sub)
        self._writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        self._template, self.kept = template, set(kept)
        for info in template.tensors.values():
            if info.name in self.kept:  # the input's own bytes, in its own type
                _, size = template.span(info.name)
                kind = gguf.GGMLQuantizationType[info.kind]
                shape = gguf.quant_shape_to_byte_shape(info.shape, kind)
                self._writer.add_tensor_info(info.name, shape, np.dtype(np.uint8), size, kind)
                continue
            count = int(np.prod(info.shape, dtype=np.int64))
            self._writer.add_tensor_info(info.name, info.shape, np.dtype(np.float32), count * 4)
        self._writer.write_header_to_file(path)
        self._writer.write_kv_data_to_file()
        self._writer.write_ti_data_to_file()

    def write(self, info: TensorInfo, values: Array | None) -> None:
        """The merged values, or None for a tensor kept as the input stores it."""
        if values is None:
            self._writer.write_tensor_data(self._template.stored_array(info.name))
        else:
            self._writer.write_tensor_data(np.ascontiguousarray(values, dtype=np.float32))

    def close(self) -> None:
        self._writer.close()


class SafetensorsOut:
    """A safetensors file whose tensors keep the first input's names, order and types."""

    def __init__(self, path: Path, tensors: Sequence[TensorInfo]) -> None:
        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for info in tensors:
            size = (
                int(np.prod(info.shape, dtype=np.int64))
                * np.dtype(SAFETENSORS_TYPES[info.kind]).itemsize
            )
            span = [offset, offset + size]
            shape = list(info.shape)
            header[info.name] = {"dtype": info.kind, "shape": shape, "data_offsets": span}
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned
        self._file = path.open("wb")
        self._file.write(struct.pack("<Q", len(encoded)) + encoded)

    def write(self, info: TensorInfo, values: Array | None) -> None:
        assert values is not None  # every tensor is read and written in its own type
        if info.kind == "BF16":
            bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
            rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # to nearest, ties to even
            out: Array = rounded.astype(np.uint16)
        elif info.floating:
            out = values.astype(SAFETENSORS_TYPES[info.kind])
        else:
            out = values
        self._file.write(np.ascontiguousarray(out).tobytes())

    def close(self) -> None:
        self._file.close()


def file_type(name: str) -> int:
    """llama.cpp's file type for a quantization name (``Q4_K_M``, ``F16``, ...)."""
    gguf = import_gguf()
    members = {"F32": "ALL_F32"}
    try:
        return int(gguf.LlamaFileType[members.get(name, f"MOSTLY_{name}")])
    except KeyError:
        raise ModelError(f"llama.cpp has no quantization {name!r}") from None


def file_type_name(ftype: int) -> str:
    """``Q4_K_M`` for llama.cpp's file type number (as :func:`file_type` takes it)."""
    gguf = import_gguf()
    try:
        return str(gguf.LlamaFileType(ftype).name).removeprefix("MOSTLY_").replace("ALL_", "")
    except ValueError:
        return f"file type {ftype}"


def quantize_gguf(source: Path, target: Path, ftype: int, threads: int) -> None:
    """llama.cpp's quantizer, as ``llama-quantize`` runs it (its own choice of type per
    tensor for the file type), from the float32 merge to ``target``."""
    from ..runtime.llama_lib import import_llama_cpp

    llama_cpp = import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    # a tensor kept in its input's type is copied when the file type wants that type, and
    # converted (dequantised, quantised) only when it wants another
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), llama_cpp.ctypes.byref(params)
    )
    if status != 0:
        raise ModelError(f"llama.cpp could not quantize the merged model (status {status})")
