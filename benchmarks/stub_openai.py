"""A fast OpenAI-compatible stub server: the shared backend of the broker overhead benchmark.

It answers at once, so whatever a proxy in front of it adds is what the benchmark sees. Raw
``asyncio`` Protocol on stdlib asyncio (no framework, no uvloop, so the numbers compare with
the Python servers under test), HTTP/1.1 keep-alive with pipelining, chunked responses.

    python benchmarks/stub_openai.py --port 0      # prints "listening on 127.0.0.1:PORT"

Endpoints:
  POST /v1/chat/completions  "stream": true -> a fixed SSE stream ("Hello", " from", " the",
                             " stub", then finish_reason "stop" with usage, then [DONE]);
                             otherwise one chat.completion JSON object
  GET  /v1/models            lists the model
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

__all__ = ["CHUNKS", "StubProtocol", "main", "serve"]

CHUNKS = ("Hello", " from", " the", " stub")
DEFAULT_MODEL = "stub"
COMPLETION_ID = "chatcmpl-stub"
PROMPT_TOKENS = 8
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _usage() -> dict[str, int]:
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(CHUNKS),
        "total_tokens": PROMPT_TOKENS + len(CHUNKS),
    }


def _chunk(model: str, created: int, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _chunked(data: bytes) -> bytes:
    """One chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse_body(model: str) -> bytes:
    """The whole streamed answer as chunked-encoding bytes: one chunk per SSE event."""
    created = int(time.time())
    events = [_chunk(model, created, {"role": "assistant", "content": CHUNKS[0]}, None)]
    events += [_chunk(model, created, {"content": text}, None) for text in CHUNKS[1:]]
    last = _chunk(model, created, {}, "stop")
    last["usage"] = _usage()
    events.append(last)
    parts = [_chunked(b"data: " + json.dumps(event).encode() + b"\n\n") for event in events]
    parts.append(_chunked(b"data: [DONE]\n\n"))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def _json_completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": COMPLETION_ID,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(CHUNKS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": _usage(),
        }
    ).encode()


def _models(model: str) -> bytes:
    return json.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "stub"}]}
    ).encode()


class _Responses:
    """Response bytes cached per model name: the hot path only concatenates."""

    def __init__(self, default_model: str) -> None:
        self.default_model = default_model
        self._stream: dict[str, bytes] = {}
        self._json: dict[str, bytes] = {}

    def stream(self, model: str) -> bytes:
        cached = self._stream.get(model)
        if cached is None:
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            cached = self._stream.setdefault(model, head + _sse_body(model))
        return cached

    def completion(self, model: str) -> bytes:
        cached = self._json.get(model)
        if cached is None:
            cached = self._json.setdefault(model, _response(200, _json_completion(model)))
        return cached


def _response(status: int, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        _REASONS[status].encode(),
        content_type,
        len(body),
        body,
    )


def _error(status: int, message: str) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}})
    return _response(status, body.encode())


class _BadRequest(Exception):
    pass


class StubProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse requests from the buffer, answer each one at once."""

    def __init__(self, responses: _Responses) -> None:
        self._responses = responses
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        out = []
        close = False
        try:
            while not close:
                parsed = self._next_request()
                if parsed is None:
                    break
                method, path, headers, body = parsed
                out.append(self._handle(method, path, body))
                close = headers.get(b"connection", b"").lower() == b"close"
        except _BadRequest as exc:
            out.append(_error(400, str(exc)))
            close = True
        if self._transport is None:
            return
        if out:
            self._transport.write(b"".join(out))
        if close:
            self._transport.close()

    def _next_request(self) -> tuple[bytes, bytes, dict[bytes, bytes], bytes] | None:
        """Pop one complete request off the buffer, or None when more bytes are needed."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise _BadRequest("headers too large")
            return None
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        try:
            method, path, _version = lines[0].split(b" ", 2)
        except ValueError:
            raise _BadRequest("malformed request line") from None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            decoded = self._dechunk(start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            try:
                length = int(headers.get(b"content-length", b"0"))
            except ValueError:
                raise _BadRequest("bad content-length") from None
            if length > MAX_BODY_BYTES:
                raise _BadRequest("body too large")
            if len(self._buffer) < start + length:
                return None
            body = bytes(self._buffer[start : start + length])
            consumed = start + length
        del self._buffer[:consumed]
        return method, path, headers, body

    def _dechunk(self, pos: int) -> tuple[bytes, int] | None:
        """Decode a chunked request body from ``pos``; None while it is incomplete."""
        body = bytearray()
        buf = self._buffer
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            try:
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            pos = line_end + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return bytes(body), trailer_end + 4
            if len(buf) < pos + size + 2:
                return None
            body += buf[pos : pos + size]
            pos += size + 2
            if len(body) > MAX_BODY_BYTES:
                raise _BadRequest("body too large")

    def _handle(self, method: bytes, path: bytes, body: bytes) -> bytes:
        path = path.split(b"?", 1)[0].rstrip(b"/")
        if path in (b"/v1/chat/completions", b"/chat/completions"):
            if method != b"POST":
                return _error(405, "use POST")
            try:
                request = json.loads(body)
            except ValueError:
                return _error(400, "body is not JSON")
            if not isinstance(request, dict):
                return _error(400, "body is not a JSON object")
            model = str(request.get("model") or self._responses.default_model)
            if request.get("stream"):
                return self._responses.stream(model)
            return self._responses.completion(model)
        if path in (b"/v1/models", b"/models"):
            return _response(200, _models(self._responses.default_model))
        if path == b"/health":
            return _response(200, b'{"status":"ok"}')
        return _error(404, f"no route {path.decode(errors='replace')}")


async def serve(host: str, port: int, model: str) -> None:
    """Serve until SIGTERM or SIGINT; print the bound address once listening."""
    loop = asyncio.get_running_loop()
    responses = _Responses(model)
    server = await loop.create_server(lambda: StubProtocol(responses), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="name listed by /v1/models")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.model))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
