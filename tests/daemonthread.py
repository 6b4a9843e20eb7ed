"""A real :class:`~edge_agent.daemon.server.Daemon` in this process, on a thread of its own.

The same HTTP and gRPC listeners, middleware, dispatcher and pipeline as ``edge-agent
serve``, over the scripted model of :mod:`fastlane` (no model, no subprocess), on
127.0.0.1 with ports the system picks: real clients (sockets, urllib, the openai client,
grpc) call it, and a test reads its metrics and log in-process. No signal handlers (they
belong to the main thread); :meth:`stop` shuts it down as SIGTERM would.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Coroutine
from typing import Any

from edge_agent import EdgeSettings
from edge_agent.daemon.server import Daemon


class ThreadDaemon:
    def __init__(self, settings: EdgeSettings) -> None:
        self.lines: list[str] = []
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.daemon: Daemon = self.call(self._start(settings))
        self.url = self.daemon.http_url or ""
        self.grpc = self.daemon.grpc_target or ""
        self.host_port = self.url.removeprefix("http://")
        self.port = int(self.host_port.rsplit(":", 1)[1])

    async def _start(self, settings: EdgeSettings) -> Daemon:
        daemon = Daemon(settings, out=self.lines.append)
        await daemon.start(signals=False)
        return daemon

    def call(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float = 30.0) -> Any:
        """Run ``coroutine`` on the daemon's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def running(self) -> int:
        return int(self.daemon.admission.running)

    def metric(self, name: str, **labels: str) -> float:
        value = self.daemon.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else float(value)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request with urllib; the status and the body (parsed JSON if it is)."""
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        request = urllib.request.Request(self.url + path, data=data, headers=sent, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text.decode(errors="replace")

    def stop(self) -> None:
        try:
            self.call(self.daemon.shutdown(), timeout_s=60.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
