"""The strategy seam: what a strategy yields, what it records, and the interface.

A strategy runs one request over the backends and yields :class:`Text` pieces (what the
client sees, attributed to the model that wrote it), then exactly one
:class:`StrategyOutcome`: how it finished, who answered, and a :class:`Member` record for
every model that ran (answer, sample, verifier, aggregator, or the device's draft). Models
are run through a :class:`~cloud_broker.strategies.members.Call`, which admits them to the
model's slots, charges the device's rate budget, prices them and respects ``max_cost``.
No protobuf here: :mod:`cloud_broker.wire` converts.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ridgeline_core.runtime import FinishReason

if TYPE_CHECKING:
    from .members import Call

__all__ = ["Member", "Strategy", "StrategyOutcome", "Text", "Verdict"]


@dataclass(frozen=True)
class Text:
    """A piece of the answer and the model that wrote it."""

    text: str
    model: str


@dataclass
class Member:
    """One model's part in an answer (``role``: answer, sample, verifier, aggregator,
    draft)."""

    model: str
    role: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency_ms: float = 0.0
    score: float | None = None
    vote: str = ""
    accepted: bool = False
    note: str = ""


@dataclass(frozen=True)
class Verdict:
    """The broker's judgement of the device's draft."""

    accepted: bool
    score: float
    verifier: str


@dataclass
class StrategyOutcome:
    """How a strategy's answer ended, and everything that ran for it."""

    finish_reason: FinishReason
    answer_model: str
    kind: str  # single, route, cascade, ensemble
    name: str = ""  # the configured strategy's name
    members: list[Member] = field(default_factory=list)
    verdict: Verdict | None = None
    notes: list[str] = field(default_factory=list)
    queue_s: float = 0.0  # the first member's wait for a slot

    @property
    def cost(self) -> float:
        return sum(member.cost for member in self.members)

    @property
    def prompt_tokens(self) -> int:
        return sum(member.prompt_tokens for member in self.members)

    @property
    def completion_tokens(self) -> int:
        return sum(member.completion_tokens for member in self.members)

    @property
    def models_used(self) -> list[str]:
        """Each model that ran, once, in the order they first ran."""
        return list(dict.fromkeys(m.model for m in self.members if m.role != "draft"))


class Strategy(Protocol):
    """One way of answering over the backends, configured once, run per request."""

    kind: str
    name: str
    models: tuple[str, ...]

    def run(self, call: Call) -> AsyncGenerator[Text | StrategyOutcome, None]:
        """Text pieces, then one :class:`StrategyOutcome`."""
