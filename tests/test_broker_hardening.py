"""The broker under abuse (issue 16): a client that never reads, requests that are out of
range or malformed in every field, health and reflection as third-party tools use them.

One broker process serves the whole module (Gemma-3, one slot, ``--dev``, a 2 s write
stall limit); each test leaves it as it found it.
"""

from __future__ import annotations

import collections
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from brokerproc import BrokerProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st
from support import GEMMA, gemma_broker

from edge_agent.request.options import RequestOptions
from ridgeline.v1 import broker_pb2, broker_pb2_grpc
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, build_request
from ridgeline_core.runtime import MAX_STOP_CHARS, MAX_STOPS
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

STALL_S = 2
LONG_PROMPT = "Write a long story about a lighthouse keeper and a storm."


@pytest.fixture(scope="module")
def broker(
    gemma_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    config = f"""
[limits]
write_stall_s = {STALL_S}
requests_per_minute = 0
tokens_per_minute = 0
"""
    root = tmp_path_factory.mktemp("hardening-broker")
    process = gemma_broker(model_store, root, extra_config=config)
    yield process
    process.stop()


def metric_delta(before: dict[str, float], after: dict[str, float], key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


# -- a client that never reads ----------------------------------------------------------------


class StalledStream:
    """One gRPC call over a raw HTTP/2 connection whose receive window is 0: the client
    sends its request, answers pings (h2 queues the acks) and reads no DATA until
    :meth:`read_again`. A thread reads the socket and records what arrives."""

    def __init__(self, address: str, path: str, body: bytes) -> None:
        host, port = address.rsplit(":", 1)
        self._sock = socket.create_connection((host, int(port)), timeout=10)
        self._sock.settimeout(None)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self._conn = h2.connection.H2Connection(config)
        self._conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
        )
        self._lock = threading.Lock()
        self.headers: list[tuple[str, str]] = []
        self.trailers: dict[str, str] = {}
        self.data = b""
        self.reset: int | None = None
        self.ended = threading.Event()
        with self._lock:
            self._conn.initiate_connection()
            stream_id = self._conn.get_next_available_stream_id()
            self._conn.send_headers(
                stream_id,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", address),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            framed = b"\x00" + struct.pack(">I", len(body)) + body
            self._conn.send_data(stream_id, framed, end_stream=True)
            self._flush()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _flush(self) -> None:
        if out := self._conn.data_to_send():
            self._sock.sendall(out)

    def _read(self) -> None:
        try:
            while data := self._sock.recv(65536):
                with self._lock:
                    for event in self._conn.receive_data(data):
                        self._record(event)
                    self._flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass  # closed by the test or the broker
        self.ended.set()

    def _record(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.data += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            self.trailers = dict(event.headers)
        elif isinstance(event, h2.events.StreamReset):
            self.reset = event.error_code
        if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            self.ended.set()

    def read_again(self) -> None:
        """Open the window: what the broker queued for this stream arrives."""
        with self._lock:
            self._conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
            self._flush()

    def close(self) -> None:
        self._sock.close()
        self._reader.join(timeout=10)


def test_a_client_that_never_reads_does_not_hold_the_slot(broker: BrokerProcess) -> None:
    """The stalled call gives its only slot back after ``write_stall_s``: another client
    is answered meanwhile, and the stalled one gets DEADLINE_EXCEEDED (not INTERNAL) saying
    why, once it reads. The TLS and token broker runs the same service code."""
    before = broker.metrics()
    request = build_request(LONG_PROMPT, max_tokens=300)
    stalled = StalledStream(
        broker.address, "/ridgeline.v1.Broker/Generate", request.SerializeToString()
    )
    try:
        slots_busy = f'ridgeline_broker_slots_busy{{model="{GEMMA}"}}'
        deadline = time.monotonic() + 30
        while broker.metrics()[slots_busy] == 0:  # the stalled call holds the slot
            assert time.monotonic() < deadline, "the stalled call never started generating"
            time.sleep(0.05)
        with BrokerClient(broker.address, plaintext=True, timeout_s=60) as client:
            answer = client.ask("Hello", max_tokens=4)
        assert answer.result.usage.completion_tokens >= 1
        assert not stalled.ended.is_set()
        stalled.read_again()
        assert stalled.ended.wait(30), "the stalled call was never ended"
    finally:
        stalled.close()
    assert dict(stalled.headers).get(":status") == "200"
    assert stalled.reset is None
    assert stalled.trailers.get("grpc-status") == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert f"read nothing for {STALL_S} s" in stalled.trailers.get("grpc-message", "")
    assert stalled.trailers.get("ridgeline-error-kind") == "slow_client"
    after = broker.metrics()
    code = f'ridgeline_broker_requests_total{{code="DEADLINE_EXCEEDED",model="{GEMMA}"}}'
    assert metric_delta(before, after, code) == 1
    kind = 'ridgeline_broker_errors_total{code="DEADLINE_EXCEEDED",kind="slow_client"}'
    assert metric_delta(before, after, kind) == 1
    internal = 'ridgeline_broker_errors_total{code="INTERNAL",kind="internal"}'
    assert metric_delta(before, after, internal) == 0
    assert after[slots_busy] == 0
    assert "Traceback" not in broker.stderr()


# -- requests out of range ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", [99, -1, 2**31 - 1])
def test_an_unknown_strategy_kind_is_invalid_argument(broker: BrokerProcess, kind: int) -> None:
    request = build_request("Hello", max_tokens=2)
    request.strategy.kind = kind  # type: ignore[assignment]  # open enum: any int32 arrives
    with (
        BrokerClient(broker.address, plaintext=True, timeout_s=30) as client,
        pytest.raises(errors.InvalidRequestError) as refused,
    ):
        list(client.generate_request(request))
    assert refused.value.status == "INVALID_ARGUMENT"
    assert f"strategy.kind {kind} is not a strategy" in str(refused.value)


def test_stop_sequences_have_one_limit_on_the_edge_and_the_broker(broker: BrokerProcess) -> None:
    """What the edge daemon accepts the broker does not refuse, and the reverse."""
    longest, too_long = "x" * MAX_STOP_CHARS, "x" * (MAX_STOP_CHARS + 1)
    assert RequestOptions.parse({"stop": [longest] * MAX_STOPS}).stop == (longest,) * MAX_STOPS
    with pytest.raises(errors.InvalidRequestError, match=f"1-{MAX_STOP_CHARS} characters"):
        RequestOptions.parse({"stop": [too_long]})
    with BrokerClient(broker.address, plaintext=True, timeout_s=60) as client:
        answer = client.ask("Hello", max_tokens=2, stop=[longest] * MAX_STOPS)
        assert answer.result.usage.completion_tokens >= 1
        with pytest.raises(errors.InvalidRequestError, match=f"1-{MAX_STOP_CHARS} characters"):
            client.ask("Hello", max_tokens=2, stop=[too_long])


# -- health and reflection, as third-party tools use them -----------------------------------------


def test_malformed_health_checks_are_invalid_argument_without_a_traceback(
    broker: BrokerProcess,
) -> None:
    with grpc.insecure_channel(broker.address) as channel:
        for method, call in (
            ("Check", channel.unary_unary),
            ("Watch", channel.unary_stream),
            ("ServerReflectionInfo", channel.stream_stream),
        ):
            service = "grpc.health.v1.Health"
            if method == "ServerReflectionInfo":
                service = "grpc.reflection.v1.ServerReflection"
            stub = call(f"/{service}/{method}", request_serializer=raw, response_deserializer=raw)
            for body in (b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe"):
                request = iter([body]) if method == "ServerReflectionInfo" else body
                with pytest.raises(grpc.RpcError) as refused:
                    reply = stub(request, timeout=10)
                    if method != "Check":
                        list(reply)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert f"malformed {method} request" in (refused.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(health_pb2.HealthCheckRequest(service="ridgeline.v1.Broker"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert "Traceback" not in broker.stderr()


def raw(data: bytes) -> bytes:
    return data


def test_dev_broker_serves_reflection_v1_and_v1alpha(broker: BrokerProcess) -> None:
    """grpcurl-style tools ask v1 first, older ones v1alpha: both list the broker and
    describe its service (the module's broker runs with --dev and no reflection setting)."""
    from google.protobuf import descriptor_pb2, message_factory
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from cloud_broker.reflection import v1_descriptor

    v1 = v1_descriptor()
    v1_request = message_factory.GetMessageClass(
        v1.message_types_by_name["ServerReflectionRequest"]
    )
    v1_response = message_factory.GetMessageClass(
        v1.message_types_by_name["ServerReflectionResponse"]
    )
    with grpc.insecure_channel(broker.address) as channel:
        v1_call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=v1_request.SerializeToString,
            response_deserializer=v1_response.FromString,
        )
        v1alpha_call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        for call, request in (
            (v1_call, v1_request),
            (v1alpha_call, reflection_pb2.ServerReflectionRequest),
        ):
            asked = [
                request(list_services=""),
                request(file_containing_symbol="ridgeline.v1.Broker"),
            ]
            listed, described = list(call(iter(asked), timeout=10))
            names = {service.name for service in listed.list_services_response.service}
            assert {
                "ridgeline.v1.Broker",
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            } <= names
            files = described.file_descriptor_response.file_descriptor_proto
            packages = {descriptor_pb2.FileDescriptorProto.FromString(f).package for f in files}
            assert "ridgeline.v1" in packages


# -- fuzzing the protocol -------------------------------------------------------------------------

# Property-based: every request, valid or not, gets a well-formed answer or a precise
# status, never INTERNAL or UNKNOWN, and the broker stays healthy. Bounded by the "ci"
# profile (conftest.py); `make fuzz` runs the long one. The fuzzed broker answers at most
# two tokens, so the valid requests among them take a fraction of a second each.

_INT32 = st.integers(-(2**31), 2**31 - 1)
_UINT32 = st.integers(0, 2**32 - 1)
_CHARS = st.characters(exclude_categories=["Cs"])  # protobuf strings are valid UTF-8
_TEXT = st.one_of(
    st.text(_CHARS, max_size=24),
    st.sampled_from(["Hello", " ", "x" * 65, "x" * 200, "<|im_end|>", "\x00", "../x", GEMMA]),
)
_FLOATS = st.floats(width=32)  # NaN, infinities and the extremes included


_SOMETIMES = st.sampled_from([True, False, False])  # a field is set in a third of them


@st.composite
def generate_requests(draw: st.DrawFn) -> broker_pb2.GenerateRequest:
    """Mostly plausible requests (a user message, default model), each field out of
    range or odd some of the time, so that both the checks and the model path are hit."""
    request = broker_pb2.GenerateRequest()
    if draw(_SOMETIMES):
        request.request_id, request.device_id = draw(_TEXT), draw(_TEXT)
    request.messages.add(role=broker_pb2.ROLE_USER, content=draw(_TEXT))
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
        role = draw(st.one_of(st.sampled_from([1, 2, 3]), _INT32))
        request.messages.add(role=role, content=draw(_TEXT))
    draw_params(draw, request.params)
    if draw(_SOMETIMES):
        request.model = draw(_TEXT)
    elif draw(_SOMETIMES):
        request.strategy.kind = draw(st.one_of(st.integers(0, 4), _INT32))
        request.strategy.models.extend(draw(st.lists(_TEXT, max_size=2)))
    if draw(_SOMETIMES):
        draft = request.local_draft
        draft.text, draft.model = draw(_TEXT), draw(_TEXT)
        draft.confidence, draft.completion_tokens = draw(_FLOATS), draw(_UINT32)
    return request


def draw_params(draw: st.DrawFn, params: broker_pb2.SamplingParams) -> None:
    if draw(_SOMETIMES):
        params.max_tokens = draw(st.one_of(st.integers(0, 3), _UINT32))
    if draw(_SOMETIMES):
        params.temperature = draw(st.one_of(st.floats(0, 2, width=32), _FLOATS))
    if draw(_SOMETIMES):
        params.top_p = draw(st.one_of(st.floats(0, 1, width=32), _FLOATS))
    if draw(_SOMETIMES):
        params.top_k = draw(st.one_of(st.integers(0, 100), _UINT32))
    if draw(_SOMETIMES):
        params.seed = draw(st.integers(0, 2**64 - 1))
    if draw(_SOMETIMES):
        params.stop.extend(draw(st.lists(_TEXT, max_size=9)))
    if draw(_SOMETIMES):
        params.choices.extend(draw(st.lists(_TEXT, max_size=3)))


@pytest.fixture(scope="module")
def fuzz_broker(
    gemma_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    config = """
[limits]
max_tokens = 2
default_max_tokens = 2
requests_per_minute = 0
tokens_per_minute = 0
"""
    root = tmp_path_factory.mktemp("fuzz-broker")
    process = gemma_broker(model_store, root, extra_config=config)
    yield process
    process.stop()


def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
    """The call's final status; a stream's events are read to the end."""
    try:
        if hasattr(call, "__iter__"):
            events = list(call)
            assert events and events[-1].HasField("result"), events
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as error:
        return error.code(), error.details() or ""


def assert_precise(code: grpc.StatusCode, details: str) -> None:
    assert code not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), details
    assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in time: {details}"
    assert code != grpc.StatusCode.UNAVAILABLE, f"the broker is gone: {details}"


def assert_healthy(broker: BrokerProcess, channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service="ridgeline.v1.Broker"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    errors_by_code = broker.metrics()
    assert (
        errors_by_code.get('ridgeline_broker_errors_total{code="INTERNAL",kind="internal"}', 0) == 0
    )
    assert "Traceback" not in broker.stderr()


@pytest.mark.property  # the @given is inside: `make fuzz` selects it by this mark
def test_fuzzed_requests_get_precise_statuses(fuzz_broker: BrokerProcess) -> None:
    with grpc.insecure_channel(fuzz_broker.address) as channel:
        stub = broker_pb2_grpc.BrokerStub(channel)
        codes: collections.Counter[grpc.StatusCode] = collections.Counter()

        @given(request=generate_requests())
        def generate(request: broker_pb2.GenerateRequest) -> None:
            code, details = status_of(stub.Generate(request, timeout=30))
            assert_precise(code, details)
            codes[code] += 1

        generate()
        assert_healthy(fuzz_broker, channel)
    assert codes[grpc.StatusCode.OK] > 0, codes  # the model path was reached, not only checks
    assert codes[grpc.StatusCode.INVALID_ARGUMENT] > 0, codes


@pytest.mark.property
def test_fuzzed_bytes_get_precise_statuses(fuzz_broker: BrokerProcess) -> None:
    """Random bytes as the request body of each method: most do not parse
    (INVALID_ARGUMENT); those that do are requests like any other."""
    with grpc.insecure_channel(fuzz_broker.address) as channel:
        generate = channel.unary_stream(
            "/ridgeline.v1.Broker/Generate",
            request_serializer=raw,
            response_deserializer=broker_pb2.GenerateResponse.FromString,
        )
        list_models = channel.unary_unary(
            "/ridgeline.v1.Broker/ListModels", request_serializer=raw, response_deserializer=raw
        )

        @given(body=st.binary(max_size=256))
        def send(body: bytes) -> None:
            assert_precise(*status_of(generate(body, timeout=30)))
            try:
                list_models(body, timeout=10)
            except grpc.RpcError as error:
                assert_precise(error.code(), error.details() or "")

        send()
        assert_healthy(fuzz_broker, channel)
