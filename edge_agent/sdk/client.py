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

import os
from collections.abc import Iterator
from typing import Any

import grpc

from ridgeline.v1 import edge_pb2, edge_pb2_grpc
from ridgeline_core import errors
from ridgeline_core.cancel import CancelToken
from ridgeline_core.closing import Closing
from ridgeline_core.status import ERROR_KIND_KEY, from_rpc
from ridgeline_core.transport import channel_options

from ..request.conversation import Prompt
from ..request.events import Done
from ..request.options import RequestOptions
from ..settings import grpc_target, load_edge_settings
from . import wire
from .api import Answerer, ModelInfo, StreamEvent

__all__ = ["EdgeClient"]


class EdgeClient(Answerer, Closing):
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
        target, api_key = _daemon(target, api_key)
        self.target, _ = grpc_target(target)
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(self.target, options=channel_options())
        self._stub = edge_pb2_grpc.EdgeStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[StreamEvent]:
        request = wire.ask_request(prompt, options)
        call = self._stub.Ask(request, timeout=self.timeout_s, metadata=self._metadata)
        forget = cancel.on_cancel(call.cancel)
        try:
            for message in call:
                event = wire.event_from_pb(message)
                if event is not None:
                    yield event
                if isinstance(event, Done):
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
        return daemon_error(exc, self.target)

    def models(self) -> list[ModelInfo]:
        try:
            response = self._stub.ListLocalModels(
                edge_pb2.ListLocalModelsRequest(), timeout=30, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise self._error(exc) from exc
        return wire.models_from_pb(response)

    def close(self) -> None:
        self._channel.close()


def _daemon(target: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The target and key to use: without a target, this machine's daemon and its key."""
    if target is None:
        daemon = load_edge_settings(config_file=None, env=os.environ).settings.daemon
        target = daemon.grpc
        if api_key is None:
            api_key = daemon.read_api_key()
    if not target:
        raise errors.ConfigError("no daemon address: pass target= or set daemon.grpc")
    return target, api_key


def daemon_error(exc: grpc.RpcError, target: str) -> errors.RidgelineError:
    """The error a failed call means; no daemon at all says how to start one."""
    error = from_rpc(exc)
    call: Any = exc
    from_daemon = ERROR_KIND_KEY in dict(call.trailing_metadata() or ())
    if call.code() == grpc.StatusCode.UNAVAILABLE and not from_daemon:
        return errors.UnavailableError(
            f"no edge daemon answers at {target} ({call.details()}); "
            "start one with `edge-agent serve`"
        )
    return error
