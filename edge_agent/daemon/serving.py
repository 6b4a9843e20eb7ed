"""What a request passes through in the daemon: admission (slots and a queue), the count
of requests in flight, the worker threads, the metrics, and the dispatcher over them.

Built once per daemon: a reload resizes the admission and swaps the agent behind
``agent``, but keeps these, so requests running across a reload are still counted.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from ..agent import EdgeAgent
from ..settings import DaemonSettings
from .admission import Admission
from .dispatch import Dispatcher
from .inflight import InFlight
from .metrics import DaemonMetrics

__all__ = ["Serving"]


class Serving:
    def __init__(self, agent: Callable[[], EdgeAgent], daemon: DaemonSettings) -> None:
        self.admission = Admission(daemon.slots, daemon.queue)
        self.in_flight = InFlight(self.admission)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=64, thread_name_prefix="ridgeline-request"
        )
        self.metrics = DaemonMetrics(agent, self.admission)
        self.dispatcher = Dispatcher(
            agent,
            self.in_flight,
            self._executor,
            self.metrics.record,
            lambda: self.metrics.record_error("cancelled"),
        )

    def close(self) -> None:
        """Take no more work; queued work is cancelled (the drain has waited for it)."""
        self._executor.shutdown(wait=False, cancel_futures=True)
