"""One current :class:`Telemetry` snapshot, kept fresh off the request path.

Device sensors (sysfs, psutil, a subprocess on a Raspberry Pi) are read by a background
thread every ``interval_s``; the agent's own meters (local speed, broker health, budget)
are cheap and are folded in again whenever they record something (``refresh``). Requests
only call :meth:`TelemetrySampler.snapshot`, which returns a prebuilt immutable object:
no sensor reads and no locks on the hot path.

Precedence, lowest first: device sources, measured sources, the override (a replayed
trace). Every rebuild makes a new snapshot object, even with the same values: the
threshold policy advances its filter once per distinct snapshot, so a new reading must be
a new object or the filter would stall between changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from ridgeline_core.closing import Closing

from .snapshot import Reading, Telemetry, TelemetrySource, merge

__all__ = ["SnapshotBuilder", "TelemetrySampler"]

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 2.0  # a source mid-read (vcgencmd has a 1 s timeout) may delay the stop


class SnapshotBuilder:
    """Merges the sources' readings into one immutable snapshot, rebuilt on demand."""

    def __init__(
        self,
        device_sources: Sequence[TelemetrySource],
        *,
        measured: Sequence[TelemetrySource] = (),
        overrides: TelemetrySource | None = None,
        interval_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self.device_sources = tuple(device_sources)
        self.measured = tuple(measured)
        self.overrides = overrides
        self.interval_s = interval_s
        self._clock = clock
        self._snapshot = Telemetry()
        self._device: tuple[tuple[str, Reading], ...] = ()
        self._sampled = False
        self._lock = threading.Lock()  # serialises rebuilds; readers never take it
        self._warned: set[int] = set()
        # Called with each background sample, so that whatever follows the telemetry over
        # time (the threshold filter) advances with the clock, not only with requests.
        self.on_sample: Callable[[Telemetry], object] | None = None

    # -- the hot path ---------------------------------------------------------------

    def snapshot(self) -> Telemetry:
        """The current snapshot; the same object until a reading or ``refresh`` replaces it."""
        return self._snapshot

    # -- rebuilding -----------------------------------------------------------------

    def sample_now(self) -> None:
        """Read every source now (the first snapshot, one-shot commands)."""
        device = tuple(self._read(source) for source in self.device_sources)
        with self._lock:
            self._device = device
            self._sampled = True
            self._rebuild()

    def refresh(self) -> None:
        """Fold in the measured sources and the override again, keeping the last device
        reading; meters call this right after they record something."""
        with self._lock:
            self._rebuild()

    def _rebuild(self) -> None:
        readings = list(self._device)
        readings.extend(self._read(source) for source in self.measured)
        if self.overrides is not None:
            readings.append(self._read(self.overrides))
        self._snapshot = merge(readings, taken_at=self._clock())

    def _read(self, source: TelemetrySource) -> tuple[str, Reading]:
        return read_source(source, self._warned)


class TelemetrySampler(SnapshotBuilder, Closing):
    """A :class:`SnapshotBuilder` whose device readings a background thread keeps fresh."""

    _stop: threading.Event | None = None  # start() makes one for each run
    _thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Sample the device every ``interval_s`` in a daemon thread (no-op if running)."""
        if self.running:
            return
        if not self._sampled:
            self.sample_now()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="ridgeline-telemetry", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval_s):
            try:
                self.sample_now()
                if self.on_sample is not None:
                    self.on_sample(self._snapshot)
            except Exception:  # a bug in merging, not a sensor: log it, keep sampling
                logger.exception("telemetry sampling failed")

    def close(self) -> None:
        """Stop the thread; the last snapshot stays readable."""
        if self._stop is not None:
            self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)

    def __enter__(self) -> TelemetrySampler:
        """Starts sampling; leaving the block stops it."""
        self.start()
        return self


def read_source(source: TelemetrySource, warned: set[int]) -> tuple[str, Reading]:
    """A source that fails reads as empty: telemetry must never break answering. The
    first failure of a source is a warning (``warned`` remembers it), later ones debug."""
    try:
        return source.name, dict(source.read())
    except Exception:
        name = getattr(source, "name", type(source).__name__)
        if id(source) not in warned:
            warned.add(id(source))
            logger.warning("telemetry source %r failed; ignoring it", name, exc_info=True)
        else:
            logger.debug("telemetry source %r failed again", name, exc_info=True)
        return str(name), {}
