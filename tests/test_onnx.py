"""The ONNX encoder and classifier head with the real all-MiniLM-L6-v2 and ONNX Runtime.

The graph is built from the safetensors weights without torch; sentence-transformers on
torch (the model's reference implementation) is what its embeddings are checked against:
its vectors of SENTENCES are committed (tests/minilm_reference.py makes them).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from conftest import MiniLM
from minilm_reference import SENTENCES, committed_vectors

from ridgeline_core.errors import (
    EmptyPromptError,
    InvalidRequestError,
    MissingDependencyError,
    ModelLoadError,
    UnsupportedError,
)
from ridgeline_core.runtime.onnx import OnnxClassifierHead, OnnxEncoder
from ridgeline_core.runtime.onnx_build import (
    build_bert_encoder,
    build_softmax_head,
    read_safetensors,
)

# -- the model: pulled and built in the session's store (conftest.minilm) ---------------


@dataclass(frozen=True)
class Built:
    weights: Path  # model.safetensors
    config: Path  # config.json
    tokenizer: Path  # tokenizer.json
    fp32: Path
    int8: Path
    files: dict[str, Path]


@pytest.fixture(scope="module")
def built(minilm: MiniLM) -> Built:
    f = minilm.files
    return Built(f["model"], f["config.json"], f["tokenizer.json"], minilm.fp32, minilm.int8, f)


# -- shared ------------------------------------------------------------------------------


Matrix = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def reference(built: Built, minilm: MiniLM) -> Matrix:
    """SENTENCES embedded by sentence-transformers on torch from the original weights
    (computed once and committed: tests/minilm_reference.py)."""
    return committed_vectors(minilm.manifest.sha256)


@pytest.fixture(scope="module")
def fp32(built: Built) -> Iterator[OnnxEncoder]:
    with OnnxEncoder(built.fp32, built.tokenizer, name="minilm-fp32", threads=2) as encoder:
        yield encoder


@pytest.fixture(scope="module")
def int8(built: Built) -> Iterator[OnnxEncoder]:
    with OnnxEncoder(built.int8, built.tokenizer, name="minilm-int8", threads=2) as encoder:
        yield encoder


def assert_min_cosine(vectors: Matrix, reference: Matrix, floor: float) -> None:
    cosines = (vectors * reference).sum(axis=1)
    worst = int(np.argmin(cosines))
    assert cosines.min() >= floor, (
        f"cosine {cosines.min():.5f} < {floor} for {SENTENCES[worst]!r} (mean {cosines.mean():.5f})"
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the encoder -------------------------------------------------------------------------


@pytest.mark.model
def test_fp32_matches_sentence_transformers(fp32: OnnxEncoder, reference: Matrix) -> None:
    vectors = fp32.embed(SENTENCES)
    assert vectors.shape == (len(SENTENCES), 384)
    assert vectors.dtype == np.float32
    assert fp32.dim == 384
    assert fp32.max_length == 256
    assert_min_cosine(vectors, reference, 0.999)


@pytest.mark.model
def test_int8_stays_close_to_sentence_transformers(int8: OnnxEncoder, reference: Matrix) -> None:
    assert_min_cosine(int8.embed(SENTENCES), reference, 0.99)


@pytest.mark.model
def test_int8_is_smaller_than_fp32(built: Built) -> None:
    assert built.int8.stat().st_size < built.fp32.stat().st_size


@pytest.mark.model
def test_a_batch_equals_one_by_one(fp32: OnnxEncoder) -> None:
    batched = fp32.embed(SENTENCES, batch_size=8)  # sorted by length inside, order restored
    single = np.stack([fp32.embed_one(text) for text in SENTENCES])
    assert np.abs(batched - single).max() < 1e-5


@pytest.mark.model
def test_each_planned_batch_on_its_own_gives_embeds_rows(int8: OnnxEncoder) -> None:
    """What the router's training on Ray relies on: ``batches`` is ``embed``'s plan, and a
    batch embedded alone, in plan order, gets the very same floats (int8: a vector depends
    on its batch, whose ranges its quantization takes)."""
    texts = [*SENTENCES, *SENTENCES[:5]]
    plan = int8.batches(texts, batch_size=8)
    assert sorted(i for rows in plan for i in rows) == list(range(len(texts)))
    assert [len(rows) for rows in plan[:-1]] == [8] * (len(plan) - 1)
    whole = int8.embed(texts, batch_size=8)
    for rows in plan:
        alone = int8.embed([texts[i] for i in rows], batch_size=8)
        np.testing.assert_array_equal(alone, whole[rows])


@pytest.mark.model
def test_vectors_have_unit_length(fp32: OnnxEncoder) -> None:
    norms = np.linalg.norm(fp32.embed(SENTENCES[:10]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


@pytest.mark.model
def test_long_input_is_cut_at_max_length(fp32: OnnxEncoder) -> None:
    words = ("the cat sat on a mat and the dog ran " * 200).split()  # 2000 one-token words
    assert len(words) == 2000
    vector = fp32.embed([" ".join(words)])[0]
    assert fp32.last_truncated == 1
    assert np.isfinite(vector).all()
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
    # [CLS] + the first max_length - 2 words + [SEP]
    head = fp32.embed([" ".join(words[: fp32.max_length - 2])])[0]
    assert fp32.last_truncated == 0
    assert np.abs(vector - head).max() < 1e-5


@pytest.mark.model
@pytest.mark.parametrize("empty", ["", "   ", "\n\t "])
def test_empty_text_is_refused(fp32: OnnxEncoder, empty: str) -> None:
    with pytest.raises(EmptyPromptError, match=r"text 1 is empty or only whitespace"):
        fp32.embed(["fine", empty])
    with pytest.raises(EmptyPromptError, match=r"text 0 is empty"):
        fp32.embed_one(empty)


@pytest.mark.model
def test_non_text_is_refused(fp32: OnnxEncoder) -> None:
    with pytest.raises(InvalidRequestError, match=r"text 1 is a int, not a str"):
        fp32.embed(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidRequestError, match="embed_one"):
        fp32.embed("a bare string, not a list")
    assert fp32.embed([]).shape == (0, 384)


@pytest.mark.model
def test_concurrent_calls_get_their_own_answers(fp32: OnnxEncoder) -> None:
    expected = fp32.embed(SENTENCES[:16])
    results: dict[int, Matrix] = {}

    def work(index: int) -> None:
        texts = SENTENCES[index : index + 16] if index % 2 else SENTENCES[:16]
        results[index] = fp32.embed(texts, batch_size=4)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, vectors in results.items():
        want = fp32.embed(SENTENCES[index : index + 16]) if index % 2 else expected
        assert np.abs(vectors - want).max() < 1e-5


@pytest.mark.model
def test_a_graph_with_pooled_output_and_fewer_inputs(built: Built, tmp_path: Path) -> None:
    """Graphs exported by other tools: no token_type_ids, a [batch, dim] output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = np.random.default_rng(0).normal(size=(30522, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
            helper.make_node("ReduceMean", ["tokens", "axis"], ["sentence_embedding"], keepdims=0),
        ],
        "pooled",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1]), "axis")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    onnx.save(model, tmp_path / "pooled.onnx")
    with OnnxEncoder(tmp_path / "pooled.onnx", built.tokenizer, name="pooled") as encoder:
        assert encoder.dim == 4
        vector = encoder.embed_one("hello world")
    ids = [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
    expected = table[ids].mean(axis=0)
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=1e-6)


# -- damaged files -----------------------------------------------------------------------


@pytest.mark.model
def test_a_damaged_onnx_file_is_a_load_error(built: Built, tmp_path: Path) -> None:
    damaged = tmp_path / "model.onnx"
    damaged.write_bytes(built.fp32.read_bytes()[:100_000])
    with pytest.raises(ModelLoadError, match=r"could not load .*model\.onnx.*damaged"):
        OnnxEncoder(damaged, built.tokenizer, name="damaged")
    with pytest.raises(ModelLoadError, match="no ONNX file"):
        OnnxEncoder(tmp_path / "missing.onnx", built.tokenizer, name="missing")


@pytest.mark.model
def test_a_truncated_safetensors_file_is_a_load_error(built: Built, tmp_path: Path) -> None:
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes(built.weights.read_bytes()[:1_000_000])
    with pytest.raises(ModelLoadError, match=r"outside the \d+-byte data section"):
        read_safetensors(truncated)
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        build_bert_encoder(truncated, built.config, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def safetensors(header: dict[str, object], body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def f32(shape: list[int], end: int) -> dict[str, object]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [0, end]}


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\x01\x02", "shorter than the 8-byte header length"),
        ((10**6).to_bytes(8, "little") + b"{}", "header of 1000000 bytes"),
        ((4).to_bytes(8, "little") + b"{{{{", "header is not JSON"),
        (safetensors({"w": f32([2, 2], 16)}, bytes(8)), "outside the 8-byte data section"),
        (safetensors({"w": f32([2, 3], 16)}, bytes(16)), "16 bytes for 6 F32 values"),
        (safetensors({"w": {"dtype": "C64", "shape": [1]}}, b""), "'w'.*'data_offsets'"),
    ],
    ids=["tiny", "long-header", "not-json", "outside", "size", "no-offsets"],
)
def test_corrupt_safetensors_headers_are_refused(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(data)
    with pytest.raises(ModelLoadError, match=why):
        read_safetensors(path)


def test_safetensors_are_read_by_dtype(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2").tobytes()  # exact for small integers
    header = (
        b'{"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}, '
        b'"b": {"dtype": "BF16", "shape": [2, 3], "data_offsets": [24, 36]}, '
        b'"c": {"dtype": "I64", "shape": [2], "data_offsets": [36, 52]}, '
        b'"__metadata__": {"format": "pt"}}'
    )
    body = values.tobytes() + bf16 + np.array([7, -1], "<i8").tobytes()
    path = tmp_path / "small.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + body)
    tensors = read_safetensors(path)
    assert sorted(tensors) == ["a", "b", "c"]
    np.testing.assert_array_equal(tensors["a"], values)
    np.testing.assert_array_equal(tensors["b"], values)
    assert tensors["b"].dtype == np.float32
    np.testing.assert_array_equal(tensors["c"], [7, -1])


# -- the build ---------------------------------------------------------------------------


@pytest.mark.model
def test_the_fp32_build_is_byte_for_byte_deterministic(built: Built, tmp_path: Path) -> None:
    build_bert_encoder(built.weights, built.config, tmp_path / "again.onnx")
    assert sha256(tmp_path / "again.onnx") == sha256(built.fp32)


@pytest.mark.model
def test_the_graph_keeps_its_contract(built: Built) -> None:
    import onnx

    model = onnx.load(str(built.fp32), load_external_data=False)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert model.ir_version == 8
    inputs = {i.name: i.type.tensor_type for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in inputs.values():
        assert tensor.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in tensor.shape.dim] == ["batch", "sequence"]
    (output,) = model.graph.output
    assert output.name == "last_hidden_state"
    dims = output.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", "sequence", 384]
    assert {n.op_type for n in model.graph.node} <= {
        "Add", "Cast", "Div", "Erf", "Gather", "Identity", "LayerNormalization", "MatMul",
        "Mul", "Reshape", "Shape", "Slice", "Softmax", "Sub", "Transpose", "Unsqueeze",
    }  # fmt: skip


@pytest.mark.model
def test_a_config_for_another_architecture_is_refused(built: Built, tmp_path: Path) -> None:
    config = json.loads(built.config.read_text())
    for key, value in [("hidden_act", "gelu_new"), ("position_embedding_type", "relative_key")]:
        path = tmp_path / "config.json"
        path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(UnsupportedError, match=f"{key} is '{value}'"):
            build_bert_encoder(built.weights, path, tmp_path / "model.onnx")


@pytest.mark.model
def test_weights_that_do_not_match_the_config_are_named(built: Built, tmp_path: Path) -> None:
    config = json.loads(built.config.read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, "num_hidden_layers": 7}))
    with pytest.raises(ModelLoadError, match=r"no tensor 'encoder\.layer\.6\.attention"):
        build_bert_encoder(built.weights, path, tmp_path / "model.onnx")
    path.write_text(json.dumps({**config, "intermediate_size": 1024}))
    with pytest.raises(
        ModelLoadError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has shape"
    ):
        build_bert_encoder(built.weights, path, tmp_path / "model.onnx")


# -- the classifier head -----------------------------------------------------------------


def test_the_softmax_head_computes_softmax(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    weights = rng.normal(size=(8, 3)).astype(np.float32)
    bias = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    build_softmax_head(weights, bias, 2.0, tmp_path / "head.onnx")
    head = OnnxClassifierHead(tmp_path / "head.onnx", ["a", "b", "c"])
    embeddings = rng.normal(size=(5, 8)).astype(np.float32)
    logits = (embeddings.astype(np.float64) @ weights + bias) / 2.0
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    probs = head.predict_proba(embeddings)
    assert probs.dtype == np.float32 and probs.shape == (5, 3)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(head.predict_proba(embeddings[0]), expected[:1], atol=1e-6)
    with pytest.raises(InvalidRequestError, match=r"must be \[batch, 8\]"):
        head.predict_proba(np.zeros((2, 7), dtype=np.float32))


def test_a_head_with_other_labels_is_refused(tmp_path: Path) -> None:
    build_softmax_head(np.zeros((4, 3), np.float32), np.zeros(3, np.float32), 1.0, tmp_path / "h")
    with pytest.raises(ModelLoadError, match="outputs 3 probabilities but 2 labels were given"):
        OnnxClassifierHead(tmp_path / "h", ["yes", "no"])


def test_a_head_needs_matching_shapes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"bias must have shape \[3\]"):
        build_softmax_head(np.zeros((4, 3), np.float32), np.zeros(2, np.float32), 1.0, tmp_path)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        build_softmax_head(np.zeros((4, 3), np.float32), np.zeros(3, np.float32), 0.0, tmp_path)


# -- optional dependencies ---------------------------------------------------------------


def test_importing_the_modules_loads_no_heavy_library() -> None:
    code = (
        "import sys, ridgeline_core.runtime.onnx, ridgeline_core.runtime.onnx_build; "
        "print(sorted({'onnx', 'onnxruntime', 'tokenizers', 'torch'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_missing_libraries_name_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(MissingDependencyError, match=r"ridgeline\[onnx\]"):
        build_softmax_head(np.zeros((4, 3), np.float32), np.zeros(3, np.float32), 1.0, tmp_path)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingDependencyError, match=r"onnxruntime is not installed"):
        OnnxClassifierHead(tmp_path / "head.onnx", ["a"])
