"""Everything one request can set, as one frozen, validated type.

Each entry point parses its own form once into :class:`RequestOptions`: the SDK's keyword
arguments (:class:`AskOptions` types them for editors), the CLI's flags, the HTTP API's
body and ``X-Ridgeline-*`` headers, the gRPC edge service's ``AskRequest``. From there on
the request path reads typed, checked fields. What needs the agent to check (is the model
known, does the prompt fit) is checked by the agent.

Unset options (None) take the settings' values. A new option is added here, once: its
bounds and its message come with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from ridgeline_core.errors import InvalidRequestError
from ridgeline_core.runtime import MAX_STOP_CHARS, MAX_STOPS, SamplingParams
from ridgeline_core.validation import JsonInt, JsonNumber, invalid_request

__all__ = [
    "MAX_DEADLINE_S",
    "MAX_STOPS",
    "AskOptions",
    "MaxTokens",
    "Mode",
    "RequestOptions",
    "Temperature",
    "TopP",
]

Mode = Literal["auto", "local", "cloud"]
MAX_COLLECTIONS = 16
MAX_DEADLINE_S = 3600.0  # a broker call that may take longer than an hour is a mistake
# the sampling bounds, shared with request bodies that name these options differently
MaxTokens = Annotated[JsonInt, Field(ge=1, le=32768)]
Temperature = Annotated[JsonNumber, Field(ge=0.0, le=2.0)]
TopP = Annotated[JsonNumber, Field(gt=0.0, le=1.0)]


class RequestOptions(BaseModel):
    """Per-request options; None means "the settings decide"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, description="local model (default: models.default)")
    max_tokens: MaxTokens | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    seed: Annotated[JsonInt, Field(ge=0, le=2**32 - 1)] | None = None
    stop: tuple[str, ...] | None = Field(
        default=None, description="added to the model's and the settings' stop sequences"
    )
    mode: Mode | None = Field(default=None, description="auto, local (never escalate), cloud")
    threshold: Annotated[JsonNumber, Field(ge=0.0, le=1.0)] | None = Field(
        default=None, description="a fixed τ instead of the policy's"
    )
    deadline_s: Annotated[JsonNumber, Field(gt=0.0, le=MAX_DEADLINE_S)] | None = Field(
        default=None, description="longest wait for the broker (escalation.deadline_s)"
    )
    private: Annotated[bool, Strict()] = Field(
        default=False, description="never cache or remember this prompt"
    )
    strategy: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="a strategy configured on the broker (broker.strategy)"
    )
    max_cost: Annotated[JsonNumber, Field(ge=0.0)] | None = Field(
        default=None, description="most the escalation may cost (broker.max_cost)"
    )
    knowledge: tuple[str, ...] | None = Field(
        default=None,
        description="knowledge collections to answer from ('auto': the best of all of them)",
    )

    @field_validator("knowledge", mode="before")
    @classmethod
    def _collections(cls, value: Any) -> Any:
        return _collection_names(value)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        return _stop_sequences(value)

    @classmethod
    def parse(cls, data: RequestOptions | Mapping[str, Any] | None = None) -> RequestOptions:
        """Options from a mapping (keyword arguments, a JSON object); InvalidRequestError
        names the first field at fault."""
        if isinstance(data, RequestOptions):
            return data
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise invalid_request(exc) from None

    def merged(self, **changes: Any) -> RequestOptions:
        """These options with ``changes`` (validated like the rest)."""
        return RequestOptions.parse({**self.model_dump(exclude_defaults=True), **changes})

    def sampling(self, base: SamplingParams) -> SamplingParams:
        """``base`` (the settings' sampling) with this request's overrides."""
        changes: dict[str, Any] = {
            key: getattr(self, key)
            for key in ("max_tokens", "temperature", "top_p", "seed")
            if getattr(self, key) is not None
        }
        if self.stop is not None:
            changes["stop"] = (*base.stop, *self.stop)
        return dataclasses.replace(base, **changes) if changes else base


def _stop_sequences(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(isinstance(x, str) and x for x in value):
        raise ValueError("stop must be a list of non-empty strings")
    if len(value) > MAX_STOPS:
        raise ValueError(f"stop has {len(value)} sequences; at most {MAX_STOPS}")
    if longest := max((len(x) for x in value if len(x) > MAX_STOP_CHARS), default=0):
        raise ValueError(
            f"stop sequences must be 1-{MAX_STOP_CHARS} characters (one has {longest})"
        )
    return tuple(value)


def _collection_names(value: Any) -> tuple[str, ...] | None:
    from ..knowledge.library import AUTO, check_collection_name

    if value is None:
        return None
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not 1 <= len(names) <= MAX_COLLECTIONS:
        raise ValueError(f"knowledge must name 1-{MAX_COLLECTIONS} collections, or 'auto'")
    for name in names:
        if name != AUTO:
            try:
                check_collection_name(name)
            except InvalidRequestError as exc:
                raise ValueError(str(exc)) from None
    return tuple(names)


class AskOptions(TypedDict, total=False):
    """The keyword arguments of ``ask``/``stream``: :class:`RequestOptions`' fields, typed
    for editors and type checkers (a test keeps the two in step)."""

    model: str | None
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: Sequence[str] | None
    mode: Mode | None
    threshold: float | None
    deadline_s: float | None
    private: bool
    strategy: str | None
    max_cost: float | None
    knowledge: Sequence[str] | str | None
