"""The edge agent in-process: answer on this device when confident, escalate otherwise.

:class:`EdgeAgent` is a facade over its :class:`~edge_agent.parts.EdgeParts` (wired from
settings by :meth:`EdgeAgent.from_settings`, or given). Each request is parsed once into
:class:`~edge_agent.request.options.RequestOptions`, prepared (conversation, model,
sampling) and run through the :class:`~edge_agent.request.pipeline.Pipeline`, whose
events ``ask`` drains and ``stream`` forwards. Every answer carries a
:class:`~edge_agent.decision.Decision` saying which path ran and why.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken
from ridgeline_core.closing import Closing
from ridgeline_core.progress import NULL_PROGRESS, Progress

from .parts import EdgeParts
from .parts_view import PartsView
from .request.answer import Answer, AnswerTimings, SignalSummary
from .request.conversation import Prompt, chat_messages, conversation
from .request.events import Event, answer_of
from .request.local import LocalRun, run_local
from .request.options import AskOptions, RequestOptions
from .request.runner import RequestRunner
from .sdk.api import Answerer
from .settings import EdgeSettings

__all__ = [
    "Answer",
    "AnswerTimings",
    "EdgeAgent",
    "LocalRun",
    "SignalSummary",
    "chat_messages",
    "conversation",
    "run_local",
]


class EdgeAgent(PartsView, RequestRunner, Answerer, Closing):
    """Answers prompts on the device and escalates to the broker when that is worth it.

    Loads each model once, on first use; connects to the broker on the first escalation.
    ``close()`` (or ``with``) stops the telemetry sampler and the broker prober.
    """

    def __init__(
        self, settings: EdgeSettings, *, parts: EdgeParts | None = None, **wiring: Any
    ) -> None:
        """``parts``: the collaborators to use; without them they are wired from
        ``settings`` (see :meth:`EdgeParts.from_settings` for ``wiring``: ``sampler``,
        ``broker``, ``background``, ``parallel``, ``pool``, ``catalog``, ``store``)."""
        self.settings = settings
        self.parts = parts if parts is not None else EdgeParts.from_settings(settings, **wiring)

    @classmethod
    def from_settings(cls, settings: EdgeSettings, **wiring: Any) -> EdgeAgent:
        """An agent with the real parts for ``settings``."""
        return cls(settings, parts=EdgeParts.from_settings(settings, **wiring))

    @classmethod
    def from_config(cls, config_file: pathlib.Path | None = None, **wiring: Any) -> EdgeAgent:
        """An agent with the settings ``edge-agent`` would use: ``config_file`` (default
        ``$RIDGELINE_EDGE_CONFIG`` or the user's edge.toml), then ``RIDGELINE_EDGE_*``."""
        from .settings import load_edge_settings

        loaded = load_edge_settings(config_file=config_file, env=os.environ)
        return cls.from_settings(loaded.settings, **wiring)

    # -- answering -------------------------------------------------------------------

    def ask(
        self,
        prompt: Prompt,
        *,
        on_text: Callable[[str], None] | None = None,
        on_reset: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
        **options: Unpack[AskOptions],
    ) -> Answer:
        """Answer ``prompt`` (a question, or a chat ending with the user's turn; see
        :func:`~edge_agent.request.conversation.conversation`).

        ``options`` are :class:`RequestOptions`' fields: ``max_tokens``, ``temperature``,
        ``top_p``, ``seed`` and ``stop`` override ``generation`` settings; ``mode`` and
        ``threshold`` the policy; ``deadline_s`` bounds the broker call; ``private`` keeps
        the prompt out of the answer cache and the outcome memory. ``on_text`` receives the
        answer's text as it becomes final (broker text as it arrives when ``on_reset`` is
        given too; ``on_reset(reason)`` then says when it is abandoned because the broker
        failed mid-answer). Cancelling ``cancel`` stops the work at the next token or broker
        event with RequestCancelledError. :meth:`stream` gives the same as events."""
        parsed = RequestOptions.parse(options)
        live = on_reset is not None
        pipeline = self.pipeline(prompt, parsed, live=live, cancel=cancel, progress=progress)
        return answer_of(pipeline.events(), on_text, on_reset)

    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[Event]:
        return self.pipeline(prompt, options, live=True, cancel=cancel).events()

    def close(self) -> None:
        self.parts.close()
