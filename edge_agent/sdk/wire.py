"""The edge service's protobuf (``ridgeline.v1.Edge``) to and from domain types, both ways.

``EdgeClient`` and the daemon's gRPC service both convert here, so a field added to
``edge.proto`` is mapped once. Domain code never sees these messages.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ridgeline.v1 import broker_pb2, edge_pb2
from ridgeline_core import errors
from ridgeline_core.client import ROLE_CODES

from ..decision import Path
from ..request.answer import Answer
from ..request.conversation import Prompt, conversation
from ..request.events import Decided, Done, Event, Reset, TextChunk
from ..request.options import RequestOptions
from .api import ModelInfo

__all__ = [
    "ask_request",
    "event_from_pb",
    "event_to_pb",
    "messages_from_pb",
    "models_from_pb",
    "models_to_pb",
    "options_from_pb",
]

_ROLES = {code: name for name, code in ROLE_CODES.items()}
_OPTIONAL = ("max_tokens", "temperature", "top_p", "seed", "threshold", "deadline_s", "max_cost")


def ask_request(prompt: Prompt, options: RequestOptions) -> edge_pb2.AskRequest:
    """The request a client sends: the conversation (the daemon adds its system prompt)
    and the options; ``live``: the client handles Reset."""
    messages, _ = conversation(prompt, None)
    request = edge_pb2.AskRequest(
        messages=[
            broker_pb2.ChatMessage(role=ROLE_CODES[m.role], content=m.content) for m in messages
        ],
        model=options.model or "",
        mode=options.mode or "",
        stop=list(options.stop or ()),
        live=True,
        private=options.private,
        knowledge=list(options.knowledge or ()),
        strategy=options.strategy or "",
    )
    for key in _OPTIONAL:
        value = getattr(options, key)
        if value is not None:
            setattr(request, key, value)
    return request


def options_from_pb(request: edge_pb2.AskRequest) -> RequestOptions:
    """The request's options, parsed and checked like every entry point's."""
    return RequestOptions.parse(
        {
            "model": request.model or None,
            "stop": list(request.stop) or None,
            "mode": request.mode or None,
            "private": request.private,
            "knowledge": list(request.knowledge) or None,
            "strategy": request.strategy or None,
            **{key: getattr(request, key) for key in _OPTIONAL if request.HasField(key)},
        }
    )


def messages_from_pb(request: edge_pb2.AskRequest) -> list[dict[str, str]]:
    messages = []
    for index, m in enumerate(request.messages):
        role = _ROLES.get(m.role)
        if role is None:
            raise errors.InvalidRequestError(f"messages[{index}] has no role")
        messages.append({"role": role, "content": m.content})
    return messages


def event_to_pb(event: Event) -> edge_pb2.AskEvent:
    if isinstance(event, TextChunk):
        return edge_pb2.AskEvent(delta=broker_pb2.TextDelta(text=event.text))
    if isinstance(event, Reset):
        return edge_pb2.AskEvent(reset=edge_pb2.AskReset(reason=event.reason))
    if isinstance(event, Decided):
        return edge_pb2.AskEvent(decided=edge_pb2.AskDecided(path=event.path, reason=event.reason))
    answer = json.dumps(event.answer.to_dict())
    return edge_pb2.AskEvent(answer=edge_pb2.AskAnswer(answer_json=answer))


def event_from_pb(event: edge_pb2.AskEvent) -> Event | None:
    """The domain event (None for an event this client does not know: a newer daemon)."""
    kind = event.WhichOneof("event")
    if kind == "delta":
        return TextChunk(event.delta.text)
    if kind == "reset":
        return Reset(event.reset.reason)
    if kind == "decided":
        path: Path = event.decided.path  # type: ignore[assignment]  # the daemon's own paths
        return Decided(path, event.decided.reason)
    if kind == "answer":
        return Done(Answer.from_dict(json.loads(event.answer.answer_json)))
    return None


def models_to_pb(models: Sequence[ModelInfo]) -> edge_pb2.ListLocalModelsResponse:
    return edge_pb2.ListLocalModelsResponse(
        models=[
            edge_pb2.LocalModel(
                name=m.name,
                runtime=m.runtime,
                role=m.role,
                context_length=m.context_length or 0,
                pulled=m.pulled,
                loaded=m.loaded,
                default=m.default,
            )
            for m in models
        ]
    )


def models_from_pb(response: edge_pb2.ListLocalModelsResponse) -> list[ModelInfo]:
    return [
        ModelInfo(
            name=m.name,
            runtime=m.runtime,
            role=m.role,
            context_length=m.context_length or None,
            pulled=m.pulled,
            loaded=m.loaded,
            default=m.default,
        )
        for m in response.models
    ]
