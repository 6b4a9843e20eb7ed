"""From a prompt and its options to a running :class:`~.pipeline.Pipeline`: the steps the
agent's ``ask``, ``stream`` and the daemon share (check, prepare, run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken
from ridgeline_core.progress import NULL_PROGRESS, Progress

from .context import PreparedRequest, prepare_request
from .conversation import Prompt
from .options import AskOptions, RequestOptions
from .pipeline import Pipeline

if TYPE_CHECKING:
    from ..parts import EdgeParts
    from ..settings import EdgeSettings

__all__ = ["RequestRunner"]


class RequestRunner:
    """Runs requests through ``parts`` under ``settings``."""

    settings: EdgeSettings
    parts: EdgeParts

    def pipeline(
        self,
        prompt: Prompt,
        options: RequestOptions,
        *,
        live: bool = False,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Pipeline:
        """The request, checked (InvalidRequestError, UnknownModelError now, before any
        work) and ready to run. ``live``: the consumer handles ``Reset`` events, so broker
        text may stream as it comes."""
        return self.run(self.prepare(prompt, options), live=live, cancel=cancel, progress=progress)

    def run(
        self,
        request: PreparedRequest,
        *,
        live: bool = False,
        cancel: CancelToken | None = None,
        progress: Progress = NULL_PROGRESS,
    ) -> Pipeline:
        """The pipeline of a prepared request; its clock (and τ) start now."""
        return Pipeline(self.parts, request, live=live, cancel=cancel, progress=progress)

    def prepare(self, prompt: Prompt, options: RequestOptions) -> PreparedRequest:
        """What ``ask`` checks before any work: the conversation, the model name."""
        return prepare_request(self.settings, self.parts.catalog, prompt, options)

    def check(self, prompt: Prompt, **options: Unpack[AskOptions]) -> None:
        """Raise what ``ask`` would raise for a malformed request, without doing any
        work (a daemon answers 400 before it admits the request)."""
        self.prepare(prompt, RequestOptions.parse(options))
