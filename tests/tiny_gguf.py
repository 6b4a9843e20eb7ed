"""A tiny llama-architecture language model in GGUF, written with the ``gguf`` package:
random weights (seeded), a byte-fallback SentencePiece vocabulary of 300 tokens, 2 layers
of width 64. llama.cpp loads it and generates from it in milliseconds; what it says is
noise, but the same weights always say the same noise, which is what merge tests need."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _vocab(first: str) -> tuple[list[str], list[float], list[int]]:
    start = ord(first)
    words = [f"\u2581{chr(start + i)}{chr(97 + j)}" for i in range(6) for j in range(7)][:41]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + words
    types = [2, 3, 3] + [6] * 256 + [1] * len(words)
    scores = [0.0] * 259 + [-float(i) for i in range(len(words))]
    return tokens, scores, types


def build_tiny_gguf(
    out: Path,
    *,
    seed: int = 0,
    width: int = 64,
    layers: int = 2,
    arch: str = "llama",
    first_letter: str = "a",
) -> Path:
    """Write the model to ``out``; ``seed`` picks the weights; ``width``, ``arch`` and
    ``first_letter`` (the vocabulary's words) make a model another cannot be merged with."""
    import gguf

    tokens, scores, types = _vocab(first_letter)
    heads, ff, rng = 4, 2 * width, np.random.default_rng(seed)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_string("general.name", f"tiny-{seed}")
    writer.add_uint32(f"{arch}.context_length", 256)
    writer.add_uint32(f"{arch}.embedding_length", width)
    writer.add_uint32(f"{arch}.block_count", layers)
    writer.add_uint32(f"{arch}.feed_forward_length", ff)
    writer.add_uint32(f"{arch}.attention.head_count", heads)
    writer.add_uint32(f"{arch}.attention.head_count_kv", heads)
    writer.add_uint32(f"{arch}.rope.dimension_count", width // heads)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_uint32("general.file_type", int(gguf.LlamaFileType.ALL_F32))
    writer.add_string("tokenizer.ggml.model", "llama")
    writer.add_array("tokenizer.ggml.tokens", tokens)
    writer.add_array("tokenizer.ggml.scores", scores)
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", 0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), width))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(width, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(width, width))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(width, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ff, width))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ff, width))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(width, ff))
    writer.add_tensor("output_norm.weight", np.ones(width, np.float32))
    writer.add_tensor("output.weight", weight(len(tokens), width))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def greedy_tokens(model: Path, prompt: str = "ab cd", count: int = 12) -> list[int]:
    """The first ``count`` tokens llama.cpp picks greedily after ``prompt``."""
    from ridgeline_core.runtime.llama_lib import import_llama_cpp

    llama = import_llama_cpp().Llama(
        model_path=str(model), n_ctx=64, n_threads=1, verbose=False, seed=0
    )
    try:
        tokens = llama.tokenize(prompt.encode(), add_bos=True)
        out: list[int] = []
        for token in llama.generate(tokens, temp=0.0, top_k=1, reset=True):
            out.append(int(token))
            if len(out) == count:
                break
        return out
    finally:
        llama.close()


def tensors(model: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file, dequantised to float32 in numpy order."""
    import gguf

    reader = gguf.GGUFReader(model)
    return {
        t.name: np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(
            tuple(int(x) for x in reversed(t.shape))
        )
        for t in reader.tensors
    }
