"""The broker in production mode over TLS and mutual TLS, with device tokens, as a real
process serving SmolLM2, called through the project's client; and the transport
settings the command line refuses before it loads anything."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from conftest import SMOLLM2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud_broker.auth import TokenFile
from ridgeline.v1 import broker_pb2
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, TlsOptions
from ridgeline_core.store import ModelStore

PROMPT = "What is the capital of France?"
CALL_TIMEOUT_S = 60.0
REFUSED_TIMEOUT_S = 15.0  # a refused handshake fails at once; this only bounds a hang


# -- certificates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert_file: Path
    key_file: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> Issued:
    cert_file = directory / f"{name}.crt"
    key_file = directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return Issued(cert_file, key_file, cert, key)


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_ca(directory: Path, name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(name, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(directory, name, cert, key)


def issue(directory: Path, ca: Issued, name: str, *, server: bool) -> Issued:
    """A leaf certificate signed by ``ca``: a server one for 127.0.0.1 and localhost,
    or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(name, ca.cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return _write(directory, name, builder.sign(ca.key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    other_ca: Issued
    stranger: Issued  # a client certificate from other_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ridgeline-test-ca")
    other_ca = make_ca(directory, "other-ca")
    return Pki(
        ca=ca,
        server=issue(directory, ca, "broker", server=True),
        client=issue(directory, ca, "device-1", server=False),
        other_ca=other_ca,
        stranger=issue(directory, other_ca, "stranger", server=False),
    )


# -- brokers ----------------------------------------------------------------------------------


def _env(model_store: ModelStore, root: Path) -> dict[str, str]:
    """The test's environment without Ridgeline settings or proxies, HOME inside ``root``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(model_store.root),
        RIDGELINE_BROKER_METRICS__LISTEN="127.0.0.1:0",
    )
    return env


def _tls_config(pki: Pki, tokens_file: Path, *, mutual: bool) -> str:
    client_ca = f'client_ca_file = "{pki.ca.cert_file}"\n' if mutual else ""
    return f"""
[server]
listen = "127.0.0.1:0"
[tls]
cert_file = "{pki.server.cert_file}"
key_file = "{pki.server.key_file}"
{client_ca}
[auth]
tokens_file = "{tokens_file}"
[models]
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[limits]
requests_per_minute = 0
tokens_per_minute = 0
"""


@dataclass
class TlsBroker:
    process: BrokerProcess
    token: str


def _start(pki: Pki, model_store: ModelStore, root: Path, *, mutual: bool) -> TlsBroker:
    tokens_file = root / "tokens.json"
    token = TokenFile(tokens_file).add("device-1")
    process = BrokerProcess(
        ["serve"],
        _env(model_store, root),
        config=_tls_config(pki, tokens_file, mutual=mutual),
        tmp_path=root,
    )
    return TlsBroker(process, token)


@pytest.fixture(scope="module")
def mtls_broker(
    smollm2_path: Path,
    pki: Pki,
    model_store: ModelStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TlsBroker]:
    """Production mode: mutual TLS with the test CA, one device token, SmolLM2 only."""
    broker = _start(pki, model_store, tmp_path_factory.mktemp("mtls-broker"), mutual=True)
    try:
        yield broker
    finally:
        broker.process.kill()


def _client_tls(pki: Pki, identity: Issued | None, *, ca: Issued | None = None) -> TlsOptions:
    return TlsOptions(
        ca_file=(ca or pki.ca).cert_file,
        cert_file=identity.cert_file if identity else None,
        key_file=identity.key_file if identity else None,
    )


def _events(
    address: str, tls: TlsOptions, token: str | None, timeout_s: float = CALL_TIMEOUT_S
) -> tuple[list[broker_pb2.GenerateResponse], errors.RidgelineError | None]:
    """Everything one Generate call streams, and the error that ended it (if any)."""
    received: list[broker_pb2.GenerateResponse] = []
    with BrokerClient(address, token=token, tls=tls, timeout_s=timeout_s) as client:
        try:
            for event in client.generate(PROMPT, max_tokens=8, temperature=0.0):
                received.append(event)
        except errors.RidgelineError as exc:
            return received, exc
    return received, None


def _assert_answered(events: list[broker_pb2.GenerateResponse]) -> None:
    deltas = [e.delta.text for e in events if e.HasField("delta")]
    results = [e.result for e in events if e.HasField("result")]
    assert deltas, "no text arrived"
    assert "".join(deltas).strip()
    assert len(results) == 1
    assert events[-1].HasField("result"), "the result comes last"
    result = results[0]
    assert result.finish_reason != broker_pb2.FINISH_REASON_UNSPECIFIED
    assert result.answer_model == SMOLLM2
    assert result.usage.completion_tokens >= 1


def _assert_handshake_refused(
    events: list[broker_pb2.GenerateResponse], error: errors.RidgelineError | None
) -> None:
    assert events == [], "no answer may arrive over a refused handshake"
    assert isinstance(error, errors.UnavailableError), error
    assert error.status == "UNAVAILABLE"


def _calls_seen(broker: BrokerProcess) -> float:
    """Calls that reached the broker's interceptors or service, as its metrics count them."""
    prefixes = ("ridgeline_broker_requests_total", "ridgeline_broker_errors_total")
    return sum(value for key, value in broker.metrics().items() if key.startswith(prefixes))


# -- mutual TLS -------------------------------------------------------------------------------


@pytest.mark.model
def test_mutual_tls_client_with_token_gets_a_streamed_answer(
    mtls_broker: TlsBroker, pki: Pki
) -> None:
    assert "(production, mutual TLS, device tokens)" in mtls_broker.process.stdout_lines[0]
    events, error = _events(
        mtls_broker.process.address, _client_tls(pki, pki.client), mtls_broker.token
    )
    assert error is None, error
    _assert_answered(events)


@pytest.mark.model
def test_mutual_tls_also_accepts_the_localhost_name(mtls_broker: TlsBroker, pki: Pki) -> None:
    port = mtls_broker.process.address.rpartition(":")[2]
    events, error = _events(f"localhost:{port}", _client_tls(pki, pki.client), mtls_broker.token)
    assert error is None, error
    _assert_answered(events)


@pytest.mark.model
def test_client_without_certificate_is_refused(mtls_broker: TlsBroker, pki: Pki) -> None:
    seen = _calls_seen(mtls_broker.process)
    events, error = _events(
        mtls_broker.process.address,
        _client_tls(pki, None),
        mtls_broker.token,
        timeout_s=REFUSED_TIMEOUT_S,
    )
    _assert_handshake_refused(events, error)
    assert _calls_seen(mtls_broker.process) == seen, "the call never reached the broker"


@pytest.mark.model
def test_client_certificate_from_another_ca_is_refused(mtls_broker: TlsBroker, pki: Pki) -> None:
    seen = _calls_seen(mtls_broker.process)
    events, error = _events(
        mtls_broker.process.address,
        _client_tls(pki, pki.stranger),
        mtls_broker.token,
        timeout_s=REFUSED_TIMEOUT_S,
    )
    _assert_handshake_refused(events, error)
    assert _calls_seen(mtls_broker.process) == seen, "the call never reached the broker"


@pytest.mark.model
@pytest.mark.parametrize("token", [None, "rl_not-a-real-token"], ids=["no-token", "wrong-token"])
def test_good_certificate_without_valid_token_is_unauthenticated(
    mtls_broker: TlsBroker, pki: Pki, token: str | None
) -> None:
    refused = 'ridgeline_broker_errors_total{code="UNAUTHENTICATED",kind="unauthenticated"}'
    before = mtls_broker.process.metrics().get(refused, 0.0)
    events, error = _events(mtls_broker.process.address, _client_tls(pki, pki.client), token)
    assert events == []
    assert isinstance(error, errors.UnauthenticatedError), error
    assert error.status == "UNAUTHENTICATED"
    # past the handshake: the broker's token check refused it
    assert mtls_broker.process.metrics()[refused] == before + 1


@pytest.mark.model
def test_tampered_token_is_unauthenticated(mtls_broker: TlsBroker, pki: Pki) -> None:
    events, error = _events(
        mtls_broker.process.address, _client_tls(pki, pki.client), mtls_broker.token + "x"
    )
    assert events == []
    assert isinstance(error, errors.UnauthenticatedError), error
    assert error.status == "UNAUTHENTICATED"


# -- server-only TLS --------------------------------------------------------------------------


@pytest.mark.model
def test_tls_without_client_ca_accepts_a_client_without_certificate(
    smollm2_path: Path, pki: Pki, model_store: ModelStore, tmp_path: Path
) -> None:
    broker = _start(pki, model_store, tmp_path, mutual=False)
    try:
        assert "(production, TLS, device tokens)" in broker.process.stdout_lines[0]
        address = broker.process.address
        events, error = _events(address, _client_tls(pki, None), broker.token)
        assert error is None, error
        _assert_answered(events)
        # a client that does not trust the broker's CA refuses the server instead
        events, error = _events(
            address,
            _client_tls(pki, None, ca=pki.other_ca),
            broker.token,
            timeout_s=REFUSED_TIMEOUT_S,
        )
        _assert_handshake_refused(events, error)
    finally:
        broker.process.stop()


# -- transport settings the command line refuses ----------------------------------------------


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        pytest.param(
            '[server]\nlisten = "127.0.0.1:0"\n',
            ["serve"],
            "no TLS configured",
            id="production-without-tls",
        ),
        pytest.param(
            '[server]\nlisten = "0.0.0.0:0"\nallow_plaintext = true\n',
            ["serve"],
            "plaintext is only served on a loopback address",
            id="plaintext-off-loopback",
        ),
        pytest.param(
            None,
            ["serve", "--dev", "--listen", "0.0.0.0:0"],
            "0.0.0.0:0 is not a loopback address",
            id="dev-off-loopback",
        ),
        pytest.param(
            '[tls]\ncert_file = "/nonexistent/broker.crt"\n',
            ["serve"],
            "tls.cert_file and tls.key_file must be set together",
            id="cert-without-key",
        ),
    ],
)
def test_unsafe_transport_settings_are_refused(
    tmp_path: Path, config: str | None, args: list[str], message: str
) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        # nothing may be loaded before the refusal: point the store at an empty folder
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(tmp_path / "empty-store"),
        RIDGELINE_BROKER_METRICS__LISTEN="",
    )
    command = [sys.executable, "-m", "cloud_broker"]
    if config is not None:
        config_file = tmp_path / "broker.toml"
        config_file.write_text(config, encoding="utf-8")
        command += ["--config", str(config_file)]
    done = subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == "", "nothing was served"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert message in lines[0]
