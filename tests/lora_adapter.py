"""A LoRA adapter in GGUF, made for a model from its own tensor shapes with the ``gguf``
package: random low-rank updates of its attention query and value projections."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_adapter(
    model: Path,
    out: Path,
    *,
    rank: int = 8,
    strength: float = 0.5,
    arch: str | None = None,
    dtype: type = np.float32,
) -> Path:
    """An adapter for ``model`` (a GGUF file) at ``out``; ``arch`` overrides the
    architecture written (an adapter llama.cpp must refuse), ``dtype`` the tensors' type
    (float64: one llama.cpp 0.3.36 crashes on, so Ridgeline must refuse it first)."""
    import gguf

    reader = gguf.GGUFReader(model)
    field = reader.fields["general.architecture"]
    architecture = arch or bytes(field.parts[field.data[0]]).decode()
    writer = gguf.GGUFWriter(out, architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(0)
    for tensor in reader.tensors:
        if not tensor.name.endswith(("attn_q.weight", "attn_v.weight")):
            continue
        n_in, n_out = (int(x) for x in tensor.shape[:2])  # ggml order: columns first
        a = (rng.standard_normal((rank, n_in)) * strength / np.sqrt(n_in)).astype(dtype)
        b = (rng.standard_normal((n_out, rank)) * strength).astype(dtype)
        writer.add_tensor(f"{tensor.name}.lora_a", a)
        writer.add_tensor(f"{tensor.name}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
