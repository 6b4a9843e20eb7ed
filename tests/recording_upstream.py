"""An OpenAI-compatible upstream that records every request body it receives and streams
a fixed answer: behind a real broker process, it shows exactly what reached the cloud
model (the privacy tests and benchmarks/knowledge.py read it)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

ANSWER = "The answer from the cloud model."


class RecordingUpstream:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.base_url = ""
        self._lock = threading.Lock()

    def take(self) -> list[dict[str, Any]]:
        """The bodies received since the last call."""
        with self._lock:
            bodies, self.bodies = self.bodies, []
        return bodies

    def texts(self) -> list[str]:
        """Every message content of the bodies received since the last take()."""
        return [m["content"] for body in self.take() for m in body.get("messages", [])]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.bodies.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in ANSWER.split(" "):
            chunk = {"choices": [{"index": 0, "delta": {"content": word + " "}}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await response.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        return response


@contextmanager
def recording_upstream() -> Iterator[RecordingUpstream]:
    upstream = RecordingUpstream()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner: web.AppRunner | None = None

    async def start() -> None:
        nonlocal runner
        app = web.Application()
        app.router.add_post("/v1/chat/completions", upstream._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        upstream.base_url = f"http://127.0.0.1:{port}/v1"
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    ready.wait(30)
    try:
        yield upstream
    finally:
        if runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def broker_config(base_url: str) -> str:
    """A broker that serves no local model, only this upstream (no per-device limits)."""
    return f"""
[models]
serve = []
default = "upstream"
[limits]
requests_per_minute = 0
tokens_per_minute = 0

[[openai]]
name = "upstream"
base_url = "{base_url}"
model = "recorder"
api_key = "none"
timeout_s = 30
"""
