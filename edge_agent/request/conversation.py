"""A prompt as the conversation the model answers, and the question it ends with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ridgeline_core.errors import EmptyPromptError, InvalidRequestError
from ridgeline_core.runtime import ChatMessage

__all__ = ["ROLES", "Prompt", "chat_messages", "conversation"]

Prompt = str | Sequence[ChatMessage] | Sequence[Mapping[str, str]]


def chat_messages(prompt: str, system_prompt: str | None) -> list[ChatMessage]:
    """The conversation a prompt becomes; without a system prompt the model's manifest
    supplies its own (the runtime adds it)."""
    messages = [ChatMessage("user", prompt)]
    if system_prompt:
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages


ROLES = ("system", "user", "assistant")


def conversation(prompt: Prompt, system_prompt: str | None) -> tuple[list[ChatMessage], str]:
    """The messages to answer and the question they end with.

    ``prompt`` is one user message, or a whole chat (``ChatMessage`` objects or
    ``{"role", "content"}`` mappings) ending with the user's turn, or with an assistant
    turn that the answer continues (its text is the start of the answer, which the
    answer does not repeat). A chat that brings its
    own system message keeps it; otherwise ``system_prompt`` (or the manifest's) is added.
    The question, the last user message, is what confidence features and pre-route read.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyPromptError("prompt is empty")
        return chat_messages(prompt, system_prompt), prompt
    messages: list[ChatMessage] = []
    for index, item in enumerate(prompt):
        role: Any
        content: Any
        if isinstance(item, ChatMessage):
            role, content = item.role, item.content
        elif isinstance(item, Mapping):
            role, content = item.get("role"), item.get("content")
        else:
            raise InvalidRequestError(f"message {index} is not a chat message")
        if role not in ROLES:
            raise InvalidRequestError(
                f"message {index} has role {role!r}; roles are {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise InvalidRequestError(f"message {index} has no text content")
        messages.append(ChatMessage(role, content))
    if not messages:
        raise EmptyPromptError("the conversation has no messages")
    users = [m.content for m in messages if m.role == "user"]
    if messages[-1].role not in ("user", "assistant") or not users:
        raise InvalidRequestError(
            "the last message must be the user's, or an assistant turn to continue after one"
        )
    question = users[-1]
    if not question.strip():
        raise EmptyPromptError("the last user message is empty")
    if system_prompt and not any(m.role == "system" for m in messages):
        messages.insert(0, ChatMessage("system", system_prompt))
    return messages, question
