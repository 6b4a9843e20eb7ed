"""Confidence v0 benchmark: how well does each scorer separate right answers from wrong ones?

Runs every prompt of a small labelled set (JSONL: ``{"prompt": ..., "answers": [...]}``)
through one loaded local model at temperature 0, collects the per-token signals
exactly as ``EdgeAgent.ask`` does (same chat messages, same system prompt), and
applies every registered scorer to them. An answer is correct when one of its
acceptable answers occurs in it as a whole-word substring, both texts normalised
(case, accents, thousands separators, punctuation, whitespace).

Reports per scorer: AUROC (rank / Mann-Whitney formula, ties averaged), the mean
score of right and of wrong answers, the AUROC within answers shorter than the
median length and within those at or above it, and the Spearman correlation of
the score with the answer length (near 0: the score does not drift with length).

Usage::

    RIDGELINE_EDGE_MODELS__STORE_DIR=/tmp/st .venv/bin/python benchmarks/confidence_v0.py
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import sys
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.agent import chat_messages, run_local
from edge_agent.confidence.scorers import get_scorer, scorer_names
from edge_agent.settings import load_edge_settings
from ridgeline_core.runtime import RuntimePool

DEFAULT_DATASET = Path(__file__).resolve().parent / "data" / "confidence_v0.jsonl"
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MAX_TOKENS = 48


@dataclass(frozen=True)
class Item:
    prompt: str
    answers: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    prompt: str
    answers: tuple[str, ...]
    text: str
    correct: bool
    tokens: int
    finish_reason: str
    scores: dict[str, float]


# -- matching ----------------------------------------------------------------------

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalise(text: str) -> str:
    """Lower case, accents and thousands separators removed, punctuation to spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = _THOUSANDS.sub("", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def is_correct(text: str, answers: Sequence[str]) -> bool:
    """Whether a normalised acceptable answer occurs in the normalised text as whole words."""
    haystack = f" {normalise(text)} "
    return any(f" {normalise(a)} " in haystack for a in answers if normalise(a))


# -- statistics --------------------------------------------------------------------


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of ``values``; tied values share their average rank."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a random right answer > score of a random wrong one), ties count half.

    NaN when either class is empty.
    """
    y = np.asarray(labels, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


# -- running -----------------------------------------------------------------------


def load_dataset(path: Path, limit: int | None) -> list[Item]:
    items: list[Item] = []
    with path.open(encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            answers = tuple(record["answers"])
            if not record["prompt"].strip() or not answers:
                raise ValueError(f"{path}:{number}: empty prompt or no answers")
            items.append(Item(record["prompt"], answers))
    return items[:limit] if limit is not None else items


def command_line() -> str:
    """The command that reproduces this run: RIDGELINE_EDGE_* variables, python, argv."""
    env = [
        f"{key}={shlex.quote(value)}"
        for key, value in sorted(os.environ.items())
        if key.startswith("RIDGELINE_EDGE_")
    ]
    python = sys.executable
    try:
        relative = os.path.relpath(python)
        if not relative.startswith(".."):
            python = relative
    except ValueError:
        pass
    return " ".join([*env, shlex.join([python, *sys.argv])])


def fmt(value: float) -> str:
    return "   n/a" if np.isnan(value) else f"{value:6.3f}"


def report(results: list[Result], header: list[str], default_scorer: str) -> str:
    labels = np.array([r.correct for r in results])
    lengths = np.array([r.tokens for r in results])
    median = float(np.median(lengths))
    long_ = lengths >= median
    short = ~long_
    lines = [*header, ""]
    lines.append(
        f"n={len(results)}  correct={int(labels.sum())}  wrong={int((~labels).sum())}  "
        f"local accuracy={labels.mean():.3f}"
    )
    lines.append(
        f"answer length (tokens): mean={lengths.mean():.1f}  median={median:g}  "
        f"min={lengths.min()}  max={lengths.max()}  "
        f"hit max_tokens={sum(r.finish_reason == 'length' for r in results)}"
    )
    for name, mask in (("short (< median)", short), ("long (>= median)", long_)):
        n = int(mask.sum())
        accuracy = labels[mask].mean() if n else float("nan")
        lines.append(f"  {name:<17} n={n:3d}  accuracy={accuracy:.3f}")
    lines.append("")
    columns = (
        f"{'scorer':<10} | {'AUROC':>6} | {'mean right':>10} | {'mean wrong':>10} | "
        f"{'AUROC short':>11} | {'AUROC long':>10} | {'rho(score,len)':>14}"
    )
    lines += [columns, "-" * len(columns)]
    for name in scorer_names():
        scores = np.array([r.scores[name] for r in results])
        right = scores[labels].mean() if labels.any() else float("nan")
        wrong = scores[~labels].mean() if (~labels).any() else float("nan")
        marker = "*" if name == default_scorer else " "
        lines.append(
            f"{name + marker:<10} | {fmt(auroc(scores, labels))} | {fmt(right):>10} | "
            f"{fmt(wrong):>10} | {fmt(auroc(scores[short], labels[short])):>11} | "
            f"{fmt(auroc(scores[long_], labels[long_])):>10} | {fmt(spearman(scores, lengths)):>14}"
        )
    lines.append("")
    lines.append(
        f"* the configured default scorer. AUROC short/long: within answers below / at or "
        f"above the median length ({median:g} tokens). rho: Spearman correlation of score "
        f"with answer length."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="labelled JSONL")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name from the catalog")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="model store (default: RIDGELINE_EDGE_MODELS__STORE_DIR or the edge settings)",
    )
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    parser.add_argument(
        "--details", type=Path, default=None, help="also write one JSON line per answer here"
    )
    args = parser.parse_args(argv)

    settings = load_edge_settings(config_file=None, env=os.environ).settings
    models = settings.models
    if args.store is not None:
        models = models.model_copy(update={"store_dir": args.store})
    catalog, store = models.catalog(), models.store()
    manifest = catalog.get(args.model)
    if not store.is_present(manifest):
        print(f"pulling {manifest.name} into {store.root} ...", file=sys.stderr)
        store.pull(manifest)

    items = load_dataset(args.dataset, args.limit)
    generation = settings.generation
    params = dataclasses.replace(generation.sampling(), temperature=0.0, max_tokens=args.max_tokens)
    scorers = {name: get_scorer(name) for name in scorer_names()}

    pool = RuntimePool(catalog, store, settings.runtime.load_options())
    results: list[Result] = []
    started = time.perf_counter()
    try:
        runtime = pool.get(manifest.name)
        for index, item in enumerate(items, 1):
            # exactly what EdgeAgent.ask runs
            run = run_local(runtime, chat_messages(item.prompt, generation.system_prompt), params)
            text, signals, stats = run.text.strip(), run.signals, run.stats
            result = Result(
                prompt=item.prompt,
                answers=item.answers,
                text=text,
                correct=is_correct(text, item.answers),
                tokens=len(signals),
                finish_reason=stats.finish_reason.value if stats.finish_reason else "unknown",
                scores={name: scorer(signals) for name, scorer in scorers.items()},
            )
            results.append(result)
            print(
                f"[{index:3d}/{len(items)}] {'ok ' if result.correct else 'BAD'} "
                f"{item.prompt!r} -> {text[:80]!r}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        pool.close()
    elapsed = time.perf_counter() - started

    if args.details is not None:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        with args.details.open("w", encoding="utf-8") as out:
            for r in results:
                out.write(json.dumps(dataclasses.asdict(r)) + "\n")

    dataset_sha = hashlib.sha256(args.dataset.read_bytes()).hexdigest()[:12]
    header = [
        f"command: {command_line()}",
        f"cwd: {os.getcwd()}",
        f"dataset: {args.dataset} (sha256 {dataset_sha}, {len(items)} prompts)",
        f"model: {manifest.name} (sha256 {manifest.sha256[:12]})  temperature=0  "
        f"max_tokens={params.max_tokens}  system prompt: "
        f"{generation.system_prompt or manifest.system_prompt!r}",
        f"wall time: {elapsed:.0f}s",
    ]
    print(report(results, header, settings.confidence.scorer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
