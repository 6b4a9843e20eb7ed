"""The fast lane's parts: a scripted model through the real store and runtime registry, a
scripted broker link, and a bag-of-words encoder, so the edge request pipeline's whole
decision matrix runs in-process in milliseconds (no model, no subprocess, no socket).

The real-model, real-process tests (test_escalation.py, test_daemon.py, ...) cover the same
user-facing paths end to end; these cover every branch of the decision cheaply.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent import EdgeAgent, EdgeSettings
from edge_agent.link.circuit import CircuitBreaker
from edge_agent.link.escalation import CloudAnswer, Draft, EscalationFailed, drain
from edge_agent.parts import CacheOpener, EdgeParts
from edge_agent.telemetry import StepReplaySource, TelemetrySampler, TelemetryTrace
from ridgeline_core.cancel import CancelToken
from ridgeline_core.runtime import ChatMessage, SamplingParams

SCRIPTED = "scripted-tiny"

EASY = "What is the capital of France?"
DOUBTFUL = "Is a tomato a fruit?"
STRAY = "Write a haiku about rust."  # goes badly from the start: early abort
HARD = "What is 17 times 23?"  # arithmetic: pre-route skips the local model

SCRIPT: dict[str, Any] = {
    "answers": [
        {"when": "capital of France", "text": "The capital of France is Paris.", "prob": 0.95},
        {"when": "tomato", "text": "No, a tomato is a vegetable.", "prob": 0.3},
        {
            "when": "haiku",
            "text": "a thread of life a thread of life a thread of life a thread",
            "probs": [0.3, 0.1, 0.05],
        },
        {"when": "17 times 23", "text": "17 times 23 is 381.", "prob": 0.4},
    ],
    "default": {"text": "I am not sure.", "prob": 0.5},
}


def write_scripted_model(root: Path, script: dict[str, Any] = SCRIPT, name: str = SCRIPTED) -> Path:
    """A manifest directory holding one scripted model (its script beside it)."""
    root.mkdir(parents=True, exist_ok=True)
    data = json.dumps(script).encode()
    (root / f"{name}.json").write_bytes(data)
    (root / f"{name}.toml").write_text(
        f'name = "{name}"\nruntime = "scripted"\nformat = "script"\nrole = "chat"\n'
        f'license = "Apache-2.0"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
        f"size = {len(data)}\ncontext_length = 512\n"
        f'[source]\nkind = "path"\npath = "{name}.json"\n',
        encoding="utf-8",
    )
    return root


def fast_settings(
    root: Path, script: dict[str, Any] = SCRIPT, **sections: dict[str, Any]
) -> EdgeSettings:
    """Settings for an agent over the scripted model, with everything on disk under ``root``
    and a fixed τ-neutral telemetry (no device sources)."""
    data: dict[str, Any] = {
        "models": {
            "store_dir": str(root / "store"),
            "manifest_dirs": [str(write_scripted_model(root / "manifests", script))],
            "default": SCRIPTED,
        },
        "generation": {"max_tokens": 32},
        "budget": {"state_file": str(root / "budget.json")},
        "telemetry": {"sources": []},
        "preroute": {"memory": {"enabled": False, "path": str(root / "memory.jsonl")}},
        "cache": {"path": str(root / "cache.sqlite")},
        "specialists": {"dir": str(root / "specialists")},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return EdgeSettings.model_validate(data)


@dataclass
class Call:
    messages: list[ChatMessage]
    params: SamplingParams
    draft: Draft | None
    deadline_s: float


@dataclass
class ScriptedLink:
    """A broker link that answers from a list of outcomes, in order: a text (streamed word
    by word), an :class:`EscalationFailed` (raised before any text), or ``("mid", text)``
    (some text, then a failure). It keeps a real circuit breaker."""

    outcomes: list[Any] = field(default_factory=lambda: ["Paris, says the broker."])
    model: str = "big-model"
    address: str = "scripted-broker"
    circuit: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(3, 30.0, 300.0))
    calls: list[Call] = field(default_factory=list)

    def available(self) -> tuple[bool, str]:
        state = self.circuit.state
        if state == "open":
            return False, f"broker circuit open after {self.circuit.last_error or 'failures'}"
        return True, state

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
        via: Any = None,
    ) -> Generator[str, None, CloudAnswer]:
        self.calls.append(Call(list(messages), params, draft, deadline_s))
        outcome = self.outcomes[min(len(self.calls), len(self.outcomes)) - 1]
        if isinstance(outcome, EscalationFailed):
            raise outcome
        failing = isinstance(outcome, tuple)
        text = outcome[1] if failing else outcome
        for word in re.findall(r"\S+\s*", text):
            if cancel is not None:
                cancel.check()
            yield word
        if failing:
            raise EscalationFailed("the stream broke", started=True, attempts=1, outage=True)
        return CloudAnswer(text, self.model, (self.model,), "stop", 10, 5, 0.01, 0.01, 0.02, 1)

    def escalate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
        via: Any = None,
    ) -> CloudAnswer:
        return drain(
            self.stream(messages, params, draft=draft, deadline_s=deadline_s, cancel=cancel)
        )

    def probe(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def open_circuit(self) -> None:
        for _ in range(3):
            self.circuit.allow()
            self.circuit.record_failure("connection refused")


class WordEncoder:
    """A sentence encoder stand-in: a unit bag-of-words vector (same words, same vector)."""

    name = "word-encoder"
    variant = "test"
    dimensions = 256

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.stack([self.embed_one(text) for text in texts])

    def embed_one(self, text: str) -> npt.NDArray[np.float32]:
        vector = np.zeros(self.dimensions, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dimensions] += 1
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def close(self) -> None:
        pass


def neutral_sampler(root: Path, rows: list[dict[str, Any]] | None = None) -> TelemetrySampler:
    """Telemetry replayed from ``rows`` (default: one neutral row)."""
    trace = root / f"trace-{time.monotonic_ns()}.jsonl"
    trace.write_text(
        "".join(json.dumps({"t": i, **row}) + "\n" for i, row in enumerate(rows or [{}]))
    )
    return TelemetrySampler([], overrides=StepReplaySource(TelemetryTrace.load(trace)))


def fast_agent(
    root: Path,
    link: ScriptedLink | None = None,
    *,
    rows: list[dict[str, Any]] | None = None,
    script: dict[str, Any] = SCRIPT,
    **sections: dict[str, Any],
) -> EdgeAgent:
    """An agent over the scripted model and ``link``; the model is pulled into its store."""
    settings = fast_settings(root, script, **sections)
    settings.models.store().pull(settings.models.catalog().get(SCRIPTED))
    parts = EdgeParts.from_settings(
        settings, sampler=neutral_sampler(root, rows), broker=link, background=False
    )
    encoder: Any = WordEncoder()
    parts = replace(parts, embedder=encoder, cache=CacheOpener(settings, encoder))
    return EdgeAgent(settings, parts=parts)


def events_of(agent: EdgeAgent, prompt: str, **options: Any) -> Iterator[Any]:
    return iter(list(agent.stream(prompt, **options)))
