"""A bare aiohttp server that does what the daemon's HTTP path must do around a request,
and nothing of Ridgeline: parse the JSON body, run ``work_ms`` of memory-heavy work on a
worker thread (a walk over 64 MiB, like a small model's weights streaming through the
caches), answer a canned body of the daemon's size.

``benchmarks/daemon.py`` starts it (``python benchmarks/http_floor.py PORT``) to measure
what HTTP plus a worker thread cost on this machine after such work: the floor under the
daemon's overhead. The time spent on the work comes back in a ``Server-Timing`` header.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import numpy as np
from aiohttp import web

WEIGHTS = np.ones(64 * 2**20 // 8)
BODY = json.dumps({"choices": [{"message": {"content": "x"}}], "ridgeline": "y" * 2500}).encode()


def work(ms: float) -> float:
    started = time.perf_counter()
    while (time.perf_counter() - started) * 1000 < ms:
        WEIGHTS.sum()
    return (time.perf_counter() - started) * 1000


async def chat(request: web.Request) -> web.Response:
    body = await request.json()
    took = await asyncio.get_running_loop().run_in_executor(None, work, body["work_ms"])
    return web.Response(
        body=BODY,
        content_type="application/json",
        headers={"Server-Timing": f"work;dur={took:.3f}"},
    )


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
