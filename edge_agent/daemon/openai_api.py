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

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from ridgeline_core import errors

from ..agent import Answer
from ..sdk.api import AskOptions, ModelInfo

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

# The OpenAI fields we accept: those we use, and those we ignore because they do not change
# one answer of a local model (user, penalties, metadata, ...).
_KNOWN_FIELDS = frozenset(
    {
        "user",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "metadata",
        "store",
        "parallel_tool_calls",
        "service_tier",
        "stream_options",
        "ridgeline",
        "model",
        "stream",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "messages",
        "prompt",
        "response_format",
        "echo",
        "suffix",
        "best_of",
        "logprobs",
        "top_logprobs",
    }
)


@dataclass
class Call:
    """One request, ready for ``Answerer.ask``."""

    prompt: str | list[dict[str, str]]
    options: AskOptions
    stream: bool
    include_usage: bool
    requested_model: str
    id: str = field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex[:24]}")
    created: int = field(default_factory=lambda: int(time.time()))


def _bad(message: str, param: str | None = None) -> errors.InvalidRequestError:
    error = errors.InvalidRequestError(message)
    error.param = param  # type: ignore[attr-defined]
    return error


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise _bad("the request body must be a JSON object")
    return body


def _number(body: Mapping[str, Any], key: str, kind: type = float) -> Any:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"{key} must be a number", key)
    if not math.isfinite(value):
        raise _bad(f"{key} must be a finite number", key)
    if kind is int:
        if value != int(value):
            raise _bad(f"{key} must be an integer", key)
        return int(value)
    return float(value)


def _options(
    body: Mapping[str, Any], headers: Mapping[str, str], models: Mapping[str, str]
) -> tuple[AskOptions, str]:
    unknown = sorted(set(body) - _KNOWN_FIELDS - {"tools", "tool_choice", "functions"})
    if unknown:
        raise _bad(f"unknown field {unknown[0]!r}", unknown[0])
    for key in ("tools", "functions"):
        if body.get(key):
            raise errors.UnsupportedError(f"{key} are not supported by the local models")
    if body.get("response_format") not in (None, {"type": "text"}):
        raise errors.UnsupportedError("response_format other than text is not supported")
    for key in ("logprobs", "echo"):
        if body.get(key):
            raise errors.UnsupportedError(f"{key} is not supported")
    n = _number(body, "n", int)
    if n not in (None, 1):
        raise errors.UnsupportedError("n must be 1: one answer per request")
    requested = body.get("model", "")
    if not isinstance(requested, str):
        raise _bad("model must be a string", "model")
    model = None
    if requested not in DEFAULT_MODEL_ALIASES:
        role = models.get(requested)
        if role is None:
            known = ", ".join(sorted(models)) or "none"
            raise errors.UnknownModelError(
                f"The model {requested!r} does not exist (local models: {known}; "
                "'default' picks models.default)"
            )
        if role not in ("chat", "base"):
            raise errors.UnsupportedError(f"{requested} is a {role} model, not a chat model")
        model = requested
    options: AskOptions = {"model": model}
    max_tokens = _number(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _number(body, "max_tokens", int)
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        value = _number(body, key)
        if value is not None:
            options[key] = value  # type: ignore[literal-required]
    seed = _number(body, "seed", int)
    if seed is not None:
        options["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
            raise _bad("stop must be a string or a list of non-empty strings", "stop")
        options["stop"] = stops
    extension = body.get("ridgeline") or {}
    if not isinstance(extension, Mapping):
        raise _bad("ridgeline must be an object of Ridgeline options", "ridgeline")
    allowed = {"mode", "threshold", "deadline_s", "private"}
    extra = sorted(set(extension) - allowed)
    if extra:
        raise _bad(f"unknown Ridgeline option {extra[0]!r} (known: {', '.join(sorted(allowed))})")
    mode = extension.get("mode", headers.get("x-ridgeline-mode"))
    if mode is not None:
        if mode not in ("auto", "local", "cloud"):
            raise _bad(f"mode {mode!r} is not one of auto, local, cloud", "ridgeline.mode")
        options["mode"] = mode
    threshold = extension.get("threshold", headers.get("x-ridgeline-threshold"))
    if threshold is not None:
        try:
            options["threshold"] = float(threshold)
        except (TypeError, ValueError):
            raise _bad("threshold must be a number in [0, 1]", "ridgeline.threshold") from None
    deadline = _number(extension, "deadline_s")
    if deadline is not None:
        options["deadline_s"] = deadline
    private = extension.get("private", headers.get("x-ridgeline-private"))
    if private is not None:
        if isinstance(private, str) and private.lower() in ("true", "1", "false", "0"):
            private = private.lower() in ("true", "1")
        if not isinstance(private, bool):
            raise _bad("private must be true or false", "ridgeline.private")
        options["private"] = private
    return options, requested


def _text_content(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise errors.UnsupportedError(
                    f"messages[{index}] has a {kind!r} part; the local models read text only"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _bad(f"messages[{index}] has a text part without text")
            parts.append(text)
        return "".join(parts)
    raise _bad(f"messages[{index}].content must be a string or a list of text parts")


def parse_chat(raw: Any, headers: Mapping[str, str], models: Mapping[str, str]) -> Call:
    """A ``/v1/chat/completions`` body to a :class:`Call` (``models``: name to role)."""
    body = _object(raw)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    chat = []
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise _bad(f"messages[{index}] must be an object", "messages")
        role = message.get("role")
        if role == "developer":  # the newer name of the system role
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise errors.UnsupportedError(
                f"messages[{index}] has role {role!r}; supported: system, user, assistant"
            )
        chat.append({"role": role, "content": _text_content(message.get("content"), index)})
    options, requested = _options(body, headers, models)
    return Call(chat, options, _stream(body), _include_usage(body), requested)


def parse_completion(raw: Any, headers: Mapping[str, str], models: Mapping[str, str]) -> Call:
    """A ``/v1/completions`` body to a :class:`Call`: the prompt is answered as one user
    turn, since confidence and escalation judge answers, not raw continuations."""
    body = _object(raw)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt must be a string (one prompt per request)", "prompt")
    options, requested = _options(body, headers, models)
    call = Call(prompt, options, _stream(body), _include_usage(body), requested)
    call.id = f"cmpl-{uuid.uuid4().hex[:24]}"
    return call


def _stream(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("stream must be true or false", "stream")
    return stream


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options") or {}
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


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

_STATUS: dict[type[errors.RidgelineError], tuple[int, str]] = {
    errors.PromptTooLongError: (400, "invalid_request_error"),
    errors.InvalidRequestError: (400, "invalid_request_error"),
    errors.UnsupportedError: (400, "invalid_request_error"),
    errors.UnauthenticatedError: (401, "authentication_error"),
    errors.PermissionDeniedError: (403, "permission_error"),
    errors.UnknownModelError: (404, "invalid_request_error"),
    errors.ModelNotPulledError: (404, "invalid_request_error"),
    errors.OverloadedError: (503, "server_error"),
    errors.UnavailableError: (503, "server_error"),
    errors.RequestCancelledError: (499, "cancelled"),
    errors.ConfigError: (500, "server_error"),
}

_CODES = {
    "prompt_too_long": "context_length_exceeded",
    "unknown_model": "model_not_found",
    "model_not_pulled": "model_not_found",
    "unauthenticated": "invalid_api_key",
}


def status_of(error: errors.RidgelineError) -> tuple[int, str]:
    """HTTP status and OpenAI error type for a Ridgeline error (500 for model failures)."""
    for kind in type(error).__mro__:
        found = _STATUS.get(kind)
        if found is not None:
            return found
    return 500, "server_error"


def error_body(error: errors.RidgelineError) -> dict[str, Any]:
    _, kind = status_of(error)
    return {
        "error": {
            "message": str(error),
            "type": kind,
            "param": getattr(error, "param", None),
            "code": _CODES.get(error.kind, error.kind),
        }
    }
