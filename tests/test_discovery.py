"""Zeroconf advertisement of a broker: the pure TXT/name/fingerprint parts, and real mDNS.

Two end-to-end checks run real multicast: one on loopback inside this process (works on
Linux without privileges), and one between two network namespaces joined by a veth pair,
with the advertiser and the browser in separate processes, as on two hosts of one link.
The namespace test needs root (CAP_SYS_ADMIN) and skips, saying so, where that is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from certs import self_signed_pem
from cryptography.hazmat.primitives import hashes
from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

from cloud_broker.discovery import (
    INSTANCE_MAX_BYTES,
    PROTOCOL_VERSION,
    SERVICE_TYPE,
    TXT_STRING_MAX_BYTES,
    DiscoveredBroker,
    advertise,
    broker_from_info,
    browse,
    certificate_fingerprint,
    models_txt_value,
    sanitize_instance_name,
    txt_properties,
)
from ridgeline_core.errors import MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = "sha256:" + "ab" * 32


# --- pure parts -----------------------------------------------------------------------------


def test_models_txt_value_keeps_whole_names_within_one_txt_string() -> None:
    models = [f"model-{i:03d}-instruct-q4" for i in range(40)]
    value = models_txt_value(models)
    assert len(f"models={value}".encode()) <= TXT_STRING_MAX_BYTES
    kept = value.split(",")
    assert kept == models[: len(kept)]
    assert 5 < len(kept) < len(models)


def test_models_txt_value_skips_names_it_cannot_carry() -> None:
    too_long = "x" * 300
    assert models_txt_value(["a", "", "b,c", too_long, "d"]) == "a,d"


def test_txt_properties_encode_and_round_trip() -> None:
    models = ["smollm2-135m-instruct", "gemma3-270m", *(f"m{i:04d}" * 8 for i in range(30))]
    properties = txt_properties(models, FINGERPRINT)
    assert properties["proto"] == PROTOCOL_VERSION == "1"
    assert properties["tls"] == FINGERPRINT
    info = ServiceInfo(
        SERVICE_TYPE,
        f"Round trip.{SERVICE_TYPE}",
        port=50051,
        properties=dict(properties),
        server="round-trip.local.",
        parsed_addresses=["192.0.2.7", "2001:db8::7"],
    )
    # Each TXT string is a length byte and at most 255 bytes of key=value.
    pos = 0
    while pos < len(info.text):
        length = info.text[pos]
        assert length <= TXT_STRING_MAX_BYTES
        pos += 1 + length
    broker = broker_from_info(info)
    assert broker == DiscoveredBroker(
        instance="Round trip",
        host="round-trip.local.",
        addresses=("192.0.2.7", "2001:db8::7"),
        port=50051,
        protocol_version="1",
        models=tuple(properties["models"].split(",")),
        tls_fingerprint=FINGERPRINT,
        plaintext=False,
    )
    assert broker.models[:2] == ("smollm2-135m-instruct", "gemma3-270m")


def test_plaintext_and_garbage_tls_values_are_not_fingerprints() -> None:
    assert txt_properties(["a"], None)["tls"] == "off"
    with pytest.raises(ValueError, match="sha256"):
        txt_properties(["a"], "AB:CD")
    for tls, plaintext in (("off", True), ("sha256:nothex", False), ("md5:" + "0" * 32, False)):
        info = ServiceInfo(
            SERVICE_TYPE,
            f"x.{SERVICE_TYPE}",
            port=1,
            properties={"proto": "1", "tls": tls},
            server="x.local.",
            parsed_addresses=["192.0.2.1"],
        )
        broker = broker_from_info(info)
        assert broker.tls_fingerprint is None
        assert broker.plaintext is plaintext


def test_sanitize_instance_name() -> None:
    assert sanitize_instance_name("lab.gpu-1.example") == "lab gpu-1 example"
    assert sanitize_instance_name("  a\tb\x00c\x7f  ") == "a b c"
    long = "é" * 40  # 80 bytes; must not split a two-byte character
    cut = sanitize_instance_name(long)
    assert cut == "é" * (INSTANCE_MAX_BYTES // 2)
    assert len(cut.encode()) <= INSTANCE_MAX_BYTES <= 63
    odd = sanitize_instance_name("a" + "é" * 40)
    assert len(odd.encode()) <= INSTANCE_MAX_BYTES
    assert odd.encode().decode() == odd
    default = sanitize_instance_name(" . ")
    assert default.startswith("Ridgeline broker on ")
    assert "." not in default
    assert len(default.encode()) <= INSTANCE_MAX_BYTES


def test_certificate_fingerprint_matches_der_sha256() -> None:
    pem, cert = self_signed_pem("broker.test")
    expected = "sha256:" + cert.fingerprint(hashes.SHA256()).hex()
    assert certificate_fingerprint(pem) == expected
    other_pem, _ = self_signed_pem("intermediate.test")
    assert certificate_fingerprint(pem + other_pem) == expected  # leaf of a chain
    with pytest.raises(ValueError, match="PEM"):
        certificate_fingerprint(b"not a certificate")


@pytest.mark.parametrize(
    ("port", "addresses", "message"),
    [
        (0, ["192.0.2.1"], "port"),
        (50051, [], "at least one address"),
        (50051, ["0.0.0.0"], "wildcard"),
        (50051, ["::"], "wildcard"),
        (50051, ["broker.local"], "does not appear to be an IPv4 or IPv6 address"),
    ],
)
def test_advertise_rejects_bad_arguments_before_opening_sockets(
    port: int, addresses: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        advertise(instance="x", port=port, addresses=addresses, models=[], tls_fingerprint=None)


def test_missing_zeroconf_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeroconf", None)  # makes `import zeroconf` fail
    with pytest.raises(MissingDependencyError, match=r"ridgeline\[broker\]"):
        browse(1.0)
    with pytest.raises(MissingDependencyError, match="zeroconf"):
        advertise(instance="x", port=1, addresses=["192.0.2.1"], models=[], tls_fingerprint=None)


# --- real mDNS on loopback, in this process -------------------------------------------------


class _Events(ServiceListener):
    def __init__(self, name: str) -> None:
        self.name = name
        self.added = threading.Event()
        self.removed = threading.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        if name == self.name:
            self.added.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        if name == self.name:
            self.removed.set()


def test_browser_sees_loopback_advertisement_and_its_goodbye() -> None:
    instance = f"loopback test {os.getpid()}-{secrets.token_hex(3)}"
    ad = advertise(
        instance=instance,
        port=50051,
        addresses=["127.0.0.1"],
        models=["smollm2-135m-instruct", "gemma3-270m"],
        tls_fingerprint=FINGERPRINT,
        interfaces=["127.0.0.1"],
    )
    watcher = Zeroconf(interfaces=["127.0.0.1"], use_asyncio=False)
    try:
        assert ad.instance == instance
        found = [b for b in browse(1.5, interfaces=["127.0.0.1"]) if b.instance == instance]
        assert len(found) == 1
        broker = found[0]
        assert broker.port == 50051
        assert broker.addresses == ("127.0.0.1",)
        assert broker.protocol_version == "1"
        assert broker.models == ("smollm2-135m-instruct", "gemma3-270m")
        assert broker.tls_fingerprint == FINGERPRINT
        assert not broker.plaintext
        assert broker.host.endswith(".local.")

        events = _Events(ad.name)
        browser = ServiceBrowser(watcher, SERVICE_TYPE, listener=events)
        try:
            assert events.added.wait(5), "a long-lived browser never saw the service"
            ad.close()
            assert events.removed.wait(5), "no goodbye (Removed) after close()"
        finally:
            browser.cancel()
    finally:
        watcher.close()
        ad.close()
        ad.close()  # idempotent


# --- real mDNS between two network namespaces -----------------------------------------------

_ADVERTISER = """
import json, pathlib, sys, time
from cloud_broker.discovery import advertise
work = pathlib.Path(sys.argv[1])
def put(name, text):
    (work / f"{name}.tmp").write_text(text)
    (work / f"{name}.tmp").replace(work / name)
with advertise(
    instance="ns test", port=4242, addresses=["10.250.0.1"],
    models=["smollm2-135m-instruct", "gemma3-270m"],
    tls_fingerprint=sys.argv[2], interfaces=["10.250.0.1"],
) as ad:
    put("advertiser.json", json.dumps({"name": ad.name}))
    deadline = time.monotonic() + 60
    while not (work / "stop").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
"""

_BROWSER = """
import dataclasses, json, pathlib, sys, threading
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf
from cloud_broker.discovery import SERVICE_TYPE, browse
work = pathlib.Path(sys.argv[1])
def put(name, text):
    (work / f"{name}.tmp").write_text(text)
    (work / f"{name}.tmp").replace(work / name)
found = [dataclasses.asdict(b) for b in browse(2.0, interfaces=["10.250.0.2"])]
put("browse.json", json.dumps(found))
added, removed = threading.Event(), threading.Event()
class Events(ServiceListener):
    def add_service(self, zc, type_, name): added.set()
    def update_service(self, zc, type_, name): pass
    def remove_service(self, zc, type_, name): removed.set()
zc = Zeroconf(interfaces=["10.250.0.2"], use_asyncio=False)
browser = ServiceBrowser(zc, SERVICE_TYPE, listener=Events())
seen = added.wait(10)
put("watching", str(seen))
gone = seen and removed.wait(10)
browser.cancel()
zc.close()
sys.exit(0 if gone else 3)
"""


@dataclass(frozen=True)
class Link:
    advertiser_ns: str
    browser_ns: str


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=15)


@pytest.fixture
def link() -> Iterator[Link]:
    """Two namespaces, 10.250.0.1/24 and .2/24 on a veth pair, removed again in teardown."""
    pid = os.getpid()
    ns = Link(advertiser_ns=f"rl-adv-{pid}", browser_ns=f"rl-brw-{pid}")
    veth_a, veth_b = f"rla{pid}", f"rlb{pid}"
    try:
        added = _ip("netns", "add", ns.advertiser_ns)
    except FileNotFoundError:
        pytest.skip("iproute2 `ip` is not installed")
    if added.returncode != 0:
        if "not permitted" in added.stderr or "Permission denied" in added.stderr:
            pytest.skip(f"creating a network namespace is not permitted: {added.stderr.strip()}")
        pytest.fail(f"ip netns add failed: {added.stderr.strip()}")
    try:
        for args in (
            ("netns", "add", ns.browser_ns),
            ("link", "add", veth_a, "type", "veth", "peer", "name", veth_b),
            ("link", "set", veth_a, "netns", ns.advertiser_ns),
            ("link", "set", veth_b, "netns", ns.browser_ns),
            ("-n", ns.advertiser_ns, "addr", "add", "10.250.0.1/24", "dev", veth_a),
            ("-n", ns.browser_ns, "addr", "add", "10.250.0.2/24", "dev", veth_b),
            ("-n", ns.advertiser_ns, "link", "set", "lo", "up"),
            ("-n", ns.browser_ns, "link", "set", "lo", "up"),
            ("-n", ns.advertiser_ns, "link", "set", veth_a, "up"),
            ("-n", ns.browser_ns, "link", "set", veth_b, "up"),
            ("-n", ns.advertiser_ns, "route", "add", "224.0.0.0/4", "dev", veth_a),
            ("-n", ns.browser_ns, "route", "add", "224.0.0.0/4", "dev", veth_b),
        ):
            result = _ip(*args)
            assert result.returncode == 0, f"ip {' '.join(args)}: {result.stderr.strip()}"
        yield ns
    finally:
        # Deleting a namespace destroys the veth end inside it, and with it the peer.
        _ip("netns", "del", ns.browser_ns)
        _ip("netns", "del", ns.advertiser_ns)
        _ip("link", "del", veth_a)  # only exists if setup failed before moving it


def _spawn(ns: str, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"{path.name}: process exited {proc.returncode} first:\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear within {timeout_s} s")
        time.sleep(0.05)
    return path.read_text()


def test_browser_in_another_namespace_sees_advertisement_and_goodbye(
    link: Link, tmp_path: Path
) -> None:
    procs: list[subprocess.Popen[str]] = []
    try:
        advertiser = _spawn(link.advertiser_ns, _ADVERTISER, str(tmp_path), FINGERPRINT)
        procs.append(advertiser)
        name = json.loads(_wait_for(tmp_path / "advertiser.json", advertiser, 20))["name"]
        assert name == f"ns test.{SERVICE_TYPE}"

        browser = _spawn(link.browser_ns, _BROWSER, str(tmp_path))
        procs.append(browser)
        assert _wait_for(tmp_path / "watching", browser, 20) == "True"
        found = json.loads((tmp_path / "browse.json").read_text())
        assert found == [
            {
                "instance": "ns test",
                "host": found[0]["host"],
                "addresses": ["10.250.0.1"],
                "port": 4242,
                "protocol_version": "1",
                "models": ["smollm2-135m-instruct", "gemma3-270m"],
                "tls_fingerprint": FINGERPRINT,
                "plaintext": False,
            }
        ]

        (tmp_path / "stop").touch()  # the advertiser closes: goodbye
        _, err = advertiser.communicate(timeout=15)
        assert advertiser.returncode == 0, err
        _, err = browser.communicate(timeout=15)
        assert browser.returncode == 0, f"the browser saw no goodbye:\n{err}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
