"""The HTTP API's request bodies, declared: what each endpoint accepts, with its bounds.

Validation and its messages live here and in :mod:`ridgeline_core.validation` (one
formatter for every request type). Ridgeline's own options inside a body (the
``ridgeline`` object, the classifier's ``mode``/``threshold``/``deadline_s``) become
:class:`~edge_agent.request.options.RequestOptions`, the type every entry point parses to.
Features a valid body may ask for but the local models do not offer are refused with
UnsupportedError by :meth:`ChatBody.refuse_unsupported`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from ridgeline_core import errors
from ridgeline_core.validation import JsonInt, JsonNumber, invalid_request

from ..request.options import Mode, RequestOptions

__all__ = [
    "MAX_CHARS",
    "MAX_INPUTS",
    "ChatBody",
    "ClassifyBody",
    "CompletionBody",
    "EmbeddingsBody",
    "RidgelineOptions",
    "parse_body",
]

StrictBool = Annotated[bool, Strict()]
ROLES = ("system", "user", "assistant")
MAX_INPUTS = 256  # texts per embeddings request
MAX_CHARS = 32_768  # per text: the encoder reads at most its max_length tokens anyway


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RidgelineOptions(_Body):
    """The ``ridgeline`` object of an OpenAI body (the OpenAI client's ``extra_body``)."""

    mode: Mode | None = None
    threshold: JsonNumber | None = None
    deadline_s: JsonNumber | None = None
    private: StrictBool | None = None
    knowledge: list[str] | str | None = None  # checked by RequestOptions
    strategy: str | None = None
    max_cost: JsonNumber | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            extra = sorted(set(data) - set(cls.model_fields))
            if extra:
                known = ", ".join(sorted(cls.model_fields))
                raise ValueError(f"unknown Ridgeline option {extra[0]!r} (known: {known})")
        return data


class _OpenAIFields(_Body):
    """The fields both completion endpoints read."""

    model: str = ""
    stream: StrictBool | None = False  # null: not streamed (OpenAI's default)
    stream_options: dict[str, Any] | None = None
    n: JsonInt | None = None
    max_tokens: JsonInt | None = None
    max_completion_tokens: JsonInt | None = None
    temperature: JsonNumber | None = None
    top_p: JsonNumber | None = None
    seed: JsonInt | None = None
    stop: tuple[str, ...] | None = None
    ridgeline: RidgelineOptions | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, value: Any) -> Any:
        stops = [value] if isinstance(value, str) else value
        if stops is None:
            return None
        if not isinstance(stops, list) or not all(isinstance(x, str) and x for x in stops):
            raise ValueError("stop must be a string or a list of non-empty strings")
        return tuple(stops)

    @property
    def streamed(self) -> bool:
        return bool(self.stream)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class _IgnoredFields(_Body):
    """OpenAI fields accepted and ignored: they do not change what a local model answers
    (who asks, caching and storage hints, billing tiers, sampling penalties, hints for
    reasoning models, a predicted output that only speeds OpenAI up). README's
    OpenAI-compatibility table lists them with the reason."""

    user: Any = None
    safety_identifier: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    prompt_cache_key: Any = None
    prompt_cache_retention: Any = None
    prompt_cache_options: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    prediction: Any = None
    moderation: Any = None
    parallel_tool_calls: Any = None


class _RefusedUnlessPlain(_Body):
    """OpenAI fields whose plain value (absent, null, empty, false, 1, text) is accepted;
    any other asks for what the local models cannot give, and ignoring it would change
    the answer's meaning, so :meth:`refuse_unsupported` refuses it."""

    response_format: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    best_of: Any = None
    logit_bias: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    audio: Any = None
    modalities: Any = None
    web_search_options: Any = None

    def refuse_unsupported(self) -> None:
        """UnsupportedError for what a valid body may ask but the local models lack."""
        for name, plain, why in _REFUSED:
            if name in type(self).model_fields and not plain(getattr(self, name)):
                raise errors.UnsupportedError(why, param=name)


def _absent(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ([], {}, "")


_REFUSED: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("tools", _absent, "tools are not supported by the local models"),
    ("functions", _absent, "functions are not supported by the local models"),
    ("tool_choice", lambda v: v in (None, "none", "auto"), "tool_choice needs tools"),
    ("function_call", lambda v: v in (None, "none", "auto"), "function_call needs functions"),
    (
        "response_format",
        lambda v: v in (None, {"type": "text"}),
        "response_format other than text is not supported",
    ),
    ("logprobs", _absent, "logprobs is not supported"),
    ("top_logprobs", _absent, "top_logprobs is not supported (logprobs are not)"),
    ("echo", _absent, "echo is not supported"),
    ("suffix", _absent, "suffix (insertion) is not supported"),
    ("best_of", lambda v: v in (None, 1), "best_of must be 1: one answer per request"),
    ("n", lambda v: v in (None, 1), "n must be 1: one answer per request"),
    ("logit_bias", _absent, "logit_bias is not supported: the local models cannot apply it"),
    ("audio", lambda v: v is None, "audio output is not supported: the local models write text"),
    ("modalities", lambda v: v in (None, ["text"]), "modalities other than text are not supported"),
    ("web_search_options", lambda v: v is None, "web search is not supported"),
)


class _OpenAIBody(_OpenAIFields, _IgnoredFields, _RefusedUnlessPlain):
    """Fields both completion endpoints share: those used (:class:`_OpenAIFields`),
    those ignored (:class:`_IgnoredFields`), those refused unless plain
    (:class:`_RefusedUnlessPlain`). A field OpenAI does not define is refused."""

    def options(self, model: str | None, headers: Mapping[str, str]) -> RequestOptions:
        """The request's options: the body's, then ``X-Ridgeline-*`` headers for the
        Ridgeline ones the body does not set."""
        extension = self.ridgeline or RidgelineOptions()
        max_tokens = self.max_completion_tokens
        return RequestOptions.parse(
            {
                "model": model,
                "max_tokens": self.max_tokens if max_tokens is None else max_tokens,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "seed": self.seed,
                "stop": self.stop,
                "mode": extension.mode or _header_mode(headers),
                "threshold": _first(extension.threshold, _header_threshold(headers)),
                "deadline_s": extension.deadline_s,
                "private": _first(extension.private, _header_private(headers)) or False,
                "knowledge": extension.knowledge,
                "strategy": extension.strategy,
                "max_cost": extension.max_cost,
            }
        )


class ChatBody(_OpenAIBody):
    """``POST /v1/chat/completions``."""

    messages: list[dict[str, str]] = Field(default=None, validate_default=True)

    @field_validator("messages", mode="before")
    @classmethod
    def _messages(cls, value: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise ValueError("messages must be a non-empty list")
        return [_message(message, index) for index, message in enumerate(value)]


class CompletionBody(_OpenAIBody):
    """``POST /v1/completions``: one prompt, answered as one user turn."""

    prompt: str = Field(default=None, validate_default=True)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
            value = value[0]
        if not isinstance(value, str):
            raise ValueError("prompt must be a string (one prompt per request)")
        return value


class EmbeddingsBody(_Body):
    """``POST /v1/embeddings``: OpenAI's embeddings API over the agent's sentence encoder."""

    input: list[str] = Field(default=None, validate_default=True)
    model: str = ""
    encoding_format: Literal["float", "base64"] = "float"
    user: Any = None
    dimensions: Any = None

    @field_validator("input", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if not isinstance(texts, list) or not texts:
            raise ValueError("input must be a string or a non-empty list of strings")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"input has {len(texts)} texts; at most {MAX_INPUTS} per request")
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(
                    f"input[{index}] must be a string (token arrays are not supported)"
                )
            if not text.strip():
                raise ValueError(f"input[{index}] is empty")
            if len(text) > MAX_CHARS:
                raise ValueError(f"input[{index}] is {len(text)} characters; at most {MAX_CHARS}")
        return texts

    def refuse_unsupported(self) -> None:
        if self.dimensions is not None:
            raise errors.UnsupportedError(
                "dimensions is not supported: the encoder's size is fixed"
            )


class ClassifyBody(_Body):
    """``POST /v1/classify``: a specialist's label for a text (Ridgeline's own endpoint)."""

    specialist: str = Field(default=None, validate_default=True)
    text: str = Field(default=None, validate_default=True)
    threshold: JsonNumber | None = None
    mode: Mode | None = None
    deadline_s: JsonNumber | None = None

    @field_validator("specialist", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value:
            raise ValueError("specialist must be the name of a trained specialist")
        return value

    @field_validator("text", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("text must be a string")
        return value

    def options(self) -> RequestOptions:
        return RequestOptions.parse(
            {"threshold": self.threshold, "mode": self.mode, "deadline_s": self.deadline_s}
        )


def parse_body(kind: type[_Body], raw: Any) -> Any:
    """``raw`` (parsed JSON) as ``kind``; InvalidRequestError names the first field at fault."""
    if not isinstance(raw, Mapping):
        raise errors.InvalidRequestError("the request body must be a JSON object")
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(exc) from None


def _message(message: Any, index: int) -> dict[str, str]:
    if not isinstance(message, Mapping):
        raise ValueError(f"messages[{index}] must be an object")
    role = message.get("role")
    if role == "developer":  # the newer name of the system role
        role = "system"
    if role not in ROLES:
        raise errors.UnsupportedError(
            f"messages[{index}] has role {role!r}; supported: {', '.join(ROLES)}"
        )
    content = message.get("content")
    if role == "assistant" and content is None:  # valid (with tool calls, say): no text
        content = ""
    return {"role": role, "content": _text_content(content, index)}


def _text_content(content: Any, index: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ValueError(f"messages[{index}].content must be a string or a list of text parts")
    parts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise errors.UnsupportedError(
                f"messages[{index}] has a {kind!r} part; the local models read text only"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise ValueError(f"messages[{index}] has a text part without text")
        parts.append(text)
    return "".join(parts)


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _header_mode(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-ridgeline-mode")


def _header_threshold(headers: Mapping[str, str]) -> float | None:
    value = headers.get("x-ridgeline-threshold")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise errors.InvalidRequestError(
            "threshold must be a number in [0, 1]", param="ridgeline.threshold"
        ) from None


def _header_private(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-ridgeline-private")
    if value is None:
        return None
    if value.lower() not in ("true", "1", "false", "0"):
        raise errors.InvalidRequestError("private must be true or false", param="ridgeline.private")
    return value.lower() in ("true", "1")
