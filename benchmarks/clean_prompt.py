"""What repeatable temperature 0 costs in time to first token.

A prompt keeps only the whole ``n_batch`` chunks it shares with the previous prompt and
evaluates the rest as a fresh context would (``ridgeline_core/runtime/llama_reuse.py``),
so its answer does not depend on the request before it. This times the first token of a
conversation's next turn, right after the previous turn, three ways:

  prefix   llama-cpp-python's own reuse: everything shared is kept, only the new turn is
           evaluated (what Ridgeline did before; not repeatable)
  chunks   what Ridgeline does now
  clean    the whole prompt evaluated from an empty context

Run:

    python benchmarks/clean_prompt.py [--model NAME] [--rounds 5] [--threads 2] [--n-batch 512]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from typing import Any

from edge_agent.settings import load_edge_settings
from ridgeline_core.runtime import ChatMessage, LoadOptions, SamplingParams, load_runtime
from ridgeline_core.runtime.llama_cpp import LlamaCppRuntime
from ridgeline_core.runtime.llama_reuse import PromptChunks

TURN = "Tell me one more fact about lighthouses and the people who kept them, in detail. "
REPLY = "Lighthouse keepers trimmed the wicks, wound the clockwork and logged the weather. "
FIRST = SamplingParams(max_tokens=1, temperature=0.0)


def turns(count: int) -> list[ChatMessage]:
    """A conversation of ``count`` user turns, each answered but the last."""
    messages: list[ChatMessage] = []
    for _ in range(count - 1):
        messages += [ChatMessage("user", TURN * 4), ChatMessage("assistant", REPLY * 4)]
    return [*messages, ChatMessage("user", TURN * 4)]


def next_turn(count: int) -> list[ChatMessage]:
    """The conversation of :func:`turns` answered and asked once more (shortly)."""
    return [*turns(count), ChatMessage("assistant", REPLY * 4), ChatMessage("user", TURN)]


def keeping(way: str, chunks: PromptChunks) -> Callable[[Any, list[int]], int]:
    def prefix(llm: Any, prompt: list[int]) -> int:
        return 0  # the context as it is: Llama.generate keeps the whole shared prefix

    def clean(llm: Any, prompt: list[int]) -> int:
        llm.reset()
        return 0

    return {"prefix": prefix, "chunks": chunks.keep, "clean": clean}[way]


def first_token_ms(runtime: LlamaCppRuntime, count: int, way: str) -> tuple[float, int]:
    """Time to the first token of turn ``count + 1`` right after turn ``count``, and the
    tokens the prompt kept."""
    decoder: Any = runtime._decoder
    chunks = PromptChunks(int(runtime._llm.n_batch))
    decoder._chunks = chunks
    with runtime.generate(turns(count), FIRST) as stream:  # leaves its turns in the context
        list(stream)
    chunks.keep = keeping(way, chunks)  # type: ignore[method-assign]
    with runtime.generate(next_turn(count), FIRST) as stream:
        list(stream)
    assert stream.stats.time_to_first_token_s is not None
    return stream.stats.time_to_first_token_s * 1000, stream.stats.cached_tokens


def load(args: argparse.Namespace) -> LlamaCppRuntime:
    settings = load_edge_settings(config_file=None, env=os.environ).settings
    manifest = settings.models.catalog().get(args.model)
    path = settings.models.store().pull(manifest).path
    options = LoadOptions(n_ctx=2048, n_threads=args.threads, n_batch=args.n_batch)
    runtime = load_runtime(manifest, path, options)
    assert isinstance(runtime, LlamaCppRuntime)
    return runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-batch", type=int, default=512)
    args = parser.parse_args()
    runtime = load(args)
    ways = ("prefix", "chunks", "clean")
    print(
        f"model {args.model} · threads {args.threads} · n_batch {args.n_batch} · "
        f"load {os.getloadavg()[0]:.2f} · median TTFT ms (prompt tokens kept)"
    )
    print(f"{'prompt tokens':>13} {'new':>4} " + " ".join(f"{way:>12}" for way in ways))
    for count in (1, 4, 10):
        total = runtime.count_tokens(runtime.render(next_turn(count)))
        new = total - runtime.count_tokens(runtime.render(turns(count)))
        cells = []
        for way in ways:
            runs = [first_token_ms(runtime, count, way) for _ in range(args.rounds)]
            kept = runs[0][1] if way == "chunks" else "-"
            cells.append(f"{statistics.median(ms for ms, _ in runs):>6.0f} ({kept:>4})")
        print(f"{total:>13} {new:>4} " + " ".join(cells))
    runtime.close()


if __name__ == "__main__":
    main()
