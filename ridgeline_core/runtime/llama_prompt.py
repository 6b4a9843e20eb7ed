"""The chat prompt of a llama.cpp model: its template (the manifest's, or the GGUF's),
the manifest's system prompt, and the prompt's tokens, where only the template's own text
may become control tokens."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequestError, TemplateError
from ..store.manifest import ModelManifest
from .llama_vocab import LlamaVocab
from .template import ChatTemplate
from .types import ChatMessage

__all__ = ["ChatPrompt", "continued"]


class ChatPrompt:
    """A model's chat prompt: template, system prompt, guarded tokens."""

    def __init__(self, manifest: ModelManifest, llm: Any, vocab: LlamaVocab) -> None:
        self.manifest, self._llm, self._vocab = manifest, llm, vocab
        self._source = manifest.chat_template or llm.metadata.get("tokenizer.chat_template")
        self._template: ChatTemplate | None = None

    def template(self) -> ChatTemplate:
        if self._template is None:
            if not self._source:
                raise TemplateError(
                    f"{self.manifest.name} has no chat template; set chat_template in its manifest"
                )
            self._template = ChatTemplate(
                self._source, bos_token=self._vocab.bos_text, eos_token=self._vocab.eos_text
            )
        return self._template

    def with_system(self, messages: Sequence[ChatMessage]) -> Sequence[ChatMessage]:
        if self.manifest.system_prompt and not any(m.role == "system" for m in messages):
            return [ChatMessage("system", self.manifest.system_prompt), *messages]
        return messages

    def render(self, messages: Sequence[ChatMessage]) -> str:
        head, prefix = continued(messages)
        return self.template().render(self.with_system(head)) + prefix

    def tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Tokens of the templated conversation (see :meth:`_tokens`); a conversation that
        ends with an assistant turn continues it (:func:`continued`): that text follows
        the assistant's header as plain text, without an end of turn."""
        head, prefix = continued(messages)
        tokens = self._tokens(head)
        if prefix:
            tokens += self._llm.tokenize(prefix.encode("utf-8"), add_bos=False, special=False)
        return tokens

    def _tokens(self, messages: Sequence[ChatMessage]) -> list[int]:
        """Tokens of the templated conversation, where only the template's own text may
        become control tokens: a message that contains "<|im_end|>" is those characters,
        not the end of its turn, so no one can forge a turn or a system message.

        Messages without such text (nearly all) tokenize exactly as the rendered prompt
        always did. Otherwise the template is rendered with a placeholder per message,
        and the text between placeholders is tokenized with control tokens parsed, each
        message without.
        """
        messages = self.with_system(messages)
        marks = [f"\ue000{index}\ue001" for index in range(len(messages))]
        text = self.template().render(
            [ChatMessage(m.role, mark) for m, mark in zip(messages, marks, strict=True)]
        )
        if not any(self._vocab.has_control_text(m.content) for m in messages):
            tokens = self._as_rendered(messages, text)
            if tokens is not None:
                return tokens
        return _piecewise(self._llm, self._vocab, self.manifest.name, messages, marks, text)

    def _as_rendered(self, messages: Sequence[ChatMessage], marked: str) -> list[int] | None:
        vocab = self._vocab
        prompt = self.template().render(messages)
        add_special = not (vocab.bos_text and prompt.startswith(vocab.bos_text))
        tokens = vocab.tokenize(prompt, add_special=add_special)
        # messages that only form a control token together (a template that joins them
        # with nothing between) show up as more control tokens than the template writes
        expected = vocab.control_count(vocab.tokenize(marked, add_special=add_special))
        return tokens if vocab.control_count(tokens) == expected else None


def continued(messages: Sequence[ChatMessage]) -> tuple[Sequence[ChatMessage], str]:
    """A conversation that ends with an assistant turn asks for that turn to be continued
    (as OpenAI-compatible servers do): the messages before it, rendered as usual up to the
    assistant's header, and its text, which the answer goes on from."""
    if len(messages) > 1 and messages[-1].role == "assistant":
        return messages[:-1], messages[-1].content
    return messages, ""


def _piecewise(
    llm: Any,
    vocab: LlamaVocab,
    name: str,
    messages: Sequence[ChatMessage],
    marks: list[str],
    text: str,
) -> list[int]:
    """The template's text between the placeholders tokenized with control tokens, each
    message's text without."""
    pieces: list[tuple[str, bool]] = []  # (text, parse control tokens)
    rest = text
    for message, mark in zip(messages, marks, strict=True):
        before, found, rest = rest.partition(mark)
        if not found or mark in rest:
            raise InvalidRequestError(
                f"a message contains text of a control token of {name} "
                "and its chat template transforms messages, so it cannot be kept as "
                "plain text; remove the control token"
            )
        pieces += [(before, True), (message.content, False)]
    pieces.append((rest, True))
    add_bos = not (vocab.bos_text and text.startswith(vocab.bos_text))
    split: list[int] = []
    for index, (piece, special) in enumerate(pieces):
        if piece or (index == 0 and add_bos):
            split += llm.tokenize(
                piece.encode("utf-8"), add_bos=add_bos and index == 0, special=special
            )
    return split
