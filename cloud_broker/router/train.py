"""Training the learned router from judged outcomes (JSONL, one line per prompt and model):

    {"prompt": "...", "model": "smollm2-135m-instruct", "correct": true,
     "prompt_tokens": 31, "completion_tokens": 5, "mean_logprob": -0.21, "min_logprob": -1.3}

``correct`` may be a score in [0, 1]; token counts and logprobs are optional; other keys are
ignored. Per model, a logistic head predicts P(correct) from the prompt's features (L2
strength chosen by 5-fold AUROC); with logprobs, a calibration maps them to P(correct).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ridgeline_core.errors import ConfigError

from .features import PROMPT_FEATURES, Featurizer
from .fit import fit_logistic, kfold_auroc

__all__ = ["Outcomes", "check_outcomes", "prompt_lists", "read_outcomes", "train_router"]

MIN_ROWS = 10  # per model
_L2 = (0.3, 1.0, 3.0, 10.0)


@dataclass
class Outcomes:
    """Judged outcomes grouped by model."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))


def read_outcomes(path: Path) -> Outcomes:
    """Each line checked; a bad one is named by its number."""
    outcomes = Outcomes()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"outcomes file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"outcomes file {path} cannot be read: {exc}") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            row = _row(path, number, line)
            outcomes.rows[row["model"]].append(row)
    if len(outcomes.rows) < 2:
        raise ConfigError(
            f"{path}: outcomes for {len(outcomes.rows)} model(s); a router needs at least 2"
        )
    return outcomes


def _row(path: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{path}:{number}"
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise ConfigError(f"{where}: not JSON: {exc}") from None
    if not isinstance(row, dict):
        raise ConfigError(f"{where}: each line must be a JSON object")
    if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
        raise ConfigError(f"{where}: 'prompt' must be a non-empty string")
    if not isinstance(row.get("model"), str) or not row["model"]:
        raise ConfigError(f"{where}: 'model' must be a model name")
    correct = row.get("correct")
    if not isinstance(correct, int | float) or not 0 <= correct <= 1:  # bool is an int
        raise ConfigError(f"{where}: 'correct' must be true, false or a number in [0, 1]")
    row["correct"] = float(correct)
    for key in ("mean_logprob", "min_logprob"):
        value = row.get(key)
        if value is not None and not (isinstance(value, int | float) and math.isfinite(value)):
            raise ConfigError(f"{where}: {key!r} must be a finite number")
    return row


def check_outcomes(outcomes: Outcomes) -> None:
    """Enough outcomes of both kinds for every model (before anything is embedded)."""
    for model, rows in sorted(outcomes.rows.items()):
        targets = np.asarray([row["correct"] for row in rows])
        if len(rows) < MIN_ROWS:
            raise ConfigError(
                f"model {model!r} has {len(rows)} outcomes; at least {MIN_ROWS} needed"
            )
        if targets.min() == targets.max():
            raise ConfigError(
                f"model {model!r} is judged {'correct' if targets[0] else 'wrong'} on every "
                "prompt: nothing to learn from"
            )


def prompt_lists(outcomes: Outcomes) -> list[list[str]]:
    """What :func:`train_router` embeds: each model's prompts, one ``featurizer.rows``
    call a model, in the order of its rows."""
    return [_prompts(rows) for _, rows in sorted(outcomes.rows.items())]


def _prompts(rows: list[dict[str, Any]]) -> list[str]:
    return [row["prompt"] for row in rows]


def train_router(
    outcomes: Outcomes, featurizer: Featurizer, encoder: dict[str, str], source: str
) -> dict[str, Any]:
    """The router file's body (see :mod:`.file`)."""
    check_outcomes(outcomes)
    heads, calibration, tokens = {}, {}, {}
    for model, rows in sorted(outcomes.rows.items()):
        targets = np.asarray([row["correct"] for row in rows])
        x = featurizer.rows(_prompts(rows))
        scored = {l2: kfold_auroc(x, targets, l2) for l2 in _L2}
        l2 = max(scored, key=lambda value: (scored[value], value))
        head = fit_logistic(x, targets, l2)
        heads[model] = {
            "weights": list(head.weights),
            "bias": head.bias,
            "l2": l2,
            "holdout_auroc": scored[l2],
            "rows": len(rows),
            "accuracy": float(targets.mean()),
        }
        tokens[model] = _mean_tokens(rows)
        if fitted := _calibration(rows):
            calibration[model] = fitted
    return {
        "models": sorted(heads),
        "encoder": encoder,
        "features": {"embedding_dim": featurizer.dim, "prompt": list(PROMPT_FEATURES)},
        "heads": heads,
        "calibration": calibration,
        "mean_tokens": tokens,
        "trained": {"outcomes": source, "rows": sum(h["rows"] for h in heads.values())},
    }


def _mean_tokens(rows: list[dict[str, Any]]) -> dict[str, float]:
    def mean(key: str) -> float:
        values = [row[key] for row in rows if isinstance(row.get(key), int | float)]
        return float(sum(values) / len(values)) if values else 0.0

    return {"prompt": mean("prompt_tokens"), "completion": mean("completion_tokens")}


def _calibration(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    usable = [
        r for r in rows if r.get("mean_logprob") is not None and r.get("min_logprob") is not None
    ]
    targets = np.asarray([r["correct"] for r in usable])
    if len(usable) < MIN_ROWS or targets.min() == targets.max():
        return None
    x = np.asarray([[r["mean_logprob"], r["min_logprob"]] for r in usable], dtype=np.float64)
    fitted = fit_logistic(x, targets, l2=0.1)
    return {
        "weights": list(fitted.weights),
        "bias": fitted.bias,
        "holdout_auroc": kfold_auroc(x, targets, 0.1),
        "rows": len(usable),
    }
