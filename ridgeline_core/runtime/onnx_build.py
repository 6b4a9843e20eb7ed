"""Build ONNX graphs from safetensors weights, without torch.

Why not ``torch.onnx.export``: torch is hundreds of megabytes to several gigabytes, and
edge devices do not have it; the exporter's output changes with the torch version; and
tracing takes tens of seconds where this takes a few. Here the safetensors file is
parsed with numpy (its format is an 8-byte little-endian header length, a JSON header
with dtype, shape and data offsets, then the raw buffers) and the graph is written with
``onnx.helper``, node by node, so:

- the same weights and onnx version give the same bytes (no timestamps, fixed names,
  initialisers in a fixed order), which lets the store content-address the output;
- a build takes seconds and needs only ``onnx`` (and ``onnxruntime`` for int8);
- the graph is ours: standard ops at opset 17 (IR 8), which onnxruntime 1.18 and newer
  run, written in the forms its optimiser fuses at load (Add + LayerNormalization into
  SkipLayerNormalization, the erf GELU and its bias into BiasGelu). Its attention fusion
  only matches opset 11 graphs, so attention stays as MatMul/Softmax.

Supported: BERT encoders with absolute position embeddings, exact (erf) GELU and
post-LayerNorm, such as all-MiniLM-L6-v2. The encoder's graph contract::

    input_ids, attention_mask, token_type_ids   int64 [batch, sequence]
    last_hidden_state                           float32 [batch, sequence, hidden]

Pooling and normalisation happen in :class:`ridgeline_core.runtime.onnx.OnnxEncoder`.
``onnx`` and ``onnxruntime`` are imported when a build runs, never at import.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import MissingDependencyError, ModelLoadError, UnsupportedError
from ..files import atomic_write

__all__ = [
    "ENCODER_INPUTS",
    "ENCODER_OUTPUT",
    "OPSET",
    "RECIPE",
    "BertConfig",
    "build_bert_encoder",
    "build_softmax_head",
    "quantize_int8",
    "read_safetensors",
]

OPSET = 17  # LayerNormalization is a standard op from 17
IR_VERSION = 8  # the lowest IR that opset 17 allows: readable by onnxruntime >= 1.18
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ENCODER_OUTPUT = "last_hidden_state"
# Added to the attention scores of padding keys. Large enough that exp() of it is 0 in
# float32, small enough that subtracting a score from it cannot overflow.
MASK_VALUE = -10000.0

_DTYPES: dict[str, str] = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
    "BOOL": "?",
}
_FLOATS = {"F64", "F32", "F16", "BF16"}

Array = npt.NDArray[Any]

# Names how the files are made; `models build` rebuilds a model whose stored build has
# another recipe. Change it whenever the graph or the quantisation changes.
RECIPE = "bert-onnx/1"


# -- safetensors -----------------------------------------------------------------------


def read_safetensors(path: Path) -> dict[str, Array]:
    """Every tensor in a safetensors file, by name; floating tensors become float32.

    Raises :class:`ModelLoadError` for a missing, truncated or corrupt file, or a header
    whose offsets point outside the data.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read safetensors file {path}: {exc}") from exc

    def corrupt(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{path} is not a valid safetensors file ({why}); pull or download it again"
        )

    if len(data) < 8:
        raise corrupt(f"{len(data)} bytes, shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise corrupt(f"header of {header_len} bytes but the file has {len(data)}")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise corrupt(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise corrupt("header is not a JSON object")
    buffer = memoryview(data)[8 + header_len :]
    tensors: dict[str, Array] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            tensors[name] = _tensor(entry, buffer)
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(f"tensor {name!r}: {exc}") from exc
    return tensors


def _tensor(entry: Any, buffer: memoryview) -> Array:
    dtype_name = entry["dtype"]
    shape = [int(n) for n in entry["shape"]]
    begin, end = (int(n) for n in entry["data_offsets"])
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    if not 0 <= begin <= end <= len(buffer):
        raise ValueError(
            f"data offsets [{begin}, {end}] lie outside the {len(buffer)}-byte data section"
        )
    count = math.prod(shape)
    raw = buffer[begin:end]
    if dtype_name == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        if len(raw) != 2 * count:
            raise ValueError(f"{len(raw)} bytes for {count} BF16 values")
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return halves.view(np.float32).reshape(shape)
    if dtype_name not in _DTYPES:
        raise ValueError(f"unsupported dtype {dtype_name!r}")
    dtype = np.dtype(_DTYPES[dtype_name])
    if len(raw) != dtype.itemsize * count:
        raise ValueError(f"{len(raw)} bytes for {count} {dtype_name} values")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if dtype_name in _FLOATS:
        return array.astype(np.float32, copy=False)
    return array


# -- the BERT encoder ------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """The parts of a Hugging Face BERT ``config.json`` the graph depends on."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_file(cls, path: Path) -> BertConfig:
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read model config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelLoadError(f"model config {path} is not a JSON object")
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "config") -> BertConfig:
        _check_supported(raw, source)
        ints = {key: _positive_int(raw, key, source) for key in _INT_FIELDS}
        eps = raw.get("layer_norm_eps", 1e-12)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 < eps < 1:
            raise ModelLoadError(f"{source}: layer_norm_eps must be in (0, 1), not {eps!r}")
        if ints["hidden_size"] % ints["num_attention_heads"]:
            raise ModelLoadError(
                f"{source}: hidden_size {ints['hidden_size']} is not a multiple of "
                f"num_attention_heads {ints['num_attention_heads']}"
            )
        return cls(**ints, layer_norm_eps=float(eps))

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the graph reads, with its shape (PyTorch layout: Linear is [out, in])."""
        return _expected_shapes(self)


_INT_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
)


def _check_supported(raw: Mapping[str, Any], source: str) -> None:
    checks = (
        ("model_type", raw.get("model_type"), ("bert",)),
        ("hidden_act", raw.get("hidden_act", "gelu"), ("gelu",)),
        ("position_embedding_type", raw.get("position_embedding_type", "absolute"), ("absolute",)),
    )
    for key, value, supported in checks:
        if value not in supported:
            raise UnsupportedError(
                f"{source}: {key} is {value!r}; the ONNX builder supports BERT encoders "
                f"with {key} {' or '.join(map(repr, supported))}"
            )


def _positive_int(raw: Mapping[str, Any], key: str, source: str) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelLoadError(f"{source}: {key} must be a positive integer, not {value!r}")
    return value


def _expected_shapes(config: BertConfig) -> dict[str, tuple[int, ...]]:
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, h),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, h),
        "embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "embeddings.LayerNorm.weight": (h,),
        "embeddings.LayerNorm.bias": (h,),
    }
    for n in range(config.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for linear, out, inp in (
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ):
            shapes[f"{p}{linear}.weight"] = (out, inp)
            shapes[f"{p}{linear}.bias"] = (out,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{norm}.weight"] = (h,)
            shapes[f"{p}{norm}.bias"] = (h,)
    return shapes


def _checked_weights(
    tensors: Mapping[str, Array], config: BertConfig, source: Path
) -> dict[str, Array]:
    """The tensors the graph needs, by their unprefixed names, checked for presence and shape.

    Checkpoints of task models (``BertForSequenceClassification``) prefix the encoder's
    tensors with ``bert.``; both layouts are accepted.
    """
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in tensors else ""
    weights: dict[str, Array] = {}
    for name, shape in config.expected_shapes().items():
        tensor = tensors.get(prefix + name)
        if tensor is None:
            raise ModelLoadError(
                f"{source} has no tensor {prefix + name!r}, which a BERT encoder with "
                f"{config.num_hidden_layers} layers needs; do the weights match config.json?"
            )
        if tuple(tensor.shape) != shape:
            raise ModelLoadError(
                f"{source}: tensor {prefix + name!r} has shape {list(tensor.shape)}, "
                f"config.json implies {list(shape)}"
            )
        if tensor.dtype != np.float32:
            raise ModelLoadError(
                f"{source}: tensor {prefix + name!r} is {tensor.dtype}, not a float type"
            )
        weights[name] = tensor
    return weights


def build_bert_encoder(weights: Path, config: Path, out: Path) -> None:
    """Write the ONNX graph of the BERT encoder in ``weights`` (safetensors) to ``out``.

    The same inputs and onnx version give the same bytes. ``out`` is replaced atomically.
    """
    onnx = _import_onnx()
    bert = BertConfig.from_file(config)
    tensors = _checked_weights(read_safetensors(weights), bert, weights)
    model = _BertGraph(onnx, bert, tensors).model()
    onnx.checker.check_model(model)
    # intermediate shapes let onnxruntime fuse Add + LayerNormalization at load
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    atomic_write(Path(out), model.SerializeToString(), mode=None)


class _GraphWriter:
    """Appends ONNX nodes and initializers; node and tensor names are fixed by position,
    so the same weights always give the same bytes."""

    def __init__(self, onnx: Any, config: BertConfig, weights: Mapping[str, Array]) -> None:
        self.onnx = onnx
        self.helper = onnx.helper
        self.config = config
        self.weights = weights
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._counter = 0

    def _name(self, op: str) -> str:
        self._counter += 1
        return f"{op}_{self._counter}"

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        name = self._name(op_type)
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [name], name, **attrs))
        return name

    def const(self, name: str, value: Array) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(value, name))
        return name

    def weight(self, name: str, *, transpose: bool = False) -> str:
        value = self.weights[name]
        if transpose:  # PyTorch's Linear stores [out, in]; MatMul wants [in, out]
            return self.const(name + ".T", np.ascontiguousarray(value.T))
        return self.const(name, np.ascontiguousarray(value))

    def linear(self, x: str, prefix: str) -> str:
        product = self.op("MatMul", x, self.weight(prefix + ".weight", transpose=True))
        return self.op("Add", product, self.weight(prefix + ".bias"))

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.weight(prefix + ".weight"),
            self.weight(prefix + ".bias"),
            axis=-1,
            epsilon=self.config.layer_norm_eps,
        )


class _BertLayer(_GraphWriter):
    """Emits one transformer layer of a BERT encoder: self-attention, the feed-forward with
    the exact GELU, and a residual LayerNorm after each."""

    def layer(self, x: str, bias: str, p: str) -> str:
        attended = self.self_attention(x, bias, p + "attention.self")
        projected = self.linear(attended, p + "attention.output.dense")
        x = self.layer_norm(self.op("Add", projected, x), p + "attention.output.LayerNorm")
        inner = self.gelu(self.linear(x, p + "intermediate.dense"))
        outer = self.linear(inner, p + "output.dense")
        return self.layer_norm(self.op("Add", outer, x), p + "output.LayerNorm")

    def self_attention(self, x: str, bias: str, p: str) -> str:
        def heads(name: str, perm: list[int]) -> str:
            split = self.op("Reshape", self.linear(x, f"{p}.{name}"), "heads_shape")
            return self.op("Transpose", split, perm=perm)

        query = heads("query", [0, 2, 1, 3])  # [batch, heads, sequence, head_size]
        key = heads("key", [0, 2, 3, 1])  # [batch, heads, head_size, sequence]
        value = heads("value", [0, 2, 1, 3])
        scores = self.op("Div", self.op("MatMul", query, key), "sqrt_head_size")
        probs = self.op("Softmax", self.op("Add", scores, bias), axis=-1)
        context = self.op("Transpose", self.op("MatMul", probs, value), perm=[0, 2, 1, 3])
        return self.op("Reshape", context, "hidden_shape")

    def gelu(self, x: str) -> str:
        """The exact GELU, x * (1 + erf(x / sqrt(2))) * 0.5, in the form onnxruntime fuses."""
        erf = self.op("Erf", self.op("Div", x, "sqrt_two"))
        return self.op("Mul", self.op("Mul", x, self.op("Add", erf, "one")), "half")


class _BertGraph(_BertLayer):
    """Emits the nodes of one BERT encoder: the embeddings, the padding mask as an attention
    bias, the stack of layers and the output."""

    def model(self) -> Any:
        hidden = self.encoder(self.embeddings())
        self.nodes.append(self.helper.make_node("Identity", [hidden], [ENCODER_OUTPUT], "output"))
        return _encoder_model(self.onnx, self.config, self.nodes, self.initializers)

    def embeddings(self) -> str:
        words = self.op("Gather", self.weight("embeddings.word_embeddings.weight"), "input_ids")
        types = self.op(
            "Gather", self.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"
        )
        # positions 0..sequence-1: the first rows of the position table
        sequence = self.op("Shape", "input_ids", start=1, end=2)
        positions = self.op(
            "Slice",
            self.weight("embeddings.position_embeddings.weight"),
            self.const("zero_1d", np.array([0], dtype=np.int64)),
            sequence,
            self.const("zero_axis", np.array([0], dtype=np.int64)),
        )
        summed = self.op("Add", self.op("Add", words, types), positions)
        return self.layer_norm(summed, "embeddings.LayerNorm")

    def attention_bias(self) -> str:
        """[batch, 1, 1, sequence]: 0 for real keys, MASK_VALUE for padding."""
        mask = self.op("Unsqueeze", "attention_mask", "axes_1_2")
        inverted = self.op("Sub", "one", self.op("Cast", mask, to=self.onnx.TensorProto.FLOAT))
        return self.op("Mul", inverted, "mask_value")

    def encoder(self, hidden: str) -> str:
        for name, value in _encoder_constants(self.config).items():
            self.const(name, value)
        bias = self.attention_bias()
        for n in range(self.config.num_hidden_layers):
            hidden = self.layer(hidden, bias, f"encoder.layer.{n}.")
        return hidden


def _encoder_constants(c: BertConfig) -> dict[str, Array]:
    """The scalars and shapes the encoder's nodes share, by name."""
    return {
        "axes_1_2": np.array([1, 2], np.int64),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
        "sqrt_two": np.array(math.sqrt(2.0), np.float32),
        "mask_value": np.array(MASK_VALUE, np.float32),
        "sqrt_head_size": np.array(math.sqrt(c.head_size), np.float32),
        "heads_shape": np.array([0, 0, c.num_attention_heads, c.head_size], np.int64),
        "hidden_shape": np.array([0, 0, c.hidden_size], np.int64),
    }


def _encoder_model(onnx: Any, config: BertConfig, nodes: list[Any], weights: list[Any]) -> Any:
    """The model around the encoder's nodes: int64 inputs, the hidden states out."""
    helper, tp = onnx.helper, onnx.TensorProto
    inputs = [
        helper.make_tensor_value_info(name, tp.INT64, ["batch", "sequence"])
        for name in ENCODER_INPUTS
    ]
    output = helper.make_tensor_value_info(
        ENCODER_OUTPUT, tp.FLOAT, ["batch", "sequence", config.hidden_size]
    )
    graph = helper.make_graph(nodes, "bert_encoder", inputs, [output], initializer=weights)
    model = helper.make_model(
        graph,
        producer_name="ridgeline",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    # read by OnnxEncoder: inputs longer than the position table cannot be embedded
    helper.set_model_props(
        model,
        {
            "max_position_embeddings": str(config.max_position_embeddings),
            "hidden_size": str(config.hidden_size),
        },
    )
    return model


# -- a softmax classifier head -----------------------------------------------------------


def build_softmax_head(
    weights: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    temperature: float,
    out: Path,
) -> None:
    """Write ``softmax((embedding @ weights + bias) / temperature)`` as an ONNX graph.

    Input ``embedding`` float32 [batch, dim]; output ``probabilities`` float32
    [batch, n_labels]. ``weights`` is [dim, n_labels] and ``bias`` [n_labels].
    """
    onnx = _import_onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    w = np.asarray(weights, dtype=np.float32)
    b = np.asarray(bias, dtype=np.float32)
    if w.ndim != 2 or w.shape[1] < 1:
        raise ValueError(f"weights must be [dim, n_labels], got shape {list(w.shape)}")
    if b.shape != (w.shape[1],):
        raise ValueError(f"bias must have shape [{w.shape[1]}], got {list(b.shape)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, not {temperature!r}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise ValueError("weights and bias must be finite")
    dim, labels = w.shape
    nodes = [
        helper.make_node("MatMul", ["embedding", "weights"], ["logits"], "matmul"),
        helper.make_node("Add", ["logits", "bias"], ["biased"], "add"),
        helper.make_node("Div", ["biased", "temperature"], ["scaled"], "div"),
        helper.make_node("Softmax", ["scaled"], ["probabilities"], "softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "softmax_head",
        [helper.make_tensor_value_info("embedding", tp.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", tp.FLOAT, ["batch", labels])],
        initializer=[
            onnx.numpy_helper.from_array(np.ascontiguousarray(w), "weights"),
            onnx.numpy_helper.from_array(b, "bias"),
            onnx.numpy_helper.from_array(np.array(temperature, np.float32), "temperature"),
        ],
    )
    model = helper.make_model(
        graph,
        producer_name="ridgeline",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    atomic_write(Path(out), model.SerializeToString(), mode=None)


# -- int8 ------------------------------------------------------------------------------

# Which weights become int8, and how: the outcome of measuring min cosine against
# sentence-transformers (fp32) on 60 varied sentences, all-MiniLM-L6-v2, onnxruntime 1.32,
# an AVX2 CPU without VNNI, 2 threads. Batch-1 speed is relative to our fp32 graph.
#
#   every MatMul, per-tensor                        min 0.861   1.5x
#   every MatMul, per-channel (reduce_range: same)   min 0.963   1.6x
#   per-channel, all but the FFN down projection     min 0.980
#   per-tensor, attention q, k, v, out (FFN fp32)    min 0.9905  1.1x
#   per-channel, q/k/out + FFN down of layers 4-5    min 0.9958  1.15x
#   per-tensor, attention q, k, out (chosen)         min 0.998   1.0-1.1x, 8 MB smaller
#
# Short inputs ("ok", "?") are always the worst: onnxruntime quantises activations per
# tensor (uint8, range over the whole batch), and BERT's [CLS] token carries a few huge
# activations (up to ~30 where the rest are below ~5), so the other tokens get few levels.
# The FFN (2/3 of the FLOPs) and the value projection suffer most; query, key and the
# attention output barely notice. Also tried: SmoothQuant-style scaling of activations into
# weights (worse: u8s8 kernels saturate on AVX2 without VNNI once weights grow), 7-bit
# weights (reduce_range) and uint8 weights (no better), and MatMulNBits 8-bit weight-only
# (min 0.998 but slower than fp32 here). The word embedding Gather stays fp32: only MatMul
# is quantised, and it is a lookup, not arithmetic, so int8 would save space, not time.
# On CPUs with VNNI (or ARM dot-product) kernels the fully quantised variants lose less;
# measure there before quantising more. The result uses only standard ops
# (DynamicQuantizeLinear, MatMulInteger) at opset 17.
_INT8_WEIGHTS = (
    ".attention.self.query.weight.T",
    ".attention.self.key.weight.T",
    ".attention.output.dense.weight.T",
)


def quantize_int8(src: Path, dst: Path) -> None:
    """Write an int8 variant of the encoder at ``src`` (built by :func:`build_bert_encoder`)
    to ``dst``: dynamic quantisation of the attention's query, key and output weights (see
    ``_INT8_WEIGHTS`` for why only those), which keeps every test sentence above 0.995
    cosine of the fp32 model."""
    onnx = _import_onnx()
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise MissingDependencyError.for_module("onnxruntime", "onnx") from exc
    try:
        model = onnx.load(str(src), load_external_data=False)
    except (OSError, ValueError) as exc:  # DecodeError is a ValueError
        raise ModelLoadError(f"cannot read ONNX model {src}: {exc}") from exc
    nodes = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul" and node.input[1].endswith(_INT8_WEIGHTS)
    ]
    if not nodes:
        raise ModelLoadError(
            f"{src} has no attention projections named like build_bert_encoder's; "
            "only its graphs can be quantised here"
        )
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        with _quiet_preprocess_hint():
            quantize_dynamic(
                Path(src),
                tmp,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=nodes,
                per_channel=False,
                weight_type=QuantType.QInt8,
            )
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """quantize_dynamic logs a hint to run its pre-processing (symbolic shape inference and
    optimisation) to the root logger; our graph already carries inferred shapes."""
    root = logging.getLogger()
    hint = _DropPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


# -- helpers ---------------------------------------------------------------------------


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.numpy_helper
    except ImportError as exc:
        raise MissingDependencyError.for_module("onnx", "onnx") from exc
    return onnx
