"""The broker link, set up on first use: by address, or by zeroconf discovery and pins.

An agent asks :meth:`BrokerConnector.link` for the link when a request may escalate, so a
device that never escalates never connects. A broker that could not be set up (discovery
found none, a TLS file is missing) is retried after ``RETRY_S``; meanwhile
:meth:`state` says why there is no link, for the route decision.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ridgeline_core.client import BrokerClient, TlsOptions
from ridgeline_core.errors import RidgelineError

from ..routing.route import LinkState
from ..settings import EdgeSettings, state_dir
from ..telemetry.meters import BrokerHealth
from .answers import BrokerVia
from .escalation import BrokerLink, Escalator

__all__ = ["RETRY_S", "BrokerConnector", "link_state", "open_link"]

RETRY_S = 30.0  # a broker that could not be set up is tried again after this long

NOT_CONFIGURED = "no broker is configured (broker.address)"


class BrokerConnector:
    """Owns the one broker link of an agent (or a link given to it, such as a dry run's)."""

    def __init__(
        self,
        settings: EdgeSettings,
        health: BrokerHealth,
        *,
        on_change: Callable[[], None],
        background: bool,
        link: BrokerLink | None = None,
    ) -> None:
        self._settings = settings
        self._health = health
        self._on_change = on_change  # the link's telemetry changed: refresh the snapshot
        self._background = background  # probe an open circuit in the background
        self._link = link
        self._missing: str | None = None  # why there is no link, once known
        self._failed_at: float | None = None  # set when setting up failed: retry later
        self._lock = threading.Lock()

    def link(self) -> BrokerLink | None:
        """The link, set up on first use; None when there is none (see :attr:`missing`)."""
        with self._lock:
            failed_at = self._failed_at
            if failed_at is not None and time.monotonic() - failed_at > RETRY_S:
                self._missing = self._failed_at = None  # try again
            if self._link is None and self._missing is None:
                try:
                    self._link = open_link(
                        self._settings, self._health, self._on_change, self._background
                    )
                    if self._link is None:
                        self._missing = NOT_CONFIGURED
                except RidgelineError as exc:
                    self._missing = f"broker unusable: {exc}"
                    self._failed_at = time.monotonic()
            return self._link

    @property
    def missing(self) -> str | None:
        """Why there is no link (None while there is one, or before the first try)."""
        return self._missing

    @property
    def failed(self) -> bool:
        """True when a broker is configured (or discovery is on) but could not be used."""
        return self._failed_at is not None

    def state(self) -> LinkState:
        """What the link allows now, for :func:`~edge_agent.routing.route.route`."""
        link = self.link()
        if link is None:
            return LinkState("unusable" if self.failed else "none", self._missing or "no broker")
        return link_state(link)

    def close(self) -> None:
        with self._lock:
            if self._link is not None:
                self._link.close()


def link_state(link: BrokerLink) -> LinkState:
    """What a link's circuit allows now: ready, half-open (one trial) or open (and why)."""
    ok, why = link.available()
    if not ok:
        return LinkState("open", why)
    return LinkState("half-open" if why == "half-open" else "ready")


def open_link(
    settings: EdgeSettings,
    health: BrokerHealth,
    on_change: Callable[[], None],
    background: bool,
) -> BrokerLink | None:
    """The configured broker's link (None when no broker is configured): by address, or
    found by discovery and trusted by pin. RidgelineError when it cannot be set up."""
    b = settings.broker
    address, tls = b.address, None
    if not address and b.discover:
        address, tls = _discover(settings)
    elif not address:
        return None
    elif not b.plaintext:
        tls = TlsOptions(b.ca_file, b.cert_file, b.key_file, b.server_name)
    client = BrokerClient(
        address,
        token=None if b.plaintext else b.read_token(),
        tls=tls,
        plaintext=b.plaintext and tls is None,
        timeout_s=settings.escalation.deadline_s,
    )
    escalator = Escalator(
        client,
        settings.escalation,
        health,
        address=address,
        model=b.model,
        device_id=b.device_id,
        on_change=on_change,
        via=BrokerVia(b.strategy, b.max_cost or None),
    )
    if background:
        escalator.start_probing()
    return escalator


def _discover(settings: EdgeSettings) -> tuple[str, TlsOptions]:
    from .pinning import PinStore, discover_broker

    b = settings.broker
    pins = PinStore(b.pins_file or state_dir() / "brokers.json")
    found = discover_broker(
        timeout_s=b.discover_timeout_s,
        enrolled=b.enrolled,
        pins=pins,
        trust_on_first_use=b.trust_on_first_use,
        interfaces=b.discover_interfaces or None,
    )
    if found is None:
        raise RidgelineError("no trusted broker was discovered on the local network")
    tls = TlsOptions(
        ca_pem=found.ca_pem,
        cert_file=b.cert_file,
        key_file=b.key_file,
        server_name=found.server_name,
    )
    return found.address, tls
