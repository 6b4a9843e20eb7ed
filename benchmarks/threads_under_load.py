"""Local generation while other processes want the CPU: a fixed thread count (as many as
physical cores, what llama.cpp users get) against Ridgeline's adaptive count
(``runtime.adaptive_threads``: the cores other processes keep busy, read by the psutil
telemetry source as the daemon reads it, are left to them). Run:

    .venv/bin/python benchmarks/threads_under_load.py [--busy 0 1 2] [--rounds 3] [--max-tokens 64]

For each background load (``--busy N``: N processes spinning on the CPU, started by the
benchmark and stopped by it, each ending by itself after ``--limit-s``), SmolLM2 answers
the same prompt ``--rounds`` times with each variant, alternating; greedy, so both
variants must write the same text (checked). Reported: the median decode tokens/s, the
median time to first token, and the threads the adaptive variant chose. Check the load
average before (printed): the machine must be quiet apart from the spinners.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_agent.settings import load_edge_settings  # noqa: E402
from edge_agent.telemetry.psutil_source import PsutilSource  # noqa: E402
from ridgeline_core.runtime import ChatMessage, LoadOptions, SamplingParams, load_runtime  # noqa: E402
from ridgeline_core.runtime.threads import default_threads, threads_for_load  # noqa: E402

PROMPT = [ChatMessage("user", "Write a short paragraph about the history of tea.")]


def spin(until: float) -> None:
    """Keep one CPU busy until ``until`` (monotonic seconds)."""
    x = 0
    while time.monotonic() < until:
        x = (x * 31 + 7) % 1_000_003


def others_load(source: PsutilSource) -> float | None:
    """The other processes' share of the CPUs, as the daemon's telemetry reads it."""
    source.read()  # primes psutil's per-thread sample
    time.sleep(1.0)
    value = source.read().get("cpu_load")
    return None if value is None else float(value)


def run(runtime: Any, threads: int | None, max_tokens: int) -> tuple[float, float, str]:
    runtime.use_threads(threads)
    generation = runtime.generate(PROMPT, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    text = generation.text
    stats = generation.stats
    return stats.tokens_per_s, stats.time_to_first_token_s, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--limit-s", type=float, default=600.0)
    args = parser.parse_args()
    settings = load_edge_settings(config_file=None, env=os.environ).settings
    manifest = settings.models.catalog().get("smollm2-135m-instruct")
    path = settings.models.store().pull(manifest).path
    cores = default_threads()
    runtime = load_runtime(manifest, path, LoadOptions(n_threads=cores))
    source = PsutilSource()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs ({cores} cores)")
    print("\n| busy processes | others' load | variant | threads | decode tok/s | TTFT s |")
    print("|---:|---:|---|---:|---:|---:|")
    try:
        for busy in args.busy:
            _measure(runtime, source, busy, cores, args)
    finally:
        runtime.close()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def _measure(runtime: Any, source: PsutilSource, busy: int, cores: int, args: Any) -> None:
    until = time.monotonic() + args.limit_s
    spinners = [
        multiprocessing.Process(target=spin, args=(until,), daemon=True) for _ in range(busy)
    ]
    for process in spinners:
        process.start()
    try:
        time.sleep(1.0 if busy else 0.0)
        load = others_load(source)
        adaptive = threads_for_load(cores, load, cores)
        results: dict[str, list[tuple[float, float, str]]] = {"fixed": [], "adaptive": []}
        for _ in range(args.rounds):
            results["fixed"].append(run(runtime, cores, args.max_tokens))
            results["adaptive"].append(run(runtime, adaptive, args.max_tokens))
        texts = {r[2] for rows in results.values() for r in rows}
        assert len(texts) == 1, "greedy answers differ between thread counts"
        for name, rows in results.items():
            threads = cores if name == "fixed" else adaptive
            speed = statistics.median(r[0] for r in rows)
            ttft = statistics.median(r[1] for r in rows)
            shown = "n/a" if load is None else f"{load:.2f}"
            print(f"| {busy} | {shown} | {name} | {threads} | {speed:.1f} | {ttft:.2f} |")
    finally:
        for process in spinners:
            process.terminate()
            process.join(timeout=10)


if __name__ == "__main__":
    main()
