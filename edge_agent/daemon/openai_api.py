"""The OpenAI wire format, both ways: request bodies to :class:`Call`, answers to response
bodies and stream chunks, Ridgeline errors to OpenAI error bodies and HTTP statuses.

Pure functions, no I/O: the HTTP server calls them at its boundary.

The decision record rides in an extension field ``ridgeline`` (plain clients ignore
unknown fields) and, for non-streaming answers, in ``X-Ridgeline-*`` headers. Ridgeline
options come in the same way: a ``ridgeline`` object in the body (the OpenAI client's
``extra_body``) or ``X-Ridgeline-Mode``/``X-Ridgeline-Threshold``/``X-Ridgeline-Private``
headers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ridgeline_core import errors

from ..request.answer import Answer
from ..request.options import RequestOptions
from ..sdk.api import ModelInfo
from .bodies import ChatBody, CompletionBody, parse_body

__all__ = [
    "Call",
    "chat_chunk",
    "chat_response",
    "completion_chunk",
    "completion_response",
    "decision_headers",
    "error_body",
    "models_response",
    "parse_chat",
    "parse_completion",
    "status_of",
    "usage_chunk",
]

DEFAULT_MODEL_ALIASES = frozenset({"", "default", "ridgeline", "auto"})


@dataclass
class Call:
    """One request, ready for the agent."""

    prompt: str | list[dict[str, str]]
    options: RequestOptions
    stream: bool
    include_usage: bool
    requested_model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def local_model(requested: str, models: Mapping[str, str]) -> str | None:
    """The local chat model a request names (None: the default), from ``models`` (name to
    role); UnknownModelError names the models there are."""
    if requested in DEFAULT_MODEL_ALIASES:
        return None
    role = models.get(requested)
    if role is None:
        known = ", ".join(sorted(models)) or "none"
        raise errors.UnknownModelError(
            f"The model {requested!r} does not exist (local models: {known}; "
            "'default' picks models.default)"
        )
    if role not in ("chat", "base"):
        raise errors.UnsupportedError(f"{requested} is a {role} model, not a chat model")
    return requested


def parse_chat(raw: Any, headers: Mapping[str, str], models: Mapping[str, str]) -> Call:
    """A ``/v1/chat/completions`` body to a :class:`Call` (``models``: name to role)."""
    body: ChatBody = parse_body(ChatBody, raw)
    body.refuse_unsupported()
    options = body.options(local_model(body.model, models), headers)
    return Call(list(body.messages), options, body.streamed, body.include_usage, body.model)


def parse_completion(raw: Any, headers: Mapping[str, str], models: Mapping[str, str]) -> Call:
    """A ``/v1/completions`` body to a :class:`Call`: the prompt is answered as one user
    turn, since confidence and escalation judge answers, not raw continuations."""
    body: CompletionBody = parse_body(CompletionBody, raw)
    body.refuse_unsupported()
    options = body.options(local_model(body.model, models), headers)
    call = Call(body.prompt, options, body.streamed, body.include_usage, body.model)
    call.id = f"cmpl-{uuid.uuid4().hex[:24]}"
    return call


# -- responses -------------------------------------------------------------------------


def _finish(answer: Answer) -> str:
    return "length" if answer.finish_reason == "length" else "stop"


def usage(answer: Answer) -> dict[str, int]:
    broker = answer.decision.broker
    if answer.source in ("cloud", "skipped-local") and broker is not None:
        prompt, completion = broker.prompt_tokens or 0, broker.completion_tokens or 0
    elif answer.timings is not None:
        prompt, completion = answer.timings.prompt_tokens, answer.timings.completion_tokens
    else:
        prompt = completion = 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def extension(answer: Answer) -> dict[str, Any]:
    """The ``ridgeline`` field: the answer without its text (the whole decision record)."""
    data = answer.to_dict()
    data.pop("text")
    return data


def chat_response(call: Call, answer: Answer) -> dict[str, Any]:
    return {
        "id": call.id,
        "object": "chat.completion",
        "created": call.created,
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": _finish(answer),
                "logprobs": None,
            }
        ],
        "usage": usage(answer),
        "system_fingerprint": None,
        "ridgeline": extension(answer),
    }


def completion_response(call: Call, answer: Answer) -> dict[str, Any]:
    return {
        "id": call.id,
        "object": "text_completion",
        "created": call.created,
        "model": answer.model,
        "choices": [
            {"index": 0, "text": answer.text, "finish_reason": _finish(answer), "logprobs": None}
        ],
        "usage": usage(answer),
        "ridgeline": extension(answer),
    }


def chat_chunk(
    call: Call,
    model: str,
    *,
    role: bool = False,
    text: str | None = None,
    answer: Answer | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``: the opening role, a piece of text, or the last one
    (finish reason, usage when asked, and the decision record)."""
    delta: dict[str, Any] = {}
    if role:
        delta["role"] = "assistant"
    if text is not None:
        delta["content"] = text
    chunk: dict[str, Any] = {
        "id": call.id,
        "object": "chat.completion.chunk",
        "created": call.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": None if answer is None else _finish(answer),
                "logprobs": None,
            }
        ],
    }
    if answer is not None:
        chunk["model"] = answer.model
        chunk["ridgeline"] = extension(answer)
    if call.include_usage:
        chunk["usage"] = None  # OpenAI's: null on every chunk but the usage chunk
    return chunk


def usage_chunk(call: Call, answer: Answer, chat: bool) -> dict[str, Any]:
    """The extra last chunk ``stream_options.include_usage`` asks for: no choices."""
    return {
        "id": call.id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": call.created,
        "model": answer.model,
        "choices": [],
        "usage": usage(answer),
    }


def completion_chunk(
    call: Call, model: str, *, text: str = "", answer: Answer | None = None
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": call.id,
        "object": "text_completion",
        "created": call.created,
        "model": model if answer is None else answer.model,
        "choices": [
            {
                "index": 0,
                "text": text,
                "finish_reason": None if answer is None else _finish(answer),
                "logprobs": None,
            }
        ],
    }
    if answer is not None:
        chunk["ridgeline"] = extension(answer)
    if call.include_usage:
        chunk["usage"] = None
    return chunk


def decision_headers(answer: Answer) -> dict[str, str]:
    """The decision's headline as ``X-Ridgeline-*`` headers (ASCII: the reason is
    percent-encoded)."""
    headers = {
        "X-Ridgeline-Path": answer.source,
        "X-Ridgeline-Model": answer.model,
        "X-Ridgeline-Threshold": f"{answer.threshold:.4f}",
        "X-Ridgeline-Reason": quote(answer.decision.reason, safe=" :;,()<>=/.-"),
    }
    if answer.confidence is not None:
        headers["X-Ridgeline-Confidence"] = f"{answer.confidence:.4f}"
    return headers


def models_response(models: list[ModelInfo]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "ridgeline",
                "ridgeline": m.to_dict(),
            }
            for m in models
            if m.role in ("chat", "base")
        ],
    }


# -- errors ------------------------------------------------------------------------------

# OpenAI's error type for each HTTP status our errors carry (errors.py: http_status)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    499: "cancelled",
}

_CODES = {
    "prompt_too_long": "context_length_exceeded",
    "unknown_model": "model_not_found",
    "model_not_pulled": "model_not_found",
    "unauthenticated": "invalid_api_key",
}


def status_of(error: errors.RidgelineError) -> tuple[int, str]:
    """HTTP status and OpenAI error type for a Ridgeline error (the class says which)."""
    return error.http_status, _TYPES.get(error.http_status, "server_error")


def error_body(error: errors.RidgelineError, *, prompt_noun: str = "messages") -> dict[str, Any]:
    """The OpenAI error body; ``prompt_noun``: what the request's prompt is called
    (``messages``, ``prompt``) in a context-length message."""
    _, kind = status_of(error)
    return {
        "error": {
            "message": _message(error, prompt_noun),
            "type": kind,
            "param": error.param,
            "code": _CODES.get(error.kind, error.kind),
        }
    }


def _message(error: errors.RidgelineError, prompt_noun: str) -> str:
    """The error's message; a prompt over the context in OpenAI's words, which clients
    (LiteLLM, LangChain) match to fall back to a model with a longer context."""
    if isinstance(error, errors.PromptTooLongError) and error.context_length is not None:
        return (
            f"This model's maximum context length is {error.context_length} tokens. However, "
            f"your {prompt_noun} resulted in {error.prompt_tokens} tokens. Please reduce the "
            f"length of the {prompt_noun} (or raise runtime.n_ctx if the model was trained "
            "for a longer context)."
        )
    return str(error)
