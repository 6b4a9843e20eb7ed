"""Container health check for the cloud broker: its gRPC health service, over its own TLS.

Kubernetes' gRPC probes and Docker's HEALTHCHECK speak plaintext only, and the broker serves
``grpc.health.v1`` only on its TLS port, so probes run this script inside the container. It
reads the broker's settings the way ``cloud-broker serve`` does (``$RIDGELINE_BROKER_CONFIG``
and the ``RIDGELINE_BROKER_*`` variables), so the port and certificates are named in one
place, and asks the broker on loopback whether ``ridgeline.v1.Broker`` is SERVING.

Trust: ``--ca-file``, the CA that issued the broker's certificate (default: ``tls.cert_file``,
which works for a self-signed certificate or a chain that ends with its root). gRPC always
checks a host name and 127.0.0.1 is rarely in the certificate, so the script first makes one
TLS handshake with the standard library, verified against the same CA but without a name,
and gives gRPC the name the served certificate carries. Under mutual TLS it presents
``--cert-file``/``--key-file`` (default: the broker's own pair, which the broker accepts when
the client CA issued it for client use too).

Exit status: 0 serving; 1 not serving, unreachable or refused; 2 bad settings or arguments.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_broker.settings import BrokerSettings, load_broker_settings, split_host_port
from ridgeline_core.client import TlsOptions
from ridgeline_core.errors import ConfigError
from ridgeline_core.transport import channel_options

SERVICE = "ridgeline.v1.Broker"
_ANY_ADDRESS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class ProbeError(Exception):
    """Why the broker is not healthy, in one line."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    ca_file: Path | None = None  # None: plaintext (a loopback development broker)
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def target_from_settings(settings: BrokerSettings, args: argparse.Namespace) -> Target:
    host, port = split_host_port(settings.server.listen)
    if port == 0:
        raise ValueError(f"server.listen {settings.server.listen}: port 0 cannot be probed")
    host = _ANY_ADDRESS.get(host, host)
    tls = settings.tls
    if not tls.enabled:
        return Target(host, port)
    cert_file, key_file = args.cert_file, args.key_file
    if cert_file is None and tls.client_ca_file is not None:
        cert_file, key_file = tls.cert_file, tls.key_file
    return Target(host, port, args.ca_file or tls.cert_file, cert_file, key_file)


def served_name(target: Target, timeout_s: float) -> str:
    """The name gRPC should expect: the served certificate's first DNS name, else its first
    IP address, else its common name (gRPC reads the common name only without either)."""
    assert target.ca_file is not None
    context = ssl.create_default_context(cafile=str(target.ca_file))
    context.check_hostname = False  # the name is what this handshake is for
    context.set_alpn_protocols(["h2"])
    if target.cert_file is not None and target.key_file is not None:
        context.load_cert_chain(target.cert_file, target.key_file)
    try:
        with (
            socket.create_connection((target.host, target.port), timeout=timeout_s) as raw,
            context.wrap_socket(raw) as conn,
        ):
            cert: dict[str, Any] = dict(conn.getpeercert() or {})
    except ssl.SSLCertVerificationError as exc:
        raise ProbeError(
            f"{target.address}: certificate not trusted by {target.ca_file}: {exc.verify_message}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"{target.address}: TLS handshake failed: {exc}") from None
    for kind in ("DNS", "IP Address"):
        for key, value in cert.get("subjectAltName", ()):
            if key == kind:
                return str(value).strip()
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise ProbeError(f"{target.address}: the certificate names no host")


def check(target: Target, timeout_s: float) -> str:
    """The health status name of the broker's service; raises ProbeError if unreachable."""
    if target.ca_file is None:
        channel = grpc.insecure_channel(target.address)
    else:
        tls = TlsOptions(
            ca_file=target.ca_file,
            cert_file=target.cert_file,
            key_file=target.key_file,
            server_name=served_name(target, timeout_s),
        )
        channel = grpc.secure_channel(
            target.address, tls.credentials(), options=channel_options(server_name=tls.server_name)
        )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout_s)
        except grpc.RpcError as exc:
            raise ProbeError(f"{target.address}: {exc.code().name}: {exc.details()}") from None
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="broker.toml (default: as the broker finds it)")
    parser.add_argument("--ca-file", type=Path, help="CA of the broker's certificate")
    parser.add_argument("--cert-file", type=Path, help="client certificate under mutual TLS")
    parser.add_argument("--key-file", type=Path, help="its private key")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: 5)")
    args = parser.parse_args(argv)
    if (args.cert_file is None) != (args.key_file is None):
        parser.error("--cert-file and --key-file go together")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_broker_settings(config_file=args.config, env=os.environ).settings
        target = target_from_settings(settings, args)
    except (ConfigError, ValueError) as exc:
        print(f"health check: {exc}", file=sys.stderr)
        return 2
    try:
        status = check(target, args.timeout)
    except (ProbeError, ConfigError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{SERVICE} on {target.address}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
