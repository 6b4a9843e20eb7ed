"""Clients for the cloud broker: :class:`BrokerClient` (blocking) and :class:`AsyncBrokerClient`.

Both speak ``ridgeline.v1`` with the transport settings of
:mod:`ridgeline_core.transport`, send the device token as ``authorization:
Bearer <token>``, and turn a failed call into the :mod:`ridgeline_core.errors`
class the broker named (``UnauthenticatedError``, ``RateLimitedError`` with
``retry_after_s``, ``QueueFullError``, ``UnknownModelError``, ...), with the
gRPC status name in ``error.status`` (:mod:`ridgeline_core.status`).

Two levels: :meth:`BrokerClient.stream` takes chat messages and sampling parameters and
yields domain events (:mod:`ridgeline_core.wire`), which is what the edge agent uses;
``generate``, ``generate_request``, ``ask`` and :func:`build_request` are the wire level,
whose protobuf events protocol tests and tools read::

    with BrokerClient("broker.example:50051", token=token, tls=TlsOptions(ca_file=ca)) as broker:
        for event in broker.generate("Why is the sky blue?", max_tokens=64):
            ...
        answer = broker.ask("What is 2 + 2?")  # text and final result together

Plaintext is for loopback development brokers (``cloud-broker serve --dev``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import grpc
import grpc.aio

from ridgeline.v1 import broker_pb2, broker_pb2_grpc

from . import errors, transport, wire
from .closing import Closing
from .runtime.types import ChatMessage, SamplingParams
from .status import ERROR_KIND_KEY, from_rpc

__all__ = [
    "ERROR_KIND_KEY",
    "MAX_TIMEOUT_S",
    "ROLE_CODES",
    "AnswerStream",
    "AsyncBrokerClient",
    "BrokerAnswer",
    "BrokerClient",
    "TlsOptions",
    "build_request",
    "error_from_rpc",
]


ROLE_CODES = wire.ROLES_TO_PB  # chat role name -> protocol enum (the edge service uses it too)

# The longest deadline a call is given. gRPC turns a much longer one (1e10 s) into a
# deadline that has already passed, so a caller asking to wait "forever" would fail at once.
MAX_TIMEOUT_S = 86_400.0

Messages = str | Sequence[Mapping[str, str]] | Sequence[broker_pb2.ChatMessage]


@dataclass(frozen=True)
class TlsOptions:
    """Server verification (``ca_file``; system roots when None) and, for mutual TLS,
    this client's certificate and key. ``server_name`` overrides the name checked in
    the server's certificate (when connecting by IP address, say)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    ca_pem: bytes | None = None  # trusted certificates given directly (a pinned broker's)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise errors.ConfigError(f"TLS file {path}: {exc.strerror}") from exc

        if (self.cert_file is None) != (self.key_file is None):
            raise errors.ConfigError("a client certificate needs both cert_file and key_file")
        if self.ca_pem is not None and self.ca_file is not None:
            raise errors.ConfigError("give ca_file or ca_pem, not both")
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem if self.ca_pem is not None else read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


@dataclass(frozen=True)
class BrokerAnswer:
    text: str
    result: broker_pb2.GenerateResult

    @property
    def model(self) -> str:
        return self.result.answer_model


def build_request(  # noqa: PLR0913  # the wire level: one keyword per protocol field
    messages: Messages,
    *,
    model: str | None = None,
    max_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    choices: Sequence[str] = (),
    request_id: str | None = None,
    device_id: str = "",
    local_draft: broker_pb2.LocalDraft | None = None,
) -> broker_pb2.GenerateRequest:
    """A ``GenerateRequest`` from a prompt or chat messages; unset params take the
    broker's defaults. ``choices``: the answer must be exactly one of these strings."""
    if isinstance(messages, str):
        chat = [broker_pb2.ChatMessage(role=broker_pb2.ROLE_USER, content=messages)]
    else:
        chat = []
        for message in messages:
            if isinstance(message, broker_pb2.ChatMessage):
                chat.append(message)
                continue
            role = ROLE_CODES.get(message.get("role", ""))
            if role is None:
                raise errors.InvalidRequestError(
                    f"message role {message.get('role')!r} is not one of {', '.join(ROLE_CODES)}"
                )
            chat.append(broker_pb2.ChatMessage(role=role, content=message.get("content", "")))
    params = broker_pb2.SamplingParams(stop=list(stop), choices=list(choices))
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if temperature is not None:
        params.temperature = temperature
    if top_p is not None:
        params.top_p = top_p
    if top_k is not None:
        params.top_k = top_k
    if seed is not None:
        params.seed = seed
    request = broker_pb2.GenerateRequest(
        request_id=request_id or uuid.uuid4().hex,
        device_id=device_id,
        messages=chat,
        params=params,
    )
    if model:
        request.model = model
    if local_draft is not None:
        request.local_draft.CopyFrom(local_draft)
    return request


error_from_rpc = from_rpc  # the name this module has always offered


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _open_channel(module: Any, address: str, tls: TlsOptions | None, plaintext: bool) -> Any:
    """A channel from ``grpc`` or ``grpc.aio`` (same signatures) with our transport options."""
    if tls is None and not plaintext:
        raise errors.ConfigError(
            "no TLS options given: pass tls=TlsOptions(...) or plaintext=True "
            "(plaintext is for a loopback development broker)"
        )
    options = channel_options(tls)
    if tls is not None:
        return module.secure_channel(address, tls.credentials(), options=options)
    return module.insecure_channel(address, options=options)


class _Connectivity:
    """The channel's state as gRPC reports it, kept current by one subscription, so that
    checking a connected channel costs an attribute read."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._changed = threading.Condition()
        self.state: grpc.ChannelConnectivity | None = None
        self._subscribed = False
        self._closed = False

    def _on_state(self, state: grpc.ChannelConnectivity) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()

    def wait_ready(self, timeout_s: float) -> None:
        ready = grpc.ChannelConnectivity.READY
        if self.state is ready:
            return
        if self._closed:
            raise errors.UnavailableError("the broker client is closed")
        # Subscribing with try_to_connect starts a connection attempt from IDLE.
        if not self._subscribed:
            self._channel.subscribe(self._on_state, try_to_connect=True)
            self._subscribed = True
        else:
            self._channel.subscribe(_ignore_state, try_to_connect=True)
            self._channel.unsubscribe(_ignore_state)
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                state = self.state
                if state is ready:
                    return
                if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                    error = errors.UnavailableError("the broker refused or dropped the connection")
                    error.status = "UNAVAILABLE"
                    raise error
                if state is grpc.ChannelConnectivity.SHUTDOWN:
                    raise errors.UnavailableError("the client is closed")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise errors.UnavailableError(
                        f"the broker did not accept a connection within {timeout_s:g} s"
                    )
                self._changed.wait(left)

    def close(self) -> None:
        if self._subscribed:
            self._channel.unsubscribe(self._on_state)
            self._subscribed = False
        with self._changed:  # wake anyone waiting: the channel is going away
            self._closed = True
            self.state = grpc.ChannelConnectivity.SHUTDOWN
            self._changed.notify_all()


def _ignore_state(_: grpc.ChannelConnectivity) -> None:
    pass


_HEALTH_SERVICE = b"ridgeline.v1.Broker"


def _health_check(channel: Any, metadata: Any, timeout_s: float) -> bool:
    """One call to the standard health service for the broker's service name."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=_health_request,
        response_deserializer=_health_serving,
    )
    try:
        serving: bool = check(b"", timeout=timeout_s, metadata=metadata)
    except grpc.RpcError:
        return False
    return serving


def _health_request(_: bytes) -> bytes:
    """``HealthCheckRequest{service: "ridgeline.v1.Broker"}``, encoded by hand: field 1,
    length-delimited. The edge needs no grpcio-health-checking for one tiny message."""
    return bytes([0x0A, len(_HEALTH_SERVICE)]) + _HEALTH_SERVICE


def _health_serving(data: bytes) -> bool:
    """``HealthCheckResponse.status == SERVING`` (field 1, varint 1)."""
    return data == b"\x08\x01"


class _AnswerBuilder:
    """Joins the deltas of a ``Generate`` stream and keeps its result."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.result: broker_pb2.GenerateResult | None = None

    def add(self, event: broker_pb2.GenerateResponse) -> None:
        if event.HasField("delta"):
            self.parts.append(event.delta.text)
        else:
            self.result = event.result

    def build(self) -> BrokerAnswer:
        if self.result is None:
            raise errors.UnavailableError("the broker ended the stream without a result")
        return BrokerAnswer("".join(self.parts), self.result)


class AnswerStream(Iterator[wire.BrokerDelta | wire.BrokerResult]):
    """The domain events of one ``Generate`` call; :meth:`cancel` stops it on the broker."""

    def __init__(self, stream: BrokerStream) -> None:
        self._stream = stream

    def __next__(self) -> wire.BrokerDelta | wire.BrokerResult:
        return wire.event_from_pb(next(self._stream))

    def cancel(self) -> None:
        self._stream.cancel()


class BrokerStream(Iterator[broker_pb2.GenerateResponse]):
    """The events of one ``Generate`` call; :meth:`cancel` stops it on the broker."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __next__(self) -> broker_pb2.GenerateResponse:
        try:
            event: broker_pb2.GenerateResponse = next(self._call)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return event

    def cancel(self) -> None:
        """Stop the call; iterating further raises RequestCancelledError."""
        self._call.cancel()


class _ClientCore:
    """What the blocking and the asyncio client share: the channel (``_transport`` is
    grpc or grpc.aio), the stub, the credentials sent with each call, the deadline."""

    _transport: ClassVar[Any] = grpc

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: TlsOptions | None = None,
        plaintext: bool = False,
        timeout_s: float | None = 120.0,
    ) -> None:
        self._channel = _open_channel(self._transport, address, tls, plaintext)
        self._stub = broker_pb2_grpc.BrokerStub(self._channel)
        self._metadata = _metadata(token)
        self.timeout_s = timeout_s
        self._opened()

    def _timeout(self, timeout_s: float | None) -> float | None:
        """``timeout_s`` (else the client's), at most :data:`MAX_TIMEOUT_S`."""
        chosen = timeout_s or self.timeout_s
        return None if chosen is None else min(chosen, MAX_TIMEOUT_S)

    def _opened(self) -> None:
        """Called once the channel exists."""

    def _generate_call(self, request: broker_pb2.GenerateRequest, timeout_s: float | None) -> Any:
        return self._stub.Generate(
            request, timeout=self._timeout(timeout_s), metadata=self._metadata
        )

    def _list_models_call(self, timeout_s: float | None) -> Any:
        return self._stub.ListModels(
            broker_pb2.ListModelsRequest(),
            timeout=self._timeout(timeout_s),
            metadata=self._metadata,
        )


class _WireCalls(_ClientCore):
    """The blocking client's protocol-level calls."""

    def generate(
        self, messages: Messages, *, timeout_s: float | None = None, **params: Any
    ) -> BrokerStream:
        """Wire level: the call's protobuf events (protocol tests and tools read them)."""
        request = build_request(messages, **params)
        return self.generate_request(request, timeout_s=timeout_s)

    def generate_request(
        self, request: broker_pb2.GenerateRequest, *, timeout_s: float | None = None
    ) -> BrokerStream:
        return BrokerStream(self._generate_call(request, timeout_s))

    def ask(
        self, messages: Messages, *, timeout_s: float | None = None, **params: Any
    ) -> BrokerAnswer:
        answer = _AnswerBuilder()
        for event in self.generate(messages, timeout_s=timeout_s, **params):
            answer.add(event)
        return answer.build()

    def list_models(self, *, timeout_s: float | None = None) -> broker_pb2.ListModelsResponse:
        try:
            response: broker_pb2.ListModelsResponse = self._list_models_call(timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return response


class BrokerClient(_WireCalls, Closing):
    """Blocking client; one channel, safe to share between threads."""

    def _opened(self) -> None:
        self._connectivity = _Connectivity(self._channel)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        model: str | None = None,
        device_id: str = "",
        draft: wire.LocalDraft | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
        strategy: wire.StrategyChoice | None = None,
        max_cost: float | None = None,
    ) -> AnswerStream:
        """The answer as domain events (:class:`~ridgeline_core.wire.BrokerDelta`, then one
        :class:`~ridgeline_core.wire.BrokerResult`); failures raise the error class the
        broker named."""
        request = wire.generate_request(
            messages,
            params,
            model=model,
            device_id=device_id,
            draft=draft,
            request_id=request_id,
            strategy=strategy,
            max_cost=max_cost,
        )
        return AnswerStream(self.generate_request(request, timeout_s=timeout_s))

    def wait_ready(self, timeout_s: float) -> None:
        """Return once the channel is connected; raise UnavailableError at once when the
        last connection attempt failed, or after ``timeout_s`` when it hangs. A call on a
        link that never answers would otherwise wait for its whole deadline."""
        self._connectivity.wait_ready(timeout_s)

    def health(self, *, timeout_s: float) -> bool:
        """True when the broker's health service says it is serving ``ridgeline.v1.Broker``."""
        return _health_check(self._channel, self._metadata, timeout_s)

    def close(self) -> None:
        self._connectivity.close()
        self._channel.close()


class AsyncBrokerStream:
    """The events of one ``Generate`` call (``async for``); :meth:`cancel` stops it."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._cancelled = False

    async def __aiter__(self) -> AsyncIterator[broker_pb2.GenerateResponse]:
        try:
            async for event in self._call:
                yield event
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        except asyncio.CancelledError:
            if not self._cancelled:
                raise  # the task itself was cancelled
            error = errors.RequestCancelledError("the call was cancelled")
            error.status = grpc.StatusCode.CANCELLED.name
            raise error from None

    def cancel(self) -> None:
        """Stop the call; iterating further raises RequestCancelledError."""
        self._cancelled = True
        self._call.cancel()


class AsyncBrokerClient(_ClientCore):
    """asyncio client; create and use it inside one event loop."""

    _transport: ClassVar[Any] = grpc.aio

    def generate(
        self, messages: Messages, *, timeout_s: float | None = None, **params: Any
    ) -> AsyncBrokerStream:
        return self.generate_request(build_request(messages, **params), timeout_s=timeout_s)

    def generate_request(
        self, request: broker_pb2.GenerateRequest, *, timeout_s: float | None = None
    ) -> AsyncBrokerStream:
        return AsyncBrokerStream(self._generate_call(request, timeout_s))

    async def ask(
        self, messages: Messages, *, timeout_s: float | None = None, **params: Any
    ) -> BrokerAnswer:
        answer = _AnswerBuilder()
        async for event in self.generate(messages, timeout_s=timeout_s, **params):
            answer.add(event)
        return answer.build()

    async def list_models(self, *, timeout_s: float | None = None) -> broker_pb2.ListModelsResponse:
        try:
            response: broker_pb2.ListModelsResponse = await self._list_models_call(timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc
        return response

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def channel_options(tls: TlsOptions | None = None) -> list[tuple[str, int | str]]:
    return transport.channel_options(server_name=tls.server_name if tls else None)
