"""Chat templates rendered in Jinja's immutable sandbox.

A GGUF file carries its own chat template, which is code from whoever made the
file. It is rendered in :class:`jinja2.sandbox.ImmutableSandboxedEnvironment`:
attribute access to internals (``__class__``, ``__globals__``...), calls to
unsafe callables and mutation of passed-in objects raise ``SecurityError``,
which we report as :class:`TemplateError`. Nothing from the template runs
outside the sandbox. ``*`` and ``**`` are capped and Jinja caps ``range``,
which stops the one-expression memory bombs; a template can still waste time
and memory with loops, so templates remain something to review, not run blind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TemplateError
from .types import ChatMessage

__all__ = ["ChatTemplate"]

MAX_REPEAT = 1_000_000  # longest string or list a template may build with * (characters/items)
MAX_EXPONENT = 64


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on ``*`` and ``**`` (``'x' * 10**10``)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                if (
                    isinstance(sequence, str | list | tuple)
                    and isinstance(count, int)
                    and len(sequence) * count > MAX_REPEAT
                ):
                    raise SecurityError("repetition would exceed the template size limit")
        return super().call_binop(context, operator, left, right)


class ChatTemplate:
    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        environment = _Sandbox(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols],
        )
        environment.filters["tojson"] = _tojson
        try:
            self._template = environment.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"chat template does not parse: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                add_generation_prompt=add_generation_prompt,
                raise_exception=_raise,
                strftime_now=lambda fmt: datetime.now().strftime(fmt),
            )
        except SecurityError as exc:
            raise TemplateError(
                f"chat template attempted an unsafe operation and was stopped: {exc}"
            ) from None
        except TemplateError:
            raise
        except Exception as exc:  # a template is foreign code: any failure is its failure
            raise TemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from None


def _raise(message: str) -> None:
    raise TemplateError(f"chat template refused the conversation: {message}")


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)
