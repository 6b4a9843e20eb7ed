"""Loading a GGUF file into a ``Llama`` object with the load options applied, and the
parts the runtime builds on it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError
from ..store.manifest import ModelManifest
from .llama_decode import Decoder
from .llama_prompt import ChatPrompt
from .llama_vocab import LlamaVocab
from .signals import SignalComputer
from .threads import default_threads
from .types import LoadOptions

__all__ = ["LlamaParts", "llama_parts", "load_llama"]

log = logging.getLogger("ridgeline_core.runtime.llama_cpp")


def load_llama(lib: Any, manifest: ModelManifest, path: Path, options: LoadOptions) -> Any:
    """The ``Llama`` object for ``path`` (verified already) with ``options``."""
    if options.n_gpu_layers != 0 and not lib.llama_supports_gpu_offload():
        log.warning(
            "n_gpu_layers=%d ignored: this llama-cpp-python build has no GPU offload "
            "(see packaging/INSTALL.md for CUDA and Metal builds)",
            options.n_gpu_layers,
        )
    n_ctx = options.n_ctx
    if manifest.context_length is not None:
        n_ctx = min(n_ctx, manifest.context_length)
    threads = options.n_threads or default_threads()
    try:
        return lib.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(options.batch, n_ctx),
            n_threads=threads,
            n_threads_batch=options.n_threads_batch or threads,
            n_gpu_layers=options.n_gpu_layers,
            logits_all=False,
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise ModelLoadError(f"llama.cpp could not load {manifest.name} ({path}): {exc}") from exc


@dataclass(frozen=True)
class LlamaParts:
    """What the runtime is built from once the model is loaded."""

    context_length: int
    vocab: LlamaVocab
    prompt: ChatPrompt
    decoder: Decoder


def llama_parts(lib: Any, llm: Any, manifest: ModelManifest, signals: bool) -> LlamaParts:
    """The vocabulary, chat prompt and token loop of a loaded model; the model is freed
    if one of them cannot be made."""
    try:
        context_length = int(llm.n_ctx())
        vocab = LlamaVocab(lib, llm)
        computer = SignalComputer(vocab.size) if signals else None
        decoder = Decoder(
            lib, llm, vocab, computer, name=manifest.name, context_length=context_length
        )
        return LlamaParts(context_length, vocab, ChatPrompt(manifest, llm, vocab), decoder)
    except BaseException:
        llm.close()
        raise
