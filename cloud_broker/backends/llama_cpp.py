"""Models from the store, run with llama.cpp inside the broker process.

Each slot is its own loaded model with its own context (the weights are
memory-mapped, so slots share them in the page cache) and its own worker
thread: a generation runs from start to end on one thread, off the event loop.
Tokens reach the loop one by one; when the client goes away the worker sees
the cancel flag before its next token and closes the generation.

The worker threads, each bound to its copy, are in :mod:`.llama_threads`; the way
the text takes from a worker to the loop in :mod:`.llama_handoff`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import AsyncGenerator, Callable, Sequence
from concurrent.futures import Future

from ridgeline_core.runtime import ChatMessage, FinishReason, LoadOptions, Runtime, load_runtime
from ridgeline_core.runtime.llama_cpp import default_threads
from ridgeline_core.store import ModelManifest, ModelStore

from ..admission import Admission
from ..settings import LlamaCppSettings
from . import AnswerSignals, BackendRequest, Outcome, Probe
from .llama_handoff import Handoff
from .llama_threads import BoundThreads

__all__ = ["LlamaCppBackend"]


class LlamaCppBackend:
    kind = "llama.cpp"

    def __init__(
        self,
        manifest: ModelManifest,
        store: ModelStore,
        settings: LlamaCppSettings,
        *,
        log: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.name = manifest.name
        self.role: str = manifest.role
        self.manifest = manifest
        self.context_length = min(manifest.context_length or settings.n_ctx, settings.n_ctx)
        self.admission = Admission(manifest.name, settings.slots, settings.queue)
        self._slots = _Slots(manifest, store, settings, log)

    async def start(self) -> None:
        await asyncio.to_thread(self._slots.load)

    @property
    def running(self) -> int:
        """Generations running on a worker thread right now (stopping ones included)."""
        return self._slots.busy.count

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | Outcome, None]:
        loop = asyncio.get_running_loop()
        pieces = Handoff(loop)
        cancel = threading.Event()
        job = self._slots.submit(request, pieces, cancel)
        work = asyncio.wrap_future(job, loop=loop)
        try:
            while (text := await pieces.delta()) is not None:
                yield text
            yield await work
        finally:
            cancel.set()
            work.add_done_callback(_retrieve)  # a failure nobody awaited is not news
            if not job.cancel():  # True only if it had not started: then it never runs
                # Started: it stops before its next token, but a prompt being processed
                # finishes first. Its slot stays taken until then, so the model never
                # runs more than `slots` generations, abandoned ones included.
                with contextlib.suppress(BaseException):
                    await asyncio.shield(work)
            self._slots.forget(cancel)

    async def next_token_probs(
        self, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> Probe:
        """One forward pass on a slot's thread (never beside a generation on that copy)."""
        return await asyncio.wrap_future(self._slots.probe(messages, tuple(candidates)))

    async def close(self) -> None:
        await self._slots.close()


class _Slots:
    """The model's slots: one loaded copy each, bound to one worker thread for life."""

    def __init__(
        self,
        manifest: ModelManifest,
        store: ModelStore,
        settings: LlamaCppSettings,
        log: Callable[[str], None],
    ) -> None:
        self.manifest, self._store, self._settings, self._log = manifest, store, settings, log
        self._runtimes: list[Runtime] = []
        self._threads: BoundThreads | None = None
        self._cancels: set[threading.Event] = set()
        self.busy = _Busy()  # generations running on a worker thread now

    def load(self) -> None:
        slots, options = self._settings.slots, _load_options(self._settings)
        self._runtimes = _load_copies(self.manifest, self._store, options, slots)
        threads = options.n_threads
        self._log(
            f"loaded {self.manifest.name} (llama.cpp, {slots} slot(s) x {threads} thread(s), "
            f"n_ctx {self._settings.n_ctx}) in {self._runtimes[0].load_seconds:.1f} s"
        )
        self._threads = BoundThreads(self.manifest.name, self._runtimes)

    def submit(
        self, request: BackendRequest, pieces: Handoff, cancel: threading.Event
    ) -> Future[Outcome]:
        if self._threads is None:
            raise RuntimeError(f"backend {self.manifest.name} is not started")
        self._cancels.add(cancel)
        return self._threads.submit(lambda runtime: self._drive(runtime, request, pieces, cancel))

    def probe(
        self, messages: tuple[ChatMessage, ...], candidates: tuple[str, ...]
    ) -> Future[Probe]:
        if self._threads is None:
            raise RuntimeError(f"backend {self.manifest.name} is not started")

        def job(runtime: Runtime) -> Probe:
            with self.busy:
                probs = runtime.next_token_probs(messages, candidates)
                prompt_tokens = runtime.count_tokens(runtime.render(messages))
            return Probe(tuple(probs), prompt_tokens)

        return self._threads.submit(job)

    def forget(self, cancel: threading.Event) -> None:
        self._cancels.discard(cancel)

    def _drive(
        self, runtime: Runtime, request: BackendRequest, pieces: Handoff, cancel: threading.Event
    ) -> Outcome:
        try:
            with self.busy:
                if cancel.is_set():  # the client left while this waited for its thread
                    return Outcome(FinishReason.CANCELLED, 0, 0)
                return _generate(runtime, request, pieces.emit, cancel)
        finally:
            pieces.end()

    async def close(self) -> None:
        for cancel in list(self._cancels):
            cancel.set()
        if self._threads is not None:
            await self._threads.close()
        for runtime in self._runtimes:
            runtime.close()
        self._runtimes.clear()


class _Busy:
    """A thread-safe count of the blocks running now (``with busy:``)."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.count += 1

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self.count -= 1


def _retrieve(future: asyncio.Future[Outcome]) -> None:
    if not future.cancelled():
        future.exception()


def _load_options(settings: LlamaCppSettings) -> LoadOptions:
    """Each slot's load options: the cores shared among the slots unless set."""
    threads = settings.threads or max(1, default_threads() // settings.slots)
    return LoadOptions(
        n_ctx=settings.n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        n_batch=settings.n_batch,
        n_gpu_layers=settings.n_gpu_layers,
    )


def _load_copies(
    manifest: ModelManifest, store: ModelStore, options: LoadOptions, slots: int
) -> list[Runtime]:
    """One loaded copy per slot, from the verified file."""
    path = store.open_verified(manifest)
    copies: list[Runtime] = []
    try:
        for _ in range(slots):
            copies.append(load_runtime(manifest, path, options))
    except BaseException:
        for copy in copies:  # a later copy failed: free the earlier ones
            copy.close()
        raise
    return copies


def _generate(
    runtime: Runtime,
    request: BackendRequest,
    emit: Callable[[str], None],
    cancel: threading.Event,
) -> Outcome:
    """Run one generation on this thread's copy, handing each piece of text to ``emit``;
    stops before the next token once ``cancel`` is set."""
    logprobs: list[float] = []
    with runtime.generate(request.messages, request.params) as generation:
        for token in generation:
            if cancel.is_set():
                break
            if token.signals is not None:
                logprobs.append(math.log(max(token.signals.prob, 1e-12)))
            if token.text:
                emit(token.text)
    stats = generation.stats
    assert stats.finish_reason is not None
    signals = None
    if logprobs:
        signals = AnswerSignals(sum(logprobs) / len(logprobs), min(logprobs), len(logprobs))
    return Outcome(stats.finish_reason, stats.prompt_tokens, stats.completion_tokens, signals)
