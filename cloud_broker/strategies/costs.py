"""What a member costs, what it may cost before it starts, and ``max_cost``.

Cost is tokens times the model's configured price (per 1000 prompt and completion tokens).
Before a member starts its cost is estimated from the prompt's characters and the request's
``max_tokens`` (an answer is never longer), so the estimate is an upper bound in practice; a
member starts only when what was spent, plus what running members may still spend, plus its
estimate stays within ``max_cost``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ridgeline_core.runtime import ChatMessage

from ..strategy_settings import PriceSettings

__all__ = ["Meter", "Prices", "estimate_prompt_tokens"]

_MESSAGE_TOKENS = 16  # per message: the chat template's role markers
_TEMPLATE_TOKENS = 48  # per prompt: a default system prompt the template may add


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """A generous prompt token count: three characters a token, plus the template."""
    chars = sum(len(m.content) for m in messages)
    return (chars + 2) // 3 + _MESSAGE_TOKENS * len(messages) + _TEMPLATE_TOKENS


class Prices:
    """The configured prices; a model without one costs nothing."""

    def __init__(self, prices: Mapping[str, PriceSettings]) -> None:
        self._prices = dict(prices)

    def per_1k(self, model: str) -> tuple[float, float]:
        price = self._prices.get(model)
        return (0.0, 0.0) if price is None else (price.prompt_per_1k, price.completion_per_1k)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        prompt, completion = self.per_1k(model)
        return (prompt * prompt_tokens + completion * completion_tokens) / 1000


@dataclass
class Meter:
    """Spending of one request against its ``max_cost`` (None: no limit)."""

    prices: Prices
    max_cost: float | None
    spent: float = 0.0
    reserved: dict[int, float] = field(default_factory=dict)  # running members' estimates

    def affordable(self, estimate: float) -> bool:
        if self.max_cost is None:
            return True
        return self.spent + sum(self.reserved.values()) + estimate <= self.max_cost + 1e-12

    def reserve(self, estimate: float) -> int:
        key = len(self.reserved) + 1
        while key in self.reserved:
            key += 1
        self.reserved[key] = estimate
        return key

    def settle(self, key: int, cost: float) -> None:
        self.reserved.pop(key, None)
        self.spent += cost
