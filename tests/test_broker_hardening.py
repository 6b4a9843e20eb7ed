"""The broker under abuse (issue 16): a client that never reads, requests that are out of
range or malformed in every field, health and reflection as third-party tools use them.

One broker process serves the whole module (Gemma-3, one slot, ``--dev``, a 2 s write
stall limit); each test leaves it as it found it.
"""

from __future__ import annotations

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
from support import GEMMA, gemma_broker

from ridgeline_core.client import BrokerClient, build_request
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
