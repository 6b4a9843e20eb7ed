"""LoRA adapters (GGUF) on a loaded llama.cpp model, set per generation.

llama.cpp loads an adapter once per model (``llama_adapter_lora_init``) and applies a set
of them, each with its scale, to a context (``llama_set_adapters_lora``; an empty set
clears them). A request names the adapters it wants (``SamplingParams.adapters``); the
context gets exactly that set before the prompt is evaluated, and when the set changes
the context's cached prompt is dropped: its keys and values were computed with other
weights. Adapters are freed with the model.

An adapter file is checked before llama.cpp reads it: it must be a GGUF file whose
tensors are F32, F16 or BF16 (llama.cpp crashes on others), and when the request gives its
sha256, match it (IntegrityError otherwise: a tampered file is never loaded). llama.cpp
refuses an adapter of another architecture or with tensors that do not fit the model's;
that is a ModelError naming the file.
"""

from __future__ import annotations

import ctypes
import hashlib
from pathlib import Path
from typing import Any

from ..errors import IntegrityError, ModelError
from .gguf_tensors import TYPE_NAMES, GgufError, tensor_types
from .types import LoraAdapter

__all__ = ["Adapters"]

_ADAPTER_TYPES = {0, 1, 30}  # F32, F16, BF16


class Adapters:
    """The adapters loaded on one model and the set its context has now."""

    def __init__(self, lib: Any, llm: Any, name: str) -> None:
        self._lib, self._llm, self.name = lib, llm, name
        self._loaded: dict[
            tuple[str, str | None], Any
        ] = {}  # (path, sha256) -> llama_adapter_lora_p
        self._applied: tuple[LoraAdapter, ...] = ()

    def apply(self, wanted: tuple[LoraAdapter, ...]) -> bool:
        """Give the context exactly ``wanted``; whether the set changed (the caller then
        drops the context's cached prompt)."""
        if wanted == self._applied:
            return False
        handles = [self._load(adapter) for adapter in wanted]
        lib = self._lib.llama_cpp
        array = (lib.llama_adapter_lora_p_ctypes * max(1, len(handles)))(*handles)
        scales = (ctypes.c_float * max(1, len(wanted)))(*(a.scale for a in wanted))
        if lib.llama_set_adapters_lora(self._llm.ctx, array, len(handles), scales) != 0:
            raise ModelError(f"{self.name}: llama.cpp could not set the LoRA adapters")
        self._applied = wanted
        return True

    def _load(self, adapter: LoraAdapter) -> Any:
        key = (adapter.path, adapter.sha256)
        handle = self._loaded.get(key)
        if handle is None:
            _check_file(Path(adapter.path), adapter.sha256)
            lib = self._lib.llama_cpp
            handle = lib.llama_adapter_lora_init(self._llm.model, adapter.path.encode())
            if not handle:
                raise ModelError(
                    f"{self.name}: llama.cpp refused the LoRA adapter {adapter.path} "
                    "(another architecture, or tensors that do not fit this model)"
                )
            self._loaded[key] = handle
        return handle


def _check_file(path: Path, sha256: str | None) -> None:
    try:
        with path.open("rb") as handle:
            try:
                types = tensor_types(handle)
            except GgufError as exc:
                raise ModelError(f"the LoRA adapter {path} is {_as_phrase(exc)}") from None
            if sha256 is not None:
                handle.seek(0)
                digest = hashlib.sha256()
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                if digest.hexdigest() != sha256:
                    raise IntegrityError(
                        f"the LoRA adapter {path} does not match its sha256 "
                        "(changed since it was added)"
                    )
    except OSError as exc:
        raise ModelError(f"cannot read the LoRA adapter {path}: {exc.strerror}") from None
    odd = sorted({t for t in types.values() if t not in _ADAPTER_TYPES})
    if odd:
        names = ", ".join(TYPE_NAMES.get(t, f"type {t}") for t in odd)
        raise ModelError(
            f"the LoRA adapter {path} holds {names} tensors; llama.cpp takes F32, F16 or BF16"
        )


def _as_phrase(exc: GgufError) -> str:
    text = str(exc)
    return text if text.startswith("not ") else f"not usable: {text}"
