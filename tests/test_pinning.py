"""Trusting a discovered broker: reading its certificate, enrolled fingerprints, first-use
pins, and the refusals; then a real TLS broker process found by hand and over loopback mDNS,
called through the project's client with the pinned certificate as its only root."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from certs import ServerIdentity, self_signed_pem, self_signed_server
from conftest import SMOLLM2

from cloud_broker.auth import TokenFile
from edge_agent import EdgeAgent, EdgeSettings
from edge_agent.link.certnames import certificate_names, expected_server_name
from edge_agent.link.pinning import (
    PinStore,
    TrustedBroker,
    discover_broker,
    fetch_certificate,
    resolve_discovered,
)
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, TlsOptions
from ridgeline_core.discovery import DiscoveredBroker, certificate_fingerprint
from ridgeline_core.store import ModelStore

BROKER_DNS_NAME = "ridgeline-broker.test"

# -- a TLS server to read certificates from ---------------------------------------------------


class TlsServer:
    """Completes TLS handshakes on 127.0.0.1 with one identity, then hangs up."""

    def __init__(self, identity: ServerIdentity) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(identity.cert_file, identity.key_file)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                with self.context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[TlsServer, ServerIdentity]]:
    identity = self_signed_server(tmp_path / "server", "broker-a", dns_names=[BROKER_DNS_NAME])
    server = TlsServer(identity)
    try:
        yield server, identity
    finally:
        server.close()


def _advert(
    port: int,
    *,
    instance: str = "lab broker",
    fingerprint: str | None = None,
    plaintext: bool = False,
    addresses: tuple[str, ...] = ("127.0.0.1",),
) -> DiscoveredBroker:
    return DiscoveredBroker(
        instance=instance,
        host="lab-1234.local.",
        addresses=addresses,
        port=port,
        protocol_version="1",
        models=(SMOLLM2,),
        tls_fingerprint=fingerprint,
        plaintext=plaintext,
    )


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port: int = sock.getsockname()[1]
    return port


def _no_fetch(host: str, port: int, timeout_s: float) -> bytes:
    raise AssertionError(f"no certificate may be fetched from {host}:{port}")


# -- fetch_certificate ------------------------------------------------------------------------


def test_fetch_certificate_reads_the_presented_leaf(
    tls_server: tuple[TlsServer, ServerIdentity],
) -> None:
    server, identity = tls_server
    pem = fetch_certificate("127.0.0.1", server.port, 5.0)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert certificate_fingerprint(pem) == identity.fingerprint


def test_fetch_certificate_errors_are_unavailable(tmp_path: Path) -> None:
    port = _closed_port()
    with pytest.raises(errors.UnavailableError, match=re.escape(f"127.0.0.1:{port}")):
        fetch_certificate("127.0.0.1", port, 2.0)

    # a TCP server that never speaks TLS: the handshake times out
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        with pytest.raises(errors.UnavailableError, match="timed out"):
            fetch_certificate("127.0.0.1", port, 0.5)

    # one that hangs up at once
    with socket.create_server(("127.0.0.1", 0)) as rude:
        port = rude.getsockname()[1]

        def hang_up() -> None:
            conn, _ = rude.accept()
            conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        with pytest.raises(errors.UnavailableError, match="cannot read the TLS certificate"):
            fetch_certificate("127.0.0.1", port, 5.0)
        thread.join(5)


# -- certificate names ------------------------------------------------------------------------


def test_expected_server_name_follows_grpc_name_checks() -> None:
    both, _ = self_signed_pem("cn.test", dns_names=["a.test", "b.test"], ip_addresses=["::1"])
    assert certificate_names(both).dns_names == ("a.test", "b.test")
    assert certificate_names(both).ip_addresses == ("::1",)
    assert certificate_names(both).common_name == "cn.test"
    assert expected_server_name(both) == "a.test"
    # gRPC ignores the CN once any subjectAltName exists, so an IP entry comes first
    ip_only, _ = self_signed_pem("cn.test", ip_addresses=["127.0.0.1"])
    assert expected_server_name(ip_only) == "127.0.0.1"
    cn_only, _ = self_signed_pem("brökér.test")
    assert expected_server_name(cn_only) == "brökér.test"
    nameless, _ = self_signed_pem(None)
    with pytest.raises(ValueError, match="names no host"):
        expected_server_name(nameless)
    with pytest.raises(ValueError, match="PEM"):
        expected_server_name(b"junk")


# -- PinStore ---------------------------------------------------------------------------------


def test_pin_store_persists_privately_and_never_overwrites_a_pin(tmp_path: Path) -> None:
    path = tmp_path / "state" / "brokers.json"
    store = PinStore(path)
    assert store.get("lab") is None
    assert store.items() == []
    assert not path.exists()
    pem_a, _ = self_signed_pem("a.test")
    pem_b, _ = self_signed_pem("b.test")
    pin = store.pin("lab\n broker", pem_a)
    assert pin.fingerprint == certificate_fingerprint(pem_a)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["brokers.json"], "no temporary left"
    again = PinStore(path)
    assert again.get("lab broker") == pin
    assert again.items() == [("lab broker", pin)]
    assert again.pin("lab broker", pem_a) == pin  # the same certificate: no change
    with pytest.raises(errors.ConfigError, match="already pinned"):
        again.pin("lab broker", pem_b)
    assert again.get("lab broker") == pin
    assert again.remove("lab broker") is True
    assert again.remove("lab broker") is False
    assert again.pin("lab broker", pem_b).fingerprint == certificate_fingerprint(pem_b)


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[]",
        '{"version": 1}',
        '{"version": 1, "brokers": {"lab": {"fingerprint": "md5:00", "pem": ""}}}',
        "TAMPERED",
    ],
)
def test_corrupt_pin_file_is_a_config_error_naming_it(tmp_path: Path, content: str) -> None:
    path = tmp_path / "brokers.json"
    if content == "TAMPERED":  # a valid layout whose pem is not the pinned certificate
        store = PinStore(path)
        store.pin("lab", self_signed_pem("a.test")[0])
        document = json.loads(path.read_text())
        document["brokers"]["lab"]["pem"] = self_signed_pem("b.test")[0].decode()
        content = json.dumps(document)
    path.write_text(content)
    with pytest.raises(errors.ConfigError, match=re.escape(str(path))):
        PinStore(path).get("lab")
    with pytest.raises(errors.ConfigError, match="corrupt"):
        resolve_discovered(
            [_advert(1)],
            enrolled=[],
            pins=PinStore(path),
            trust_on_first_use=True,
            fetch=lambda host, port, timeout_s: self_signed_pem("c.test")[0],
        )


# -- resolve_discovered -----------------------------------------------------------------------


def test_enrolled_fingerprint_is_trusted_without_pinning(
    tls_server: tuple[TlsServer, ServerIdentity], tmp_path: Path
) -> None:
    server, identity = tls_server
    pins = PinStore(tmp_path / "brokers.json")
    trusted = resolve_discovered(
        [_advert(server.port, fingerprint=identity.fingerprint)],
        enrolled=[identity.fingerprint.upper().replace("SHA256", "sha256")],
        pins=pins,
        trust_on_first_use=False,
    )
    assert trusted == TrustedBroker(
        address=f"127.0.0.1:{server.port}",
        instance="lab broker",
        fingerprint=identity.fingerprint,
        ca_pem=identity.pem,  # the presented leaf, to be gRPC's only root
        server_name=BROKER_DNS_NAME,
    )
    assert not pins.path.exists()


def test_trust_on_first_use_pins_then_refuses_another_certificate(
    tls_server: tuple[TlsServer, ServerIdentity],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, identity = tls_server
    pins_file = tmp_path / "state" / "brokers.json"
    advert = _advert(server.port, fingerprint=identity.fingerprint)
    with caplog.at_level(logging.WARNING, logger="edge_agent.link.pinning"):
        first = resolve_discovered(
            [advert], enrolled=[], pins=PinStore(pins_file), trust_on_first_use=True
        )
    assert first is not None
    assert first.fingerprint == identity.fingerprint
    assert "on first use" in caplog.text
    assert stat.S_IMODE(pins_file.stat().st_mode) == 0o600
    stored = json.loads(pins_file.read_text())["brokers"]["lab broker"]
    assert stored["fingerprint"] == identity.fingerprint
    assert stored["pem"].encode() == first.ca_pem

    # a later run, in a fresh store object: the pin is what makes it trusted
    again = resolve_discovered(
        [advert], enrolled=[], pins=PinStore(pins_file), trust_on_first_use=False
    )
    assert again == first

    # the same name now presents another certificate (and advertises it consistently)
    impostor = self_signed_server(tmp_path / "impostor", "broker-b", dns_names=[BROKER_DNS_NAME])
    other = TlsServer(impostor)
    caplog.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="edge_agent.link.pinning"):
            refused = resolve_discovered(
                [_advert(other.port, fingerprint=impostor.fingerprint)],
                enrolled=[],
                pins=PinStore(pins_file),
                trust_on_first_use=True,
            )
    finally:
        other.close()
    assert refused is None
    assert "impersonation" in caplog.text
    assert impostor.fingerprint in caplog.text
    assert PinStore(pins_file).get("lab broker") is not None
    assert json.loads(pins_file.read_text())["brokers"]["lab broker"] == stored, "not re-pinned"


def test_advertised_fingerprint_that_disagrees_is_skipped(
    tls_server: tuple[TlsServer, ServerIdentity],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, identity = tls_server
    pins = PinStore(tmp_path / "brokers.json")
    with caplog.at_level(logging.WARNING, logger="edge_agent.link.pinning"):
        trusted = resolve_discovered(
            [_advert(server.port, fingerprint="sha256:" + "ab" * 32)],
            enrolled=[identity.fingerprint],  # even an enrolled certificate
            pins=pins,
            trust_on_first_use=True,
        )
    assert trusted is None
    assert "presents " + identity.fingerprint in caplog.text
    assert not pins.path.exists()


def test_plaintext_advertisement_is_never_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_agent.link.pinning"):
        trusted = resolve_discovered(
            [_advert(50051, plaintext=True)],
            enrolled=[],
            pins=PinStore(tmp_path / "brokers.json"),
            trust_on_first_use=True,
            fetch=_no_fetch,
        )
    assert trusted is None
    assert "advertises no TLS" in caplog.text


def test_nothing_enrolled_and_no_first_use_trust_is_none(
    tls_server: tuple[TlsServer, ServerIdentity],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, identity = tls_server
    pins = PinStore(tmp_path / "brokers.json")
    with caplog.at_level(logging.WARNING, logger="edge_agent.link.pinning"):
        trusted = resolve_discovered(
            [_advert(server.port, fingerprint=identity.fingerprint)],
            enrolled=[],
            pins=pins,
            trust_on_first_use=False,
        )
    assert trusted is None
    assert "not enrolled" in caplog.text
    assert not pins.path.exists()


def test_a_known_broker_wins_over_a_new_name_and_only_it_is_used(
    tls_server: tuple[TlsServer, ServerIdentity], tmp_path: Path
) -> None:
    server, identity = tls_server
    pins = PinStore(tmp_path / "brokers.json")
    pins.pin("lab broker", identity.pem)
    stranger = self_signed_server(tmp_path / "stranger", "stranger")
    other = TlsServer(stranger)
    try:
        trusted = resolve_discovered(
            [
                _advert(other.port, instance="fresh name"),
                # nothing listens on 127.0.0.2 (the server is bound to 127.0.0.1 only)
                _advert(server.port, addresses=("127.0.0.2", "127.0.0.1")),
            ],
            enrolled=[],
            pins=pins,
            trust_on_first_use=True,
        )
    finally:
        other.close()
    assert trusted is not None
    assert trusted.instance == "lab broker"
    assert trusted.address == f"127.0.0.1:{server.port}"  # after the dead address
    assert pins.get("fresh name") is None, "nothing new is pinned when a known broker answers"


def test_unanswered_and_malformed_advertisements_are_skipped(tmp_path: Path) -> None:
    pins = PinStore(tmp_path / "brokers.json")
    adverts = [
        _advert(_closed_port()),
        replace(_advert(1), protocol_version="2"),
        _advert(0),
        _advert(1, addresses=()),
        _advert(1, instance="\x00 \t"),
    ]
    calls: list[tuple[str, int]] = []

    def fetch(host: str, port: int, timeout_s: float) -> bytes:
        calls.append((host, port))
        return fetch_certificate(host, port, timeout_s)

    assert (
        resolve_discovered(adverts, enrolled=[], pins=pins, trust_on_first_use=True, fetch=fetch)
        is None
    )
    assert calls == [("127.0.0.1", adverts[0].port)]
    assert not pins.path.exists()


def test_enrolled_entries_must_be_fingerprints(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match=r"broker\.enrolled"):
        resolve_discovered(
            [],
            enrolled=["AB:CD:EF"],
            pins=PinStore(tmp_path / "brokers.json"),
            trust_on_first_use=False,
        )


# -- a real broker process --------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoverableBroker:
    process: BrokerProcess
    identity: ServerIdentity
    token: str
    instance: str
    port: int


@pytest.fixture(scope="module")
def discoverable_broker(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DiscoverableBroker]:
    """`cloud-broker serve` with a self-signed certificate, advertising itself on loopback."""
    root = tmp_path_factory.mktemp("discoverable-broker")
    identity = self_signed_server(root / "tls", "broker", dns_names=[BROKER_DNS_NAME])
    tokens_file = root / "tokens.json"
    token = TokenFile(tokens_file).add("device-1")
    instance = f"pinning test {os.getpid()}-{secrets.token_hex(3)}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(model_store.root),
        RIDGELINE_BROKER_METRICS__LISTEN="",
    )
    config = f"""
[server]
listen = "127.0.0.1:0"
[tls]
cert_file = "{identity.cert_file}"
key_file = "{identity.key_file}"
[auth]
tokens_file = "{tokens_file}"
[models]
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[discovery]
enabled = true
instance = "{instance}"
"""
    process = BrokerProcess(["serve"], env, config=config, tmp_path=root)
    try:
        port = int(process.address.rpartition(":")[2])
        yield DiscoverableBroker(process, identity, token, instance, port)
    finally:
        process.stop()


def _list_models(trusted: TrustedBroker, token: str, tmp_path: Path) -> list[str]:
    ca_file = tmp_path / f"pinned-{secrets.token_hex(3)}.pem"
    ca_file.write_bytes(trusted.ca_pem)
    tls = TlsOptions(ca_file=ca_file, server_name=trusted.server_name)
    with BrokerClient(trusted.address, tls=tls, token=token, timeout_s=30) as client:
        return [model.name for model in client.list_models().models]


@pytest.mark.model
def test_first_use_pin_of_a_real_broker_is_what_grpc_verifies(
    discoverable_broker: DiscoverableBroker, tmp_path: Path
) -> None:
    broker = discoverable_broker
    advert = _advert(broker.port, instance=broker.instance, fingerprint=broker.identity.fingerprint)
    trusted = resolve_discovered(
        [advert], enrolled=[], pins=PinStore(tmp_path / "brokers.json"), trust_on_first_use=True
    )
    assert trusted is not None
    assert trusted.fingerprint == broker.identity.fingerprint
    assert trusted.server_name == BROKER_DNS_NAME
    assert SMOLLM2 in _list_models(trusted, broker.token, tmp_path)

    # gRPC itself checks the key: another certificate under the same name is refused
    other_pem, _ = self_signed_pem("broker", dns_names=[BROKER_DNS_NAME])
    wrong = replace(trusted, ca_pem=other_pem)
    with pytest.raises(errors.UnavailableError):
        _list_models(wrong, broker.token, tmp_path)


@pytest.mark.model
def test_discover_broker_finds_and_trusts_a_real_broker_over_loopback_mdns(
    discoverable_broker: DiscoverableBroker, tmp_path: Path
) -> None:
    broker = discoverable_broker
    assert f"advertised {broker.instance}." in broker.process.stderr()
    pins = PinStore(tmp_path / "brokers.json")
    trusted = discover_broker(
        timeout_s=1.5,
        enrolled=[broker.identity.fingerprint],
        pins=pins,
        trust_on_first_use=False,
        interfaces=["127.0.0.1"],
    )
    assert trusted is not None, "the advertised broker was not found or not trusted"
    assert trusted.instance == broker.instance
    assert trusted.address == f"127.0.0.1:{broker.port}"
    assert SMOLLM2 in _list_models(trusted, broker.token, tmp_path)
    assert not pins.path.exists()


@pytest.mark.model
def test_the_agent_escalates_to_a_discovered_enrolled_broker(
    discoverable_broker: DiscoverableBroker, model_store: ModelStore, tmp_path: Path
) -> None:
    broker = discoverable_broker
    common = {
        "models": {"store_dir": str(model_store.root)},
        "generation": {"max_tokens": 8},
        "budget": {"state_file": str(tmp_path / "budget.json")},
        "telemetry": {"sources": []},
    }
    discovery = {
        "discover": True,
        "discover_interfaces": ["127.0.0.1"],
        "discover_timeout_s": 4.0,  # mDNS on a loaded 2-core CI machine took over 1.5 s once
        "token": broker.token,
        "device_id": "device-1",
        "pins_file": str(tmp_path / "brokers.json"),
    }
    trusted = EdgeSettings.model_validate(
        {**common, "broker": {**discovery, "enrolled": [broker.identity.fingerprint]}}
    )
    with EdgeAgent(trusted, background=False) as agent:
        answer = agent.ask("What is the capital of France?", mode="cloud")
    assert answer.source == "cloud", answer.decision.reason
    assert answer.decision.broker is not None
    assert answer.decision.broker.address == f"127.0.0.1:{broker.port}"

    # Nothing enrolled, no first-use pinning: the advert alone is not trusted.
    untrusted = EdgeSettings.model_validate({**common, "broker": discovery})
    with EdgeAgent(untrusted, background=False) as agent:
        answer = agent.ask("What is the capital of France?", mode="cloud")
    assert answer.source == "local-degraded"
    assert "no trusted broker was discovered" in answer.decision.reason
