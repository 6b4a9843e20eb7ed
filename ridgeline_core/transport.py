"""gRPC transport settings shared by the broker and its clients.

Both ends are configured from here so they cannot drift apart. The rules that
matter, and why:

* Message sizes. Requests carry chat messages (the broker also limits their
  count and size itself), responses carry one text delta or one result each, so
  4 MiB either way is far more than a valid message needs while still bounding
  what one bad peer can make the other allocate.
* Keepalive. A long prefill or a wait in a model's queue sends no data for many
  seconds. The client pings every :data:`CLIENT_KEEPALIVE_S` seconds to notice a
  dead connection (NAT and load balancers drop idle flows); the broker accepts
  pings as often as every :data:`SERVER_MIN_PING_INTERVAL_S` seconds, which is
  below the client's interval, and never counts ping strikes, so a quiet stream
  is never closed with ``too_many_pings``. The broker pings idle clients every
  :data:`SERVER_KEEPALIVE_S` seconds and drops them after
  :data:`KEEPALIVE_TIMEOUT_S` seconds without an answer.
"""

from __future__ import annotations

import ipaddress

from .errors import ConfigError

__all__ = [
    "CLIENT_KEEPALIVE_S",
    "KEEPALIVE_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "RETRY_AFTER_KEY",
    "SERVER_KEEPALIVE_S",
    "SERVER_MIN_PING_INTERVAL_S",
    "channel_options",
    "is_loopback",
    "server_options",
    "split_host_port",
]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
CLIENT_KEEPALIVE_S = 30.0
SERVER_KEEPALIVE_S = 60.0
SERVER_MIN_PING_INTERVAL_S = 10.0
KEEPALIVE_TIMEOUT_S = 20.0

# trailing metadata key of RESOURCE_EXHAUSTED answers: milliseconds to wait
RETRY_AFTER_KEY = "retry-after-ms"


def server_options(
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    keepalive_s: float = SERVER_KEEPALIVE_S,
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
    min_ping_interval_s: float = SERVER_MIN_PING_INTERVAL_S,
) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", int(min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 0),  # 0: never close a connection for pinging
        ("grpc.so_reuseport", 0),  # a second broker on a taken port must fail, not share it
    ]


RECONNECT_INITIAL_MS = 250
RECONNECT_MAX_MS = 5000


def channel_options(
    *,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    keepalive_s: float = CLIENT_KEEPALIVE_S,
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S,
    server_name: str | None = None,
) -> list[tuple[str, int | str]]:
    options: list[tuple[str, int | str]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # keep pinging through a long prefill
        ("grpc.enable_retries", 0),  # the edge agent decides about retries itself
        # A restarted broker is found within seconds, not after gRPC's 2-minute backoff.
        # (Not grpc.min_reconnect_backoff_ms: it is also the minimum connect timeout, and a
        # small one fails every handshake over a slow link.)
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_INITIAL_MS),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
    ]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def split_host_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to ``(host, port)``; port 0 picks a free one."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"address {address!r} is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"address {address!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"address {address!r}: port {port} is out of range")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
