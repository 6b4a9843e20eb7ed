"""Confidence variants: how well each predicts that a local answer is right, and its cost.

Answers the train and test splits of ``datasets/ridgeline-qa-v1`` with SmolLM2-135M-Instruct
the way the agent does (its chat prompt and system prompt, greedy, ``--max-tokens``), runs
every probe (``short``, ``short2``, ``short3``: few-shot short answers; ``samples``: two
sampled answers in the ``short`` frame; ``selfcheck``: P(True)), then for each variant fits
its calibrator on train and scores it on test.

Per variant: AUROC, ECE, Brier; the answer's own generation time (to its last token); the
probe time the variant needs and the probe overhead (probe time / generation time, per
question: median and p90); and the route quality with an oracle strong side (every
escalated answer right): CPT50 and CPT80 (the escalation rate that recovers 50% and 80% of
the gap) and APGR (area under the recovered gap). Lower CPT, higher APGR is better.

Probe time is measured on test, per question, for each way of running them: ``before``,
one generation per probe from its whole prompt (the path every runtime has); ``batched``,
the probes as sequences of one batch from the frames' kept KV states (llama.cpp,
``ridgeline_core.runtime.llama_short``), with one, two or three probes, and with the
samples. The answers are the
same either way (tests/test_short_answers.py), so a variant's AUROC does not depend on it.
A single-feature variant uses Platt scaling, the rest a logistic regression
(L2 = ``harness.LOGISTIC_L2``).

    .venv/bin/python benchmarks/confidence.py [--store DIR] [--limit N] [--max-tokens 64]

Results: the table on stdout (Markdown) and ``benchmarks/results/confidence.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.agent import EdgeAgent, chat_messages, run_local  # noqa: E402
from edge_agent.confidence.features import (  # noqa: E402
    FEATURES,
    SAMPLES,
    Evidence,
    feature_values,
    probes_for,
    run_probes,
    short_answers,
)
from edge_agent.confidence.scorers import margin  # noqa: E402
from edge_agent.evaluation import harness  # noqa: E402
from edge_agent.evaluation.calibration import LogisticCalibrator, PlattCalibrator  # noqa: E402
from edge_agent.evaluation.dataset import QAItem, load_dataset  # noqa: E402
from edge_agent.evaluation.matcher import is_correct  # noqa: E402
from edge_agent.evaluation.metrics import apgr, auroc, brier, cpt, ece, routing_curve  # noqa: E402
from edge_agent.settings import load_edge_settings  # noqa: E402
from ridgeline_core.runtime import Runtime, SamplingParams  # noqa: E402


def group(name: str) -> tuple[str, ...]:
    return tuple(f for f, feature in FEATURES.items() if feature.group == name)


SPAN, PROMPT, PROBE = group("span"), group("prompt"), group("probe")
CONSISTENCY = group("consistency")
OLD_DEFAULT = harness.FAST_FEATURES + CONSISTENCY
TWO = ("agree2", "short2_geomean")
# (label, features, how the probes run: "batched" or "before")
VARIANTS: list[tuple[str, tuple[str, ...], str]] = [
    ("v0: mean margin, whole reply (Platt)", ("margin",), "batched"),
    ("whole-reply aggregates", group("whole"), "batched"),
    ("answer span + prompt (no probe)", SPAN + PROMPT, "batched"),
    ("self-check P(True) alone", ("p_true_logit",), "batched"),
    ("span + prompt + one probe, before", harness.FAST_FEATURES, "before"),
    ("span + prompt + one probe", harness.FAST_FEATURES, "batched"),
    ("span + prompt + one probe + 2 samples (cheap)", harness.CHEAP_FEATURES, "batched"),
    ("span + prompt + two probes", harness.FAST_FEATURES + TWO, "batched"),
    ("span + prompt + three probes, before (the old default)", OLD_DEFAULT, "before"),
    ("span + prompt + three probes", OLD_DEFAULT, "batched"),
    ("three probes + 2 samples (full)", harness.DEFAULT_FEATURES, "batched"),
    ("full + self-check", (*harness.DEFAULT_FEATURES, "p_true_logit"), "batched"),
    ("everything", tuple(FEATURES), "batched"),
]
THREE = ["short", "short2", "short3"]
# the ways the probes are timed: frames, and sampled answers in the first frame
SETS = {"1": (["short"], 0), "2": (["short", "short2"], 0), "3": (THREE, 0),
        "1s": (["short"], SAMPLES), "3s": (THREE, SAMPLES)}  # fmt: skip
BEFORE = ("1", "3")  # the old way: one generation per probe from its whole prompt


def _seconds(function: Any, *args: Any, **kwargs: Any) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def observe(runtime: Runtime, items: list[QAItem], system: str | None, params: SamplingParams,
            timing: bool) -> list[dict[str, Any]]:  # fmt: skip
    """Each question answered, probed, and (``timing``) its probes timed every way."""
    rows = []
    for item in items:
        started = time.perf_counter()
        run = run_local(runtime, chat_messages(item.prompt, system), params)
        answer_s = time.perf_counter() - started
        evidence: Evidence = run.evidence(item.prompt)
        seconds = {"answer": answer_s}
        for key, (probes, samples) in SETS.items() if timing else ():
            seconds[f"batched{key}"] = _seconds(
                short_answers, runtime, item.prompt, probes, samples=samples
            )
        for key in BEFORE if timing else ():  # after the batched: they change the context
            probes, samples = SETS[key]
            seconds[f"before{key}"] = _seconds(
                short_answers, runtime, item.prompt, probes, samples=samples, batched=False
            )
        evidence = run_probes(runtime, evidence, {*THREE, "samples"})
        started = time.perf_counter()
        evidence = run_probes(runtime, evidence, {"selfcheck"})
        seconds["selfcheck"] = time.perf_counter() - started
        rows.append({"evidence": evidence, "correct": is_correct(run.text, item.answers),
                     "seconds": seconds})  # fmt: skip
    return rows


def probe_seconds(row: dict[str, Any], features: tuple[str, ...], how: str) -> float:
    probes = probes_for(features)
    shorts = len(probes & set(THREE))
    s = row["seconds"]
    key = f"{how}{shorts}{'s' if 'samples' in probes else ''}"
    return (s[key] if shorts else 0.0) + (s["selfcheck"] if "selfcheck" in probes else 0.0)


def route(probs: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    strong = np.ones_like(y)
    curve = routing_curve(probs, y, strong)
    local = float(y.mean())
    return cpt(curve, local, 1.0, 0.5), cpt(curve, local, 1.0, 0.8), apgr(curve, local, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="model store (default: settings)")
    parser.add_argument("--limit", type=int, help="questions per split (quick runs)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--observations", type=Path,
                        help="keep the answers and probes in this pickle, or read them from "
                        "it when it exists (to compare variants without the model)")  # fmt: skip
    parser.add_argument("--agent-tokens", type=int, default=0, metavar="N",
                        help="also answer test with N tokens (the agent's default is 256) "
                        "and time the cheap and full probes against those answers")  # fmt: skip
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
    load = os.getloadavg()[0]
    observed: dict[str, list[dict[str, Any]]] = {}
    if args.observations and args.observations.exists():
        with args.observations.open("rb") as f:
            load, observed = pickle.load(f)
    else:
        observed = answer_all(settings, splits, params)
        if args.observations:
            with args.observations.open("wb") as f:
                pickle.dump((load, observed), f)
    report(observed, load)
    directions(observed)
    if args.agent_tokens:
        at_length(settings, splits["test"], args.agent_tokens)


# the shipped variants, and the probe sets SETS times for them
SHIPPED = [("cheap", harness.CHEAP_FEATURES, "1s"), ("full", harness.DEFAULT_FEATURES, "3s")]


def at_length(settings: Any, items: list[QAItem], tokens: int) -> None:
    """The overhead of the shipped variants' probes against answers of ``tokens`` tokens
    (the table on stdout, and ``at_length`` in the JSON)."""
    load = os.getloadavg()[0]
    params = SamplingParams(max_tokens=tokens, temperature=0.0)
    answer: list[float] = []
    probe: dict[str, list[float]] = {name: [] for name, _, _ in SHIPPED}
    with EdgeAgent(settings, background=False) as agent:
        runtime = agent.runtime(settings.models.default)
        for item in items:
            messages = chat_messages(item.prompt, settings.generation.system_prompt)
            answer.append(_seconds(run_local, runtime, messages, params))
            for name, _, key in SHIPPED:
                probes, samples = SETS[key]
                probe[name].append(
                    _seconds(short_answers, runtime, item.prompt, probes, samples=samples)
                )
    print(f"\nAgainst answers of up to {tokens} tokens (the agent's default length), "
          f"load average {load:.2f} at the start:\n")  # fmt: skip
    print("| variant | answer s | probe s | overhead median | overhead p90 |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for name, _, _ in SHIPPED:
        ratio = np.asarray(probe[name]) / np.asarray(answer)
        row = {"variant": name, "answer_s": float(np.median(answer)),
               "probe_s": float(np.median(probe[name])),
               "overhead_median": float(np.median(ratio)),
               "overhead_p90": float(np.quantile(ratio, 0.9))}  # fmt: skip
        rows.append(row)
        print(f"| {name} | {row['answer_s']:.2f} | {row['probe_s']:.3f} | "
              f"{row['overhead_median']:.0%} | {row['overhead_p90']:.0%} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "confidence.json"
    data = json.loads(out.read_text())
    data["at_length"] = {"tokens": tokens, "load": load, "variants": rows}
    out.write_text(json.dumps(data, indent=2) + "\n")


def directions(observed: dict[str, list[dict[str, Any]]]) -> None:
    """Two of issue 19's other directions on the same answers: a pre-route from the
    calibrated prompt features (before generating), and the running score early abort
    watches, at answer prefixes, Platt-fitted on full replies (as shipped) or on the
    prefixes, and with the prompt features beside it."""
    train, test = observed["train"], observed["test"]
    y_train = np.asarray([r["correct"] for r in train], dtype=bool)
    y_test = np.asarray([r["correct"] for r in test], dtype=bool)

    def rows(split: list[dict[str, Any]], f: Any) -> np.ndarray:
        return np.asarray([f(r["evidence"]) for r in split], dtype=float)

    def prompt(e: Evidence) -> list[float]:
        return feature_values(e, PROMPT)

    def fitted(x_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        if x_train.ndim == 1:
            return PlattCalibrator().fit(x_train, y_train).predict(x_test)
        return LogisticCalibrator(l2=harness.LOGISTIC_L2).fit(x_train, y_train).predict(x_test)

    found = [("pre-route: prompt features, before generating",
              fitted(rows(train, prompt), rows(test, prompt)))]  # fmt: skip
    full = PlattCalibrator().fit(rows(train, lambda e: margin(e.signals)), y_train)
    for k in (8, 16, 32):

        def at(e: Evidence, k: int = k) -> float:
            return margin(e.signals[:k])

        def with_prompt(e: Evidence, k: int = k) -> list[float]:
            return [margin(e.signals[:k]), *prompt(e)]

        x_train, x_test = rows(train, at), rows(test, at)
        found += [
            (f"running margin at {k} tokens, fitted on full replies", full.predict(x_test)),
            (f"running margin at {k} tokens, fitted on {k}-token prefixes",
             fitted(x_train, x_test)),
            (f"running margin at {k} tokens + prompt features",
             fitted(rows(train, with_prompt), rows(test, with_prompt))),
        ]  # fmt: skip
    print("\nOther directions (fitted on train, scored on test):\n")
    print("| score | AUROC | ECE | CPT50 | CPT80 | APGR |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, probs in found:
        cpt50, cpt80, area = route(probs, y_test)
        print(f"| {label} | {auroc(probs, y_test):.3f} | {ece(probs, y_test):.3f} | "
              f"{cpt50:.3f} | {cpt80:.3f} | {area:.3f} |")  # fmt: skip


def answer_all(settings: Any, splits: dict[str, list[QAItem]], params: SamplingParams
               ) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    observed = {}
    with EdgeAgent(settings, background=False) as agent:
        runtime = agent.runtime(settings.models.default)
        for name, items in splits.items():
            started = time.perf_counter()
            observed[name] = observe(runtime, items, settings.generation.system_prompt,
                                     params, timing=name == "test")  # fmt: skip
            print(f"{name}: {len(items)} answers in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)  # fmt: skip
    return observed


def report(observed: dict[str, list[dict[str, Any]]], load: float) -> None:
    train, test = observed["train"], observed["test"]
    y_train = np.asarray([r["correct"] for r in train], dtype=bool)
    y_test = np.asarray([r["correct"] for r in test], dtype=bool)
    answer = np.asarray([r["seconds"]["answer"] for r in test])
    rows = []
    for label, features, how in VARIANTS:

        def x(split: list[dict[str, Any]], f: tuple[str, ...] = features) -> np.ndarray:
            return np.asarray([feature_values(r["evidence"], f) for r in split])

        if len(features) == 1:
            probs = PlattCalibrator().fit(x(train)[:, 0], y_train).predict(x(test)[:, 0])
        else:
            model = LogisticCalibrator(l2=harness.LOGISTIC_L2).fit(x(train), y_train)
            probs = model.predict(x(test))
        probe = np.asarray([probe_seconds(r, features, how) for r in test])
        ratio = probe / answer
        cpt50, cpt80, area = route(probs, y_test)
        rows.append({
            "variant": label, "features": len(features), "probes": sorted(probes_for(features)),
            "how": how, "auroc": auroc(probs, y_test), "ece": ece(probs, y_test),
            "brier": brier(probs, y_test), "answer_s": float(np.median(answer)),
            "probe_s": float(np.median(probe)), "overhead_median": float(np.median(ratio)),
            "overhead_p90": float(np.quantile(ratio, 0.9)), "cpt50": cpt50, "cpt80": cpt80,
            "apgr": area,
        })  # fmt: skip
    print(f"\nSmolLM2-135M-Instruct, fitted on train ({len(train)}, accuracy "
          f"{y_train.mean():.3f}), scored on test ({len(test)}, accuracy "
          f"{y_test.mean():.3f}); load average {load:.2f} at the start\n")  # fmt: skip
    print("| variant | AUROC | ECE | Brier | answer s | probe s | overhead median | "
          "overhead p90 | CPT50 | CPT80 | APGR |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['auroc']:.3f} | {r['ece']:.3f} | {r['brier']:.3f} | "
              f"{r['answer_s']:.2f} | {r['probe_s']:.3f} | {r['overhead_median']:.0%} | "
              f"{r['overhead_p90']:.0%} | {r['cpt50']:.3f} | {r['cpt80']:.3f} | "
              f"{r['apgr']:.3f} |")  # fmt: skip
    out = ROOT / "benchmarks" / "results" / "confidence.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": load},
        "command": " ".join(sys.argv),
        "train": {"n": len(train), "accuracy": float(y_train.mean())},
        "test": {"n": len(test), "accuracy": float(y_test.mean())},
        "variants": rows,
        "seconds": [r["seconds"] for r in test],
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {out.relative_to(ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
