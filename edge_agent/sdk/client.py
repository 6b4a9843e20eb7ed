"""``EdgeClient``: the SDK's way to a running ``edge-agent serve``.

It has :class:`~edge_agent.agent.EdgeAgent`'s methods (``ask``, ``stream``, ``models``
and their ``_async`` twins) and returns the same typed :class:`Answer`, decision record
included, so an app can switch between in-process and daemon by changing one line::

    from edge_agent import EdgeClient

    with EdgeClient() as client:  # the daemon's default socket (daemon.grpc)
        answer = client.ask("What is the capital of France?")
        print(answer.text, answer.source, answer.decision.reason)

It speaks the daemon's gRPC edge service (``protos/ridgeline/v1/edge.proto``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import grpc

from ridgeline.v1 import broker_pb2, edge_pb2, edge_pb2_grpc
from ridgeline_core import errors
from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import ERROR_KIND_KEY, ROLE_CODES, error_from_rpc
from ridgeline_core.transport import channel_options

from ..request.answer import Answer
from ..request.conversation import Prompt, conversation
from ..request.events import Decided, Done, Reset, TextChunk
from ..request.options import RequestOptions
from ..settings import grpc_target, load_edge_settings
from .api import Answerer, ModelInfo, StreamEvent

__all__ = ["EdgeClient"]


class EdgeClient(Answerer):
    """A client of one edge daemon; one channel, safe to share between threads.

    ``target``: ``unix:/path/edge.sock`` or ``HOST:PORT``; ``api_key``: the daemon's key,
    when it has one. Without a target, both come from the ``daemon`` settings (edge.toml,
    then ``RIDGELINE_EDGE_DAEMON__*``): the daemon on this machine. The key is only ever
    read from settings for that daemon, never sent to a target given here. The channel
    has no TLS: put a TLS proxy in front of a daemon reached over a network.
    ``timeout_s``: the longest one request may take.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        timeout_s: float | None = 300.0,
    ) -> None:
        if target is None:  # this machine's daemon, and its key if it has one
            daemon = load_edge_settings(config_file=None, env=os.environ).settings.daemon
            target = daemon.grpc
            if api_key is None:
                api_key = daemon.read_api_key()
        if not target:
            raise errors.ConfigError("no daemon address: pass target= or set daemon.grpc")
        self.target, _ = grpc_target(target)
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(self.target, options=channel_options())
        self._stub = edge_pb2_grpc.EdgeStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def _request(self, prompt: Prompt, options: RequestOptions) -> edge_pb2.AskRequest:
        messages, _ = conversation(prompt, None)  # the daemon adds its system prompt
        request = edge_pb2.AskRequest(
            messages=[
                broker_pb2.ChatMessage(role=ROLE_CODES[m.role], content=m.content) for m in messages
            ],
            model=options.model or "",
            mode=options.mode or "",
            stop=list(options.stop or ()),
            live=True,
            private=options.private,
        )
        for key in ("max_tokens", "temperature", "top_p", "seed", "threshold", "deadline_s"):
            value = getattr(options, key)
            if value is not None:
                setattr(request, key, value)
        return request

    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[StreamEvent]:
        request = self._request(prompt, options)
        call = self._stub.Ask(request, timeout=self.timeout_s, metadata=self._metadata)
        forget = cancel.on_cancel(call.cancel)
        try:
            for event in call:
                kind = event.WhichOneof("event")
                if kind == "delta":
                    yield TextChunk(event.delta.text)
                elif kind == "reset":
                    yield Reset(event.reset.reason)
                elif kind == "decided":
                    yield Decided(event.decided.path, event.decided.reason)
                elif kind == "answer":
                    yield Done(Answer.from_dict(json.loads(event.answer.answer_json)))
                    return
        except grpc.RpcError as exc:
            if cancel.cancelled:
                raise errors.RequestCancelledError(cancel.reason) from exc
            raise self._error(exc) from exc
        finally:
            forget()
            call.cancel()  # a no-op once the call ended
        raise errors.UnavailableError("the daemon ended the answer without a result")

    def _error(self, exc: grpc.RpcError) -> errors.RidgelineError:
        error = error_from_rpc(exc)
        call: Any = exc
        from_daemon = ERROR_KIND_KEY in dict(call.trailing_metadata() or ())
        if call.code() == grpc.StatusCode.UNAVAILABLE and not from_daemon:
            return errors.UnavailableError(
                f"no edge daemon answers at {self.target} ({call.details()}); "
                "start one with `edge-agent serve`"
            )
        return error

    def models(self) -> list[ModelInfo]:
        try:
            response = self._stub.ListLocalModels(
                edge_pb2.ListLocalModelsRequest(), timeout=30, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from exc
        return [
            ModelInfo(
                name=m.name,
                runtime=m.runtime,
                role=m.role,
                context_length=m.context_length or None,
                pulled=m.pulled,
                loaded=m.loaded,
                default=m.default,
            )
            for m in response.models
        ]

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
