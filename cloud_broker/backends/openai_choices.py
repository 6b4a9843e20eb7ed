"""How the openai backend limits an answer to choices, both ways: the request fields the
``choices`` setting asks for (a GBNF grammar, or a strict JSON schema with the choices as
an ``enum``), and the choice read back from a complete answer, checked."""

from __future__ import annotations

import json
from typing import Any

from ridgeline_core.errors import UnavailableError
from ridgeline_core.runtime.choices import choices_grammar

from ..settings import OpenAIBackendSettings

__all__ = ["ChoicesConstraint"]

_CHOICE_KEY = "choice"  # the one property of the JSON object a json_schema answer is
_CHOICE_SLACK_TOKENS = 48  # room for the JSON object around the value, and whitespace


class ChoicesConstraint:
    """The choices constraint of one upstream model, as its ``choices`` setting says."""

    def __init__(self, settings: OpenAIBackendSettings) -> None:
        self._settings = settings

    def fields(self, choices: tuple[str, ...]) -> dict[str, Any]:
        """The fields that limit the answer to ``choices``. max_tokens covers the longest
        choice however it is written (JSON escapes included), so none is cut short."""
        longest = max(len(json.dumps(choice)) for choice in choices)
        fields: dict[str, Any] = {"max_tokens": longest + _CHOICE_SLACK_TOKENS}
        if self._settings.choices == "grammar":
            fields["grammar"] = choices_grammar(choices)
        else:
            fields["response_format"] = _json_schema_format(choices)
        return fields

    def chosen(self, text: str, choices: tuple[str, ...]) -> str:
        """The choice a complete constrained answer names, or UnavailableError."""
        chosen: object = text
        if self._settings.choices == "json_schema":
            try:
                chosen = json.loads(text)[_CHOICE_KEY]
            except (ValueError, KeyError, TypeError):
                chosen = None
        if not isinstance(chosen, str) or chosen not in choices:
            where = f"model {self._settings.name!r}: {self._settings.base_url}"
            raise UnavailableError(
                f"{where} answered {text[:120]!r}, "
                f"which is not one of the {len(choices)} choices (does it support "
                f"choices = {self._settings.choices!r}?)"
            )
        return chosen


def _json_schema_format(choices: tuple[str, ...]) -> dict[str, Any]:
    """``response_format`` asking for ``{"choice": <one of the choices>}``, strictly."""
    schema = {
        "type": "object",
        "properties": {_CHOICE_KEY: {"type": "string", "enum": list(choices)}},
        "required": [_CHOICE_KEY],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "choice", "strict": True, "schema": schema},
    }
