"""Request and response bodies of the daemon's ONNX endpoints, both ways; pure functions.

``POST /v1/embeddings`` is OpenAI's embeddings API over the agent's sentence encoder.
``POST /v1/classify`` is Ridgeline's: ``{"specialist": NAME, "text": TEXT}`` with optional
``threshold``, ``mode`` and ``deadline_s``, answered with the classification record.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ridgeline_core import errors

__all__ = [
    "MAX_INPUTS",
    "ClassifyCall",
    "EmbeddingsCall",
    "embeddings_response",
    "parse_classify",
    "parse_embeddings",
]

MAX_INPUTS = 256  # texts per embeddings request
MAX_CHARS = 32_768  # per text: the encoder reads at most its max_length tokens anyway


def _bad(message: str, param: str | None = None) -> errors.InvalidRequestError:
    error = errors.InvalidRequestError(message)
    error.param = param  # type: ignore[attr-defined]
    return error


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str  # as requested; "" for the default encoder
    texts: list[str]
    encoding_format: str  # "float" or "base64"


def parse_embeddings(body: Any) -> EmbeddingsCall:
    if not isinstance(body, Mapping):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(body) - {"input", "model", "encoding_format", "user", "dimensions"})
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    if body.get("dimensions") is not None:
        raise errors.UnsupportedError("dimensions is not supported: the encoder's size is fixed")
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not texts:
        raise _bad("input must be a string or a non-empty list of strings", "input")
    if len(texts) > MAX_INPUTS:
        raise _bad(f"input has {len(texts)} texts; at most {MAX_INPUTS} per request", "input")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _bad(f"input[{index}] must be a string (token arrays are not supported)", "input")
        if not text.strip():
            raise _bad(f"input[{index}] is empty", "input")
        if len(text) > MAX_CHARS:
            raise _bad(f"input[{index}] is {len(text)} characters; at most {MAX_CHARS}", "input")
    model = body.get("model", "")
    if not isinstance(model, str):
        raise _bad("model must be a string", "model")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise _bad("encoding_format must be 'float' or 'base64'", "encoding_format")
    return EmbeddingsCall(model, list(texts), encoding)


def embeddings_response(
    model: str, vectors: npt.NDArray[np.float32], tokens: int, encoding_format: str
) -> dict[str, Any]:
    def encode(row: npt.NDArray[np.float32]) -> Any:
        if encoding_format == "base64":
            return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        return row.tolist()

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(row)}
            for i, row in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass(frozen=True)
class ClassifyCall:
    specialist: str
    text: str
    threshold: float | None
    mode: str | None
    deadline_s: float | None


def parse_classify(body: Any) -> ClassifyCall:
    if not isinstance(body, Mapping):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(body) - {"specialist", "text", "threshold", "mode", "deadline_s"})
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    specialist, text = body.get("specialist"), body.get("text")
    if not isinstance(specialist, str) or not specialist:
        raise _bad("specialist must be the name of a trained specialist", "specialist")
    if not isinstance(text, str):
        raise _bad("text must be a string", "text")
    threshold = _optional_number(body, "threshold")
    deadline = _optional_number(body, "deadline_s")
    mode = body.get("mode")
    if mode is not None and mode not in ("auto", "local", "cloud"):
        raise _bad(f"mode {mode!r} is not one of auto, local, cloud", "mode")
    return ClassifyCall(specialist, text, threshold, mode, deadline)


def _optional_number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{key} must be a number", key)
    return float(value)
