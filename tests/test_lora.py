"""LoRA adapters through llama.cpp's adapter API, with SmolLM2 and an adapter the test
builds for it (tests/lora_adapter.py): scale 0 is the base model, a non-zero scale changes
the answer, going back to no adapter gives the base answer again (the cached prompt is
dropped), and a file that is not an adapter of this model, or not the one recorded, is
refused with a clear error."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from lora_adapter import build_adapter

from ridgeline_core.errors import IntegrityError, ModelError
from ridgeline_core.runtime import ChatMessage, Runtime, SamplingParams
from ridgeline_core.runtime.types import LoraAdapter

pytestmark = pytest.mark.model

QUESTION = [ChatMessage("user", "What is the capital of France?")]


def answer(runtime: Runtime, *adapters: LoraAdapter) -> str:
    params = SamplingParams(max_tokens=16, temperature=0.0, adapters=adapters)
    with runtime.generate(QUESTION, params) as generation:
        return "".join(token.text for token in generation)


@pytest.fixture(scope="module")
def adapter(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_adapter(smollm2_path, tmp_path_factory.mktemp("lora") / "adapter.gguf")


def test_scale_zero_is_the_base_model_and_a_scale_changes_the_answer(
    smollm2: Runtime, adapter: Path
) -> None:
    base = answer(smollm2)
    assert "Paris" in base
    assert answer(smollm2, LoraAdapter(str(adapter), 0.0)) == base
    changed = answer(smollm2, LoraAdapter(str(adapter), 1.0))
    assert changed != base
    assert answer(smollm2, LoraAdapter(str(adapter), 1.0)) == changed  # reproducible
    assert answer(smollm2) == base  # the adapter is gone, and so is its cached prompt
    digest = hashlib.sha256(adapter.read_bytes()).hexdigest()
    assert answer(smollm2, LoraAdapter(str(adapter), 1.0, digest)) == changed


def test_files_that_are_not_this_models_adapter_are_refused(
    smollm2: Runtime, smollm2_path: Path, adapter: Path, tmp_path: Path
) -> None:
    other = build_adapter(smollm2_path, tmp_path / "gemma.gguf", arch="gemma3")
    with pytest.raises(ModelError, match="refused the LoRA adapter"):
        answer(smollm2, LoraAdapter(str(other), 1.0))
    text = tmp_path / "notes.gguf"
    text.write_text("not an adapter")
    with pytest.raises(ModelError, match="not a GGUF file"):
        answer(smollm2, LoraAdapter(str(text), 1.0))
    doubles = build_adapter(smollm2_path, tmp_path / "f64.gguf", dtype=np.float64)
    with pytest.raises(ModelError, match="F64"):  # llama.cpp would crash the process
        answer(smollm2, LoraAdapter(str(doubles), 1.0))
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(adapter.read_bytes()[:200])
    with pytest.raises(ModelError, match=r"truncated|not a GGUF"):
        answer(smollm2, LoraAdapter(str(truncated), 1.0))
    with pytest.raises(IntegrityError, match="does not match its sha256"):
        answer(smollm2, LoraAdapter(str(adapter), 1.0, "0" * 64))
    with pytest.raises(ModelError, match="cannot read"):
        answer(smollm2, LoraAdapter(str(tmp_path / "missing.gguf"), 1.0))
    assert "Paris" in answer(smollm2)  # the model still answers as it did
