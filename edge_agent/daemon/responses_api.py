"""OpenAI's Responses API (``POST /v1/responses``), its text subset: the request body,
declared, and the response object and stream events it is answered with.

A Responses request is a chat request in another shape: ``instructions`` is a system
turn, ``input`` the conversation (a string is one user turn). It is translated to a chat
body and parsed by :func:`.openai_api.parse_chat`, so models, Ridgeline options, headers
and every check are the chat endpoint's. The decision record rides in the same ``ridgeline``
extension field (and, for non-streaming answers, the same ``X-Ridgeline-*`` headers).

Fields of the API that would change an answer's meaning without the client knowing are
refused (:meth:`ResponsesBody.refuse_unsupported`): nothing is stored, so
``previous_response_id``, ``conversation``, ``prompt`` and ``background`` cannot be
honoured; tools, structured output, log probabilities and ``moderation`` (which may ask
to block an answer) are not offered here. Fields that only tune a hosted service
(caching, tiers, reasoning effort, truncation, safety identifiers, ...) are accepted and
ignored; ``metadata`` is echoed.

Pure functions, no I/O: :mod:`.responses_http` serves them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator
from pydantic_core import InitErrorDetails

from ridgeline_core import errors
from ridgeline_core.validation import JsonInt, invalid_request

from ..request.answer import Answer
from ..request.options import MaxTokens, Temperature, TopP
from . import openai_api
from .bodies import RidgelineOptions, _Body, parse_body

__all__ = [
    "IGNORED_FIELDS",
    "ResponsesBody",
    "ResponsesCall",
    "parse_responses",
    "response_object",
]

# fields of the API accepted and ignored: they tune a hosted service, not one answer
IGNORED_FIELDS = (
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "service_tier",
    "store",
    "truncation",
    "parallel_tool_calls",
    "max_tool_calls",
    "reasoning",
    "stream_options",
    "context_management",
    "access_programs",
    "image",
    "background_options",
)


class TextPart(BaseModel):
    """A text content part: ``input_text`` (user, system) or ``output_text`` (an earlier
    answer passed back; what it carries besides its text is ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: Literal["input_text", "output_text"]
    text: str


class InputMessage(_Body):
    """One turn of ``input`` (an output message passed back keeps its id and status)."""

    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]
    type: Literal["message"] = "message"
    id: str | None = None
    status: str | None = None
    phase: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list):
            raise ValueError("content must be a string or a list of text parts")
        for part in value:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind not in ("input_text", "output_text"):
                raise errors.UnsupportedError(
                    f"a {kind!r} content part: the local models read text only"
                )
            if not isinstance(part.get("text"), str):
                raise ValueError(f"an {kind} part needs its text, a string")
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _HostedFields(_Body):
    """Fields of the API that tune a hosted service, not one answer: accepted, ignored
    (:data:`IGNORED_FIELDS`)."""

    user: Any = None
    safety_identifier: Any = None
    prompt_cache_key: Any = None
    prompt_cache_retention: Any = None
    prompt_cache_options: Any = None
    service_tier: Any = None
    store: Any = None
    truncation: Any = None
    parallel_tool_calls: Any = None
    max_tool_calls: Any = None
    reasoning: Any = None
    stream_options: Any = None
    context_management: Any = None
    access_programs: Any = None
    image: Any = None
    background_options: Any = None


class _RefusedFields(_HostedFields):
    """Fields of the API refused when set: they would change the answer's meaning."""

    tools: list[Any] | None = None
    tool_choice: Any = None
    text: Any = None
    include: list[str] | None = None
    top_logprobs: JsonInt | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    prompt: Any = None
    background: Annotated[bool, Strict()] | None = None
    moderation: Any = None

    def refuse_unsupported(self) -> None:
        """UnsupportedError for what would change the answer's meaning unannounced."""
        if self.moderation:
            raise errors.UnsupportedError("moderation is not supported: nothing is screened")
        stateless = ("previous_response_id", "conversation", "prompt", "background")
        for key in stateless:
            if getattr(self, key):
                raise errors.UnsupportedError(
                    f"{key} is not supported: the daemon stores no responses or prompts; "
                    "send the whole conversation as input"
                )
        if self.tools:
            raise errors.UnsupportedError("tools are not supported by the local models")
        if self.tool_choice not in (None, "none", "auto"):
            raise errors.UnsupportedError("tool_choice needs tools, which are not supported")
        text_format = self.text.get("format") if isinstance(self.text, Mapping) else None
        if text_format not in (None, {"type": "text"}):
            raise errors.UnsupportedError("text.format other than text is not supported")
        if self.top_logprobs or "message.output_text.logprobs" in (self.include or ()):
            raise errors.UnsupportedError("log probabilities are not supported")


class ResponsesBody(_RefusedFields):
    """``POST /v1/responses``."""

    input: str | list[InputMessage] = Field(default=None, validate_default=True)
    model: str = ""
    instructions: str | None = None
    max_output_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    stream: Annotated[bool, Strict()] | None = None
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    ridgeline: RidgelineOptions | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _conversation(cls, value: Any) -> Any:
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise ValueError("input must be a string or a non-empty list of messages")
        return [_input_item(index, item) for index, item in enumerate(value)]

    def messages(self) -> list[dict[str, str]]:
        """The conversation as chat messages, ``instructions`` first."""
        turns = [{"role": "system", "content": self.instructions}] if self.instructions else []
        if isinstance(self.input, str):
            return [*turns, {"role": "user", "content": self.input}]
        for message in self.input:
            role = "system" if message.role == "developer" else message.role
            turns.append({"role": role, "content": message.text()})
        return turns


def _input_item(index: int, item: Any) -> Any:
    """``input[index]`` as a message; errors name it so (pydantic would name the union)."""
    if isinstance(item, InputMessage):
        return item
    if not isinstance(item, Mapping):
        raise ValueError(f"input[{index}] must be a message object")
    kind = item.get("type")
    if kind not in (None, "message"):
        raise errors.UnsupportedError(
            f"input[{index}] is a {kind!r} item; only messages are supported"
        )
    try:
        return InputMessage.model_validate(item)
    except ValidationError as exc:
        located = [
            cast("InitErrorDetails", {**error, "loc": ("input", index, *error["loc"])})
            for error in exc.errors()
        ]
        raise invalid_request(ValidationError.from_exception_data("input", located)) from None


@dataclass
class ResponsesCall:
    """One Responses request: the chat call it became, and what the answer echoes."""

    chat: openai_api.Call
    body: ResponsesBody
    message_id: str

    @property
    def stream(self) -> bool:
        return self.chat.stream


def parse_responses(
    raw: Any, headers: Mapping[str, str], models: Mapping[str, str]
) -> ResponsesCall:
    """A ``/v1/responses`` body to the chat call it asks for (``models``: name to role)."""
    body: ResponsesBody = parse_body(ResponsesBody, raw)
    body.refuse_unsupported()
    chat: dict[str, Any] = {
        "model": body.model,
        "messages": body.messages(),
        "max_tokens": body.max_output_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "stream": bool(body.stream),
    }
    if body.ridgeline is not None:
        chat["ridgeline"] = body.ridgeline.model_dump(exclude_none=True)
    call = openai_api.parse_chat(chat, headers, models)
    call.id = f"resp_{uuid.uuid4().hex}"
    return ResponsesCall(call, body, f"msg_{uuid.uuid4().hex}")


# -- the response object -----------------------------------------------------------------


def status_of(answer: Answer) -> str:
    """``incomplete`` when the answer was cut at its token limit, else ``completed``."""
    return "incomplete" if answer.finish_reason == "length" else "completed"


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def output_message(call: ResponsesCall, status: str, text: str | None) -> dict[str, Any]:
    """The answer's message item (``text`` None: opened, no content yet)."""
    return {
        "type": "message",
        "id": call.message_id,
        "status": status,
        "role": "assistant",
        "content": [] if text is None else [output_text(text)],
    }


def usage(answer: Answer) -> dict[str, Any]:
    counts = openai_api.usage(answer)
    return {
        "input_tokens": counts["prompt_tokens"],
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": counts["total_tokens"],
    }


def response_object(
    call: ResponsesCall,
    model: str,
    *,
    answer: Answer | None = None,
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The response object: in progress (no ``answer``), failed (``error``: the OpenAI
    error body's ``error``) or finished."""
    body = call.body
    status = "failed" if error else status_of(answer) if answer else "in_progress"
    data: dict[str, Any] = {
        "id": call.chat.id,
        "object": "response",
        "created_at": call.chat.created,
        "status": status,
        "error": None if error is None else {"code": error["code"], "message": error["message"]},
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "model": model if answer is None else answer.model,
        "output": [] if answer is None else [output_message(call, status, answer.text)],
        "parallel_tool_calls": False,
        "previous_response_id": None,
        "store": False,
        "temperature": body.temperature,
        "text": {"format": {"type": "text"}},
        "tool_choice": "none",
        "tools": [],
        "top_p": body.top_p,
        "truncation": "disabled",
        "usage": None if answer is None else usage(answer),
    }
    if answer is not None:
        data["ridgeline"] = openai_api.extension(answer)
    return data
