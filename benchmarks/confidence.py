"""Confidence variants: how well each predicts that a local answer is right, and its cost.

Answers the train and test splits of ``datasets/ridgeline-qa-v1`` with SmolLM2-135M-Instruct
the way the agent does (its chat prompt and system prompt, greedy, ``--max-tokens``), runs
every probe (``short``, ``short2``, ``short3``: few-shot short answers; ``selfcheck``:
P(True)), then for each variant fits its calibrator on train and scores it on test:
AUROC, ECE, Brier, and the mean model time per answer the variant needs (the answer plus
the probes it reads). Variants are groups of ``edge_agent.confidence.features``; a
single-feature variant uses Platt scaling, the rest a logistic regression
(L2 = ``harness.LOGISTIC_L2``).

    .venv/bin/python benchmarks/confidence.py [--store DIR] [--limit N] [--max-tokens 64]

Results: the table on stdout (Markdown) and ``benchmarks/results/confidence.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.agent import EdgeAgent  # noqa: E402
from edge_agent.confidence.features import FEATURES, PROBES, probes_for  # noqa: E402
from edge_agent.evaluation import harness  # noqa: E402
from edge_agent.evaluation.calibration import LogisticCalibrator, PlattCalibrator  # noqa: E402
from edge_agent.evaluation.dataset import load_dataset  # noqa: E402
from edge_agent.evaluation.metrics import auroc, brier, ece  # noqa: E402
from edge_agent.settings import load_edge_settings  # noqa: E402
from ridgeline_core.runtime import SamplingParams  # noqa: E402


def group(name: str) -> tuple[str, ...]:
    return tuple(f for f, feature in FEATURES.items() if feature.group == name)


SPAN, PROMPT, PROBE = group("span"), group("prompt"), group("probe")
CONSISTENCY = group("consistency")
VARIANTS: list[tuple[str, tuple[str, ...]]] = [
    ("v0: mean margin, whole reply (Platt)", ("margin",)),
    ("whole-reply aggregates", group("whole")),
    ("answer span", SPAN),
    ("prompt features", PROMPT),
    ("answer span + prompt", SPAN + PROMPT),
    ("short-answer probe", PROBE),
    ("self-check P(True)", ("p_true_logit",)),
    ("three short probes", PROBE + CONSISTENCY),
    ("span + one probe", SPAN + PROBE),
    ("span + one probe + prompt (logistic-fast)", harness.FAST_FEATURES),
    ("span + three probes", SPAN + PROBE + CONSISTENCY),
    ("span + three probes + prompt (logistic, default)", harness.DEFAULT_FEATURES),
    ("default + self-check", (*harness.DEFAULT_FEATURES, "p_true_logit")),
    ("everything", tuple(FEATURES)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="model store (default: settings)")
    parser.add_argument("--limit", type=int, help="questions per split (quick runs)")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    env = {}
    store = args.store or os.environ.get("RIDGELINE_TEST_STORE")
    if store:
        env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(store)
    settings = load_edge_settings(config_file=None, env=env).settings
    data = ROOT / "datasets" / "ridgeline-qa-v1"
    splits = {
        name: load_dataset(data / f"{name}.jsonl")[: args.limit] for name in ("train", "test")
    }
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)
    observed = {}
    with EdgeAgent(settings, background=False) as agent:
        runtime = agent.runtime(settings.models.default)
        for name, items in splits.items():
            started = time.perf_counter()
            observed[name] = harness.observe(
                runtime, items, system_prompt=settings.generation.system_prompt,
                params=params, probes=set(PROBES),
            )  # fmt: skip
            print(f"{name}: {len(items)} answers in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
    train, test = observed["train"], observed["test"]
    y_train, y_test = harness.labels_of(train), harness.labels_of(test)
    rows = []
    for label, features in VARIANTS:
        x_train = harness.features_of(train, features)
        x_test = harness.features_of(test, features)
        if len(features) == 1:
            probs = PlattCalibrator().fit(x_train[:, 0], y_train).predict(x_test[:, 0])
        else:
            model = LogisticCalibrator(l2=harness.LOGISTIC_L2).fit(x_train, y_train)
            probs = model.predict(x_test)
        probes = probes_for(features)
        seconds = np.mean([o.seconds["answer"] + sum(o.seconds[p] for p in probes)
                           for o in test])  # fmt: skip
        answer_s = np.mean([o.seconds["answer"] for o in test])
        rows.append({
            "variant": label,
            "features": len(features),
            "probes": sorted(probes),
            "auroc": auroc(probs, y_test),
            "ece": ece(probs, y_test),
            "brier": brier(probs, y_test),
            "seconds_per_answer": float(seconds),
            "extra_seconds": float(seconds - answer_s),
        })  # fmt: skip
    print(f"\nSmolLM2-135M-Instruct, fitted on train ({len(train)}, accuracy "
          f"{y_train.mean():.3f}), scored on test ({len(test)}, "
          f"accuracy {y_test.mean():.3f})\n")  # fmt: skip
    print("| variant | features | AUROC | ECE | Brier | s/answer | extra s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['features']} | {r['auroc']:.3f} | {r['ece']:.3f} | "
              f"{r['brier']:.3f} | {r['seconds_per_answer']:.2f} | "
              f"{r['extra_seconds']:.2f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "confidence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "command": " ".join(sys.argv),
        "train": {"n": len(train), "accuracy": float(y_train.mean())},
        "test": {"n": len(test), "accuracy": float(y_test.mean())},
        "variants": rows,
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
