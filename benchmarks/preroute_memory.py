"""Pre-route memory: does the similarity of a prompt to past judged prompts predict whether
the local answer will be right, better than the rule pre-route does?

Answers the train and test splits of ``datasets/ridgeline-qa-v1`` with the agent's default
model (SmolLM2-135M-Instruct) the way ``edge-agent eval`` does (the agent's system prompt,
greedy, ``--max-tokens 48``); on test it also runs the calibration's probes and keeps the
agent's full calibrated confidence. The observations are cached in
``benchmarks/results/preroute_observations.json`` (keyed by model, tokens and the dataset
files), so a rerun skips the model (~10 min the first time on 2 cores).

Then, with the all-MiniLM-L6-v2 embeddings of every prompt, the outcome memory is filled
with TRAIN outcomes only, and each TEST prompt is scored by

(a) the rule pre-route as it is today (length, task hints),
(b) the memory estimate alone (similarity-weighted k-NN, shrunk toward the base rate),
(c) the combined pre-route (``PreRoute.predict`` with the memory),
(d) the agent's full calibrated confidence after generating (for context: the ceiling a
    prompt-only score is compared with),

giving AUROC (right vs wrong local answers), CPT50, CPT80 and APGR of the routing curve with
an oracle strong model (``edge-agent eval --strong oracle``), next to the random router,
and how many test prompts each pre-route would skip at the default τ and skip margin (and
how many of those the local model answered right: each is a broker call not needed).

The memory's parameters and the combination weight are chosen here by 5-fold
cross-validation on TRAIN (each fold's prompts scored by a memory of the other folds); the
grid and its out-of-fold numbers are in the JSON. The test split is only scored.

    RIDGELINE_EDGE_MODELS__STORE_DIR=/tmp/st .venv/bin/edge-agent models build all-minilm-l6-v2
    .venv/bin/python benchmarks/preroute_memory.py --store /tmp/st [--refresh]

Results: the table on stdout (Markdown) and ``benchmarks/results/preroute_memory.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.agent import EdgeAgent  # noqa: E402
from edge_agent.evaluation import harness  # noqa: E402
from edge_agent.evaluation.dataset import load_dataset  # noqa: E402
from edge_agent.evaluation.metrics import (  # noqa: E402
    apgr,
    auroc,
    brier,
    cpt,
    random_router_baseline,
    routing_curve,
)
from edge_agent.knowledge.embeddings import Embedder  # noqa: E402
from edge_agent.knowledge.memory import Outcome, OutcomeMemory  # noqa: E402
from edge_agent.routing.policy import ThresholdPolicy  # noqa: E402
from edge_agent.routing.preroute import PreRoute, combine  # noqa: E402
from edge_agent.settings import (  # noqa: E402
    EdgeSettings,
    MemorySettings,
    PreRouteSettings,
    load_edge_settings,
)
from edge_agent.telemetry import Telemetry  # noqa: E402
from ridgeline_core.runtime import SamplingParams  # noqa: E402

DATA = ROOT / "datasets" / "ridgeline-qa-v1"
RESULTS = ROOT / "benchmarks" / "results"
OBSERVATIONS = RESULTS / "preroute_observations.json"
SPLITS = ("train", "test")
FOLDS = 5
CHUNK = 20  # answers between saves of the observation cache

# The cross-validation grid: the memory's k-NN, then the weight of its evidence.
GRID_K = (10, 20, 40, 80)
GRID_MIN_SIMILARITY = (0.0, 0.1, 0.2, 0.3, 0.4)
GRID_PRIOR = (0.5, 1.0, 2.0, 4.0)
GRID_WEIGHT = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)


# -- observing the model (cached) ------------------------------------------------------


def _cache_key(model: str, max_tokens: int) -> dict[str, Any]:
    digests = {s: hashlib.sha256((DATA / f"{s}.jsonl").read_bytes()).hexdigest() for s in SPLITS}
    return {"model": model, "max_tokens": max_tokens, "datasets": digests}


def observe(settings: EdgeSettings, max_tokens: int, refresh: bool) -> dict[str, Any]:
    """Per split: prompt, whether the local answer was right, and on test the agent's
    calibrated confidence. Read from the cache when it matches; saved every CHUNK answers,
    so an interrupted run resumes where it stopped."""
    name = settings.models.default
    key = _cache_key(name, max_tokens)
    out: dict[str, Any] = {"key": key}
    if not refresh and OBSERVATIONS.exists():
        cached = json.loads(OBSERVATIONS.read_text())
        if cached.get("key") == key:
            out = cached
    items = {split: load_dataset(DATA / f"{split}.jsonl") for split in SPLITS}
    if all(len(out.get(split, [])) == len(items[split]) for split in SPLITS):
        print(f"observations from {OBSERVATIONS.relative_to(ROOT)}", file=sys.stderr)
        return out
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with EdgeAgent(settings, background=False) as agent:
        runtime = agent.runtime(name)
        confidence = agent.confidence_for(name, runtime)
        out["confidence"] = confidence.describe()
        for split in SPLITS:
            rows = out.setdefault(split, [])
            # Only test needs the calibrated confidence, and so the probes.
            calibration = confidence.calibration
            probes = calibration.probes if split == "test" and calibration else set()
            started = time.perf_counter()
            todo = items[split][len(rows) :]
            for first in range(0, len(todo), CHUNK):
                observed = harness.observe(
                    runtime,
                    todo[first : first + CHUNK],
                    system_prompt=settings.generation.system_prompt,
                    params=params,
                    probes=set(probes),
                )
                for o in observed:
                    row: dict[str, Any] = {
                        "id": o.item.id,
                        "kind": o.item.kind,
                        "prompt": o.item.prompt,
                        "text": o.text,
                        "correct": o.correct,
                    }
                    if split == "test":
                        row["confidence"] = confidence.score(runtime, o.evidence).confidence
                    rows.append(row)
                OBSERVATIONS.write_text(json.dumps(out, indent=1) + "\n")
                seconds = time.perf_counter() - started
                done = len(rows)
                print(f"{split}: {done}/{len(items[split])} ({seconds:.0f} s)", file=sys.stderr)
    return out


# -- scoring -------------------------------------------------------------------------------


def embed(settings: EdgeSettings, prompts: list[str]) -> np.ndarray:
    embedder = Embedder(settings.embeddings, settings.models.catalog(), settings.models.store())
    try:
        return np.concatenate(
            [embedder.embed(prompts[i : i + 64]) for i in range(0, len(prompts), 64)]
        )
    finally:
        embedder.close()


def filled(
    settings: MemorySettings, rows: Sequence[dict[str, Any]], vectors: np.ndarray, model: str
) -> OutcomeMemory:
    """An in-process memory holding ``rows``' outcomes (their vectors given, nothing embedded)."""
    memory = OutcomeMemory(settings, _no_embedding, None)
    outcomes = [Outcome(r["prompt"], model, bool(r["correct"]), "calibration", 0.0) for r in rows]
    memory.extend(outcomes, vectors)
    return memory


def _no_embedding(texts: Sequence[str]) -> np.ndarray:
    raise AssertionError("the benchmark gives every vector")


def estimates(
    memory: OutcomeMemory, model: str, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The memory's P(right) and its base rate, per row of ``vectors``."""
    found = [memory.estimate(model, v) for v in vectors]
    probability, base = np.zeros(len(found)), np.zeros(len(found))
    for i, estimate in enumerate(found):
        assert estimate is not None  # min_outcomes = 1
        probability[i], base[i] = estimate.probability, estimate.base_rate
    return probability, base


def log_odds(rules: np.ndarray, mem: np.ndarray, base: np.ndarray, w: float) -> np.ndarray:
    """What ``PreRoute.predict`` does (``edge_agent.routing.preroute.combine``)."""
    return np.array([combine(r, m, b, w) for r, m, b in zip(rules, mem, base, strict=True)])


def linear(rules: np.ndarray, mem: np.ndarray, base: np.ndarray, w: float) -> np.ndarray:
    """The alternative: a blend of the two probabilities (w capped at 1)."""
    w = min(w, 1.0)
    return (1 - w) * rules + w * mem


# The two ways of combining that cross-validation compares; PreRoute implements log-odds.
COMBINATIONS = {"log-odds": log_odds, "linear": linear}


def cross_validate(
    rows: list[dict[str, Any]], vectors: np.ndarray, rules: np.ndarray, model: str, limit: float
) -> dict[str, Any]:
    """Out-of-fold memory estimates on TRAIN for every grid point, and the choice.

    The memory's parameters: the lowest out-of-fold log loss of its estimate (a proper
    score: the combination reads the estimate as a probability). The combination: log-odds
    by design (with no evidence the rules stand; see ``combine``), with the weight of the
    lowest out-of-fold log loss of the combined prediction, the number compared with
    τ - skip_margin. AUROC cannot choose the weight: the rules put almost every prompt at one
    level, so every weight > 0 ranks alike. The linear blend is scored for comparison."""
    y = np.array([r["correct"] for r in rows], dtype=bool)
    order = np.random.default_rng(0).permutation(len(rows))
    folds = [order[f::FOLDS] for f in range(FOLDS)]
    grid: list[dict[str, Any]] = []
    out_of_fold: list[tuple[np.ndarray, np.ndarray]] = []  # (estimate, base rate) per point
    for k, s0, prior in itertools.product(GRID_K, GRID_MIN_SIMILARITY, GRID_PRIOR):
        settings = MemorySettings(k=k, min_similarity=s0, prior=prior, min_outcomes=1)
        mem, base = np.zeros(len(rows)), np.zeros(len(rows))
        for held in folds:
            rest = np.setdiff1d(order, held)
            memory = filled(settings, [rows[i] for i in rest], vectors[rest], model)
            mem[held], base[held] = estimates(memory, model, vectors[held])
        grid.append({"k": k, "min_similarity": s0, "prior": prior, **scored(mem, y, None)})
        out_of_fold.append((mem, base))
    at = min(range(len(grid)), key=lambda i: float(grid[i]["log_loss"]))
    best, (mem, base) = grid[at], out_of_fold[at]
    weights = {
        name: [{"weight": w, **scored(mix(rules, mem, base, w), y, limit)} for w in GRID_WEIGHT]
        for name, mix in COMBINATIONS.items()
    }
    chosen = min(weights["log-odds"], key=lambda r: float(r["log_loss"]))
    return {
        "folds": FOLDS,
        "rules": scored(rules, y, limit),
        "memory": {key: best[key] for key in ("k", "min_similarity", "prior")},
        "memory_scores": {key: best[key] for key in ("auroc", "log_loss", "brier")},
        "weight": chosen["weight"],
        "combined": chosen,
        "weights": weights,
        "grid": grid,
    }


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def scored(p: np.ndarray, y: np.ndarray, limit: float | None) -> dict[str, float]:
    """AUROC, log loss, Brier; with ``limit``, what a pre-route skipping below it skips."""
    out = {"auroc": auroc(p, y), "log_loss": log_loss(p, y), "brier": brier(p, y)}
    if limit is not None:
        out.update(skips(p, y, limit))
    return out


def route_metrics(scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    strong = np.ones_like(y)
    local_acc, strong_acc = float(y.mean()), 1.0
    curve = routing_curve(scores, y, strong)
    return {
        "auroc": auroc(scores, y),
        "cpt50": cpt(curve, local_acc, strong_acc, 0.5),
        "cpt80": cpt(curve, local_acc, strong_acc, 0.8),
        "apgr": apgr(curve, local_acc, strong_acc),
    }


def skips(scores: np.ndarray, y: np.ndarray, limit: float) -> dict[str, int]:
    skipped = scores < limit
    return {"skipped": int(skipped.sum()), "skipped_right": int((skipped & y).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="model store (default: settings)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--refresh", action="store_true", help="observe again, ignore the cache")
    args = parser.parse_args()
    env = {}
    store = args.store or os.environ.get("RIDGELINE_TEST_STORE")
    if store:
        env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(store)
    settings = load_edge_settings(config_file=None, env=env).settings
    model = settings.models.default
    observed = observe(settings, args.max_tokens, args.refresh)
    train, test = observed["train"], observed["test"]
    started = time.perf_counter()
    vectors = embed(settings, [r["prompt"] for r in train + test])
    embed_s = time.perf_counter() - started
    v_train, v_test = vectors[: len(train)], vectors[len(train) :]
    y_train = np.array([r["correct"] for r in train], dtype=bool)
    y_test = np.array([r["correct"] for r in test], dtype=bool)

    tau = ThresholdPolicy(settings.policy).evaluate(Telemetry()).value
    limit = tau - settings.preroute.skip_margin
    rule_route = PreRoute(PreRouteSettings())  # the pre-route as shipped
    rules_train = np.array([rule_route.rules(r["prompt"])[0] for r in train])
    cv = cross_validate(train, v_train, rules_train, model, limit)
    print(
        f"cross-validated on train: memory {cv['memory']}, weight {cv['weight']}", file=sys.stderr
    )

    defaults = MemorySettings()
    if {**cv["memory"], "weight": cv["weight"]} != {
        key: getattr(defaults, key) for key in ("k", "min_similarity", "prior", "weight")
    }:
        print("note: the choice differs from MemorySettings' defaults", file=sys.stderr)
    memory_settings = MemorySettings(
        enabled=True, weight=cv["weight"], min_outcomes=1, **cv["memory"]
    )
    memory = filled(memory_settings, train, v_train, model)
    route = PreRoute(PreRouteSettings(memory=memory_settings), memory)
    predictions = [route.predict(r["prompt"], v, model) for r, v in zip(test, v_test, strict=True)]
    rules = np.array([p.rules for p in predictions])
    remembered = np.array([p.memory.probability for p in predictions])  # type: ignore[union-attr]
    combined = np.array([p.confidence for p in predictions])
    assert np.allclose(rules, [rule_route.predict(r["prompt"]).confidence for r in test])
    confidence = np.array([r["confidence"] for r in test])

    scorers = {
        "(a) rule pre-route (today)": (rules, True),
        "(b) memory estimate alone": (remembered, False),
        f"(c) rules + memory (log-odds, weight {memory_settings.weight:g})": (combined, True),
        "(d) calibrated confidence after generating": (confidence, False),
    }
    rows = []
    for label, (scores, is_preroute) in scorers.items():
        row: dict[str, Any] = {"scorer": label, **route_metrics(scores, y_test)}
        if is_preroute:
            row.update(skips(scores, y_test, limit))
        rows.append(row)
    baseline = random_router_baseline(y_test, np.ones_like(y_test))
    rows.append(
        {
            "scorer": "random router",
            "auroc": 0.5,
            "cpt50": baseline["cpt50"],
            "cpt80": baseline["cpt80"],
            "apgr": baseline["apgr"],
        }
    )

    print(
        f"\n{model} ({observed.get('confidence', '')}); max_tokens {args.max_tokens}; "
        f"memory: {len(train)} train outcomes (accuracy {y_train.mean():.3f}), "
        f"k={memory_settings.k}, min_similarity={memory_settings.min_similarity:g}, "
        f"prior={memory_settings.prior:g}; scored on test ({len(test)}, "
        f"accuracy {y_test.mean():.3f}); strong = oracle; "
        f"skips at τ {tau:.2f} - margin {settings.preroute.skip_margin:.2f}\n"
    )
    print("| scorer | AUROC | CPT50 | CPT80 | APGR | skipped | of them right locally |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        skipped = f"{r['skipped']}" if "skipped" in r else ""
        right = f"{r['skipped_right']}" if "skipped_right" in r else ""
        print(
            f"| {r['scorer']} | {r['auroc']:.3f} | {r['cpt50']:.3f} | {r['cpt80']:.3f} | "
            f"{r['apgr']:.3f} | {skipped} | {right} |"
        )
    print("\ntrain, 5-fold cross-validation (the choice of weight):\n")
    print("| combination | weight | AUROC | log loss | Brier | skipped | of them right |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    r = cv["rules"]
    print(
        f"| rules alone | | {r['auroc']:.3f} | {r['log_loss']:.3f} | {r['brier']:.3f} | "
        f"{r['skipped']} | {r['skipped_right']} |"
    )
    for name, table in cv["weights"].items():
        for r in table:
            if r["weight"] == 0 or (name == "linear" and r["weight"] > 1):
                continue  # the rules alone; the blend caps its weight at 1
            mark = " ←" if name == "log-odds" and r["weight"] == cv["weight"] else ""
            print(
                f"| {name}{mark} | {r['weight']:g} | {r['auroc']:.3f} | {r['log_loss']:.3f} | "
                f"{r['brier']:.3f} | {r['skipped']} | {r['skipped_right']} |"
            )
    out = RESULTS / "preroute_memory.json"
    out.write_text(
        json.dumps(
            _json_safe(
                {
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                    "command": " ".join(sys.argv),
                    "model": model,
                    "max_tokens": args.max_tokens,
                    "confidence": observed.get("confidence"),
                    "train": {"n": len(train), "accuracy": float(y_train.mean())},
                    "test": {"n": len(test), "accuracy": float(y_test.mean())},
                    "embedding_seconds": embed_s,
                    "tau": tau,
                    "skip_below": limit,
                    "memory": memory_settings.model_dump(mode="json"),
                    "test_results": rows,
                    "cross_validation": cv,
                }
            ),
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {out.relative_to(ROOT)}", file=sys.stderr)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


if __name__ == "__main__":
    main()
