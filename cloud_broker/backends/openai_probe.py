"""First-token probabilities from an OpenAI-compatible upstream: one token asked for with
``logprobs`` and ``top_logprobs``; a candidate's probability is the mass of the top tokens
that spell its start ("Yes", " yes", "Y" all count for "Yes"). A token outside the top
list is not seen, so probabilities are lower bounds; an upstream that returns no logprobs
cannot score (UnsupportedError)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from ridgeline_core.errors import UnsupportedError
from ridgeline_core.runtime import ChatMessage

from . import Probe

__all__ = ["TOP_LOGPROBS", "probe_of", "probe_payload"]

TOP_LOGPROBS = 20  # the most OpenAI's API returns


def probe_payload(model: str, messages: tuple[ChatMessage, ...]) -> bytes:
    return json.dumps(
        {
            "model": model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
            "stream": False,
        }
    ).encode()


def probe_of(
    body: Any, candidates: Sequence[str], name: str, messages: tuple[ChatMessage, ...]
) -> Probe:
    """Each candidate's probability from a completion ``body`` asked for by
    :func:`probe_payload`."""
    try:
        first = body["choices"][0]["logprobs"]["content"][0]
        top = first.get("top_logprobs") or [first]
    except (KeyError, IndexError, TypeError):
        raise UnsupportedError(
            f"model {name!r} cannot score answers: its upstream returns no logprobs"
        ) from None
    probs = []
    for candidate in candidates:
        wanted = candidate.strip().casefold()
        mass = 0.0
        for entry in top:
            token = str(entry.get("token", "")).strip().casefold()
            if token and wanted.startswith(token):
                mass += math.exp(float(entry.get("logprob", -math.inf)))
        probs.append(min(mass, 1.0))
    usage = body.get("usage") or {}
    prompt_tokens = usage.get("prompt_tokens")
    if not isinstance(prompt_tokens, int) or prompt_tokens <= 0:
        prompt_tokens = (sum(len(m.content) for m in messages) + 3) // 4
    return Probe(tuple(probs), prompt_tokens)
