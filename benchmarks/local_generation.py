"""Local generation: raw llama-cpp-python versus Ridgeline's runtime with signals on.

Same model file, prompt, thread count and max tokens; the variants alternate in
one process on one loaded model, and the KV cache is reset before every run so
each one processes the whole prompt. Greedy decoding, so every variant must
produce the same text (checked). Run:

    python benchmarks/local_generation.py [--model NAME] [--rounds 7] [--max-tokens 128]

Variants:
  raw        Llama.create_completion(stream=True): what llama-cpp-python users get
  ridgeline  Ridgeline's runtime, per-token signals on (prob, entropy, margin)
  no-signals Ridgeline's runtime with signals off (isolates the cost of signals)

Decode tok/s counts tokens after the first, over the time after the first
token, so prompt processing (in TTFT) does not blur the per-token cost. The
signals line times the signal computation inside the real generation loop
(GenerationStats.signals_s), which is steadier than differencing two noisy
throughputs on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.settings import load_edge_settings
from ridgeline_core.runtime import ChatMessage, LoadOptions, SamplingParams, load_runtime
from ridgeline_core.runtime.llama_cpp import LlamaCppRuntime
from ridgeline_core.runtime.signals import SignalComputer

PROMPT = "Write a long story about a lighthouse keeper and a storm."


@dataclass
class Run:
    text: str
    ttft_s: float
    total_s: float
    tokens: int
    signals_s: float = 0.0

    @property
    def decode_tok_s(self) -> float:
        return (self.tokens - 1) / (self.total_s - self.ttft_s)

    @property
    def end_to_end_tok_s(self) -> float:
        return self.tokens / self.total_s


def raw_run(runtime: LlamaCppRuntime, prompt: str, max_tokens: int, n_tokens: int) -> Run:
    llm = runtime._llm
    llm.reset()
    started = time.perf_counter()
    first = None
    parts = []
    for chunk in llm.create_completion(
        prompt, max_tokens=max_tokens, temperature=0.0, top_k=40, top_p=1.0, min_p=0.0,
        repeat_penalty=1.0, stream=True,
    ):  # fmt: skip
        if first is None:
            first = time.perf_counter() - started
        parts.append(chunk["choices"][0]["text"])
    total = time.perf_counter() - started
    return Run("".join(parts), first or total, total, n_tokens)


def ridgeline_run(runtime: LlamaCppRuntime, prompt: str, max_tokens: int) -> Run:
    runtime._llm.reset()
    started = time.perf_counter()
    first = None
    parts = []
    with runtime.complete(prompt, SamplingParams(max_tokens=max_tokens)) as stream:
        for token in stream:
            if first is None:
                first = time.perf_counter() - started
            parts.append(token.text)
    total = time.perf_counter() - started
    stats = stream.stats
    return Run("".join(parts), first or total, total, stats.completion_tokens, stats.signals_s)


def signal_cost_us(n_vocab: int, repeats: int = 2000) -> float:
    computer = SignalComputer(n_vocab)
    logits = np.random.default_rng(0).normal(0, 4, n_vocab).astype(np.float32)
    started = time.perf_counter()
    for i in range(repeats):
        computer(logits, i % n_vocab)
    return (time.perf_counter() - started) / repeats * 1e6


def peak_rss_child(args: argparse.Namespace, variant: str) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and runs one variant twice."""
    command = [sys.executable, __file__, "--rss-child", variant, "--model", args.model,
               "--max-tokens", str(args.max_tokens), "--threads", str(args.threads)]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(output.strip().splitlines()[-1])


def load(args: argparse.Namespace, signals: bool) -> LlamaCppRuntime:
    settings = load_edge_settings(config_file=None, env=os.environ).settings
    catalog, store = settings.models.catalog(), settings.models.store()
    manifest = catalog.get(args.model)
    path = store.pull(manifest).path
    options = LoadOptions(n_ctx=2048, n_threads=args.threads, signals=signals)
    runtime = load_runtime(manifest, path, options)
    assert isinstance(runtime, LlamaCppRuntime)
    return runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-rss", action="store_true", help="skip the per-variant RSS runs")
    parser.add_argument("--rss-child", choices=["raw", "ridgeline"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.rss_child:
        runtime = load(args, signals=args.rss_child == "ridgeline")
        prompt = runtime.render([ChatMessage("user", PROMPT)])
        for _ in range(2):
            if args.rss_child == "raw":
                raw_run(runtime, prompt, args.max_tokens, 0)
            else:
                ridgeline_run(runtime, prompt, args.max_tokens)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return

    print("$ python " + " ".join(shlex.quote(a) for a in [Path(__file__).name, *sys.argv[1:]]))
    with_signals = load(args, signals=True)
    without = load(args, signals=False)  # a second copy (the weights are memory-mapped)
    prompt = with_signals.render([ChatMessage("user", PROMPT)])

    variants: dict[str, Callable[[int], Run]] = {
        "raw": lambda n: raw_run(with_signals, prompt, args.max_tokens, n),
        "ridgeline": lambda n: ridgeline_run(with_signals, prompt, args.max_tokens),
        "no-signals": lambda n: ridgeline_run(without, prompt, args.max_tokens),
    }
    reference = ridgeline_run(with_signals, prompt, args.max_tokens)  # warm-up, token count
    runs: dict[str, list[Run]] = {name: [] for name in variants}
    for round_index in range(args.rounds):
        order = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in order:
            run = variants[name](reference.tokens)
            if run.text != reference.text:
                raise SystemExit(f"{name} produced different text; the comparison is invalid")
            runs[name].append(run)

    n_vocab = with_signals._vocab.size
    print(
        f"model {args.model} · threads {args.threads} · max_tokens {args.max_tokens} · "
        f"{reference.tokens} tokens generated · prompt {with_signals.count_tokens(prompt)} tokens "
        f"· {args.rounds} alternating rounds · medians"
    )
    print()
    header = f"{'variant':<11} {'decode tok/s':>12} {'e2e tok/s':>10} {'TTFT ms':>8} {'vs raw':>7}"
    print(header)
    print("-" * len(header))
    raw_speed = statistics.median(r.decode_tok_s for r in runs["raw"])
    for name, items in runs.items():
        speed = statistics.median(r.decode_tok_s for r in items)
        e2e = statistics.median(r.end_to_end_tok_s for r in items)
        ttft = statistics.median(r.ttft_s for r in items) * 1000
        print(f"{name:<11} {speed:>12.1f} {e2e:>10.1f} {ttft:>8.1f} {speed / raw_speed:>6.3f}x")
    print()
    ours = runs["ridgeline"]
    in_loop_us = statistics.median(r.signals_s / r.tokens for r in ours) * 1e6
    share = statistics.median(r.signals_s / (r.total_s - r.ttft_s) for r in ours)
    print(
        f"signals in the generation loop: {in_loop_us:.0f} µs per token = {share:.1%} of "
        f"decode time; alone on a warm buffer: {signal_cost_us(n_vocab):.0f} µs "
        f"({n_vocab}-token vocabulary)"
    )
    if not args.no_rss:
        raw_rss = peak_rss_child(args, "raw")
        ours_rss = peak_rss_child(args, "ridgeline")
        print(f"peak RSS (fresh process, model loaded, 2 runs): raw {raw_rss:.0f} MB, "
              f"ridgeline {ours_rss:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
