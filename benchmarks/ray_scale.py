"""Scale-out on Ray (issue 21): what the Ray paths cost and buy on this machine.

Legs (``--legs``, all by default), each printed as a table:

* ``latency``: the added latency of the broker on Ray Serve (one front, one replica of a
  model served by the fast OpenAI-compatible stub, benchmarks/stub_openai.py) over the
  single-process broker (``cloud-broker serve --dev``) in front of the same stub, one
  call at a time, the two interleaved in rounds so drift hits both; p50 and p99. With it,
  Serve's own floor: one streamed handle call from one replica to another.
* ``limit``: what the shared rate limit costs a front per request (``admitted`` plus
  ``charge``, timed inside a Ray actor against the real keeper actor): a busy device whose
  leased credits are reused, devices taking turns, and a new device every call (one
  keeper call each, the worst case).
* ``throughput``: SmolLM2 (llama.cpp, one thread, one slot per replica) on 1 and on 2
  replicas, 8 closed-loop clients for ``--seconds``; answers and tokens per second.
* ``calibration``: the calibration's answering (every question answered with the agent's
  prompt and every probe, as ``edge-agent calibrate`` does) serially in this process and
  on Ray Data actor pools of 1 and 2 actors (``calibrate --ray``); wall time, and whether
  the observations equal the serial run's.

Run on a quiet machine (about 8 minutes on 2 cores)::

    RIDGELINE_TEST_STORE=/work/teststore flock /tmp/cpu.lock \\
        .venv/bin/python benchmarks/ray_scale.py [--legs latency,limit,throughput,calibration]

Threads: the serial calibration and a single actor use both cores; with two actors each
gets one (``runtime.load_options(parallel=2)``, what ``calibrate --ray`` does by default).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray_serve_legs as legs

from edge_agent.evaluation import harness
from edge_agent.evaluation.dataset import load_dataset
from edge_agent.evaluation.on_ray import RayAnswering, observe_on_ray
from edge_agent.settings import RuntimeSettings
from ridgeline_core.runtime import SamplingParams, load_runtime
from ridgeline_core.store import ModelsSettings

DATASET = Path(__file__).resolve().parent.parent / "datasets" / "ridgeline-qa-v1" / "train.jsonl"
MODEL = "smollm2-135m-instruct"


def same(a: list[Any], b: list[Any]) -> bool:
    names = sorted({n for m in harness.methods_for(False) for n in m.features})
    return [o.text for o in a] == [o.text for o in b] and bool(
        np.array_equal(harness.features_of(a, names), harness.features_of(b, names))
    )


def calibration_leg(args: argparse.Namespace, models: ModelsSettings) -> None:
    items = load_dataset(DATASET)[: args.questions]
    probes = harness.probes_needed(harness.methods_for(False))
    params = SamplingParams(max_tokens=64, temperature=0.0)
    runtime_settings = RuntimeSettings()
    manifest = models.catalog().get(MODEL)
    runtime = load_runtime(
        manifest, models.store().open_verified(manifest), runtime_settings.load_options()
    )
    started = time.perf_counter()
    serial = harness.observe(runtime, items, system_prompt=None, params=params, probes=probes)
    rows = [("serial, in process (2 threads)", time.perf_counter() - started, True)]
    runtime.close()
    for actors in (1, 2):
        started = time.perf_counter()
        spread = observe_on_ray(
            RayAnswering("auto", actors), models, runtime_settings, MODEL, items,
            system_prompt=None, params=params, probes=probes,
        )  # fmt: skip
        label = f"Ray Data, {actors} actor{'s' if actors > 1 else ''}"
        rows.append((label, time.perf_counter() - started, same(spread, serial)))
    print(f"\n{len(items)} questions of {DATASET.name}, {MODEL}, every probe, 64 tokens\n")
    print("| answering | wall s | s per question | vs serial | same observations |")
    print("|---|---:|---:|---:|---|")
    for label, seconds, equal in rows:
        print(
            f"| {label} | {seconds:.1f} | {seconds / len(items):.2f} "
            f"| {rows[0][1] / seconds:.2f}x | {'yes' if equal else 'NO'} |"
        )


def latency_leg(args: argparse.Namespace) -> None:
    single: list[Any] = []
    spread: list[Any] = []
    with legs.stub_server() as stub:
        base = f"http://{stub}/v1"
        config = legs.write_config(legs.stub_config(base, app="bench-stub"))
        with legs.single_process(config) as plain, legs.on_ray(config) as front:
            for _ in range(args.rounds):
                single.append(legs.latencies(plain, args.calls, args.warmup))
                spread.append(legs.latencies(front, args.calls, args.warmup))
        with legs.serve_grpc_proxy(config, legs.free_port()) as proxy:
            proxied = legs.latencies(proxy, args.calls * args.rounds, args.warmup)
    a, b = np.concatenate(single), np.concatenate(spread)
    p50, p99 = legs.percentiles(proxied)
    (a50, a99), (b50, b99) = legs.percentiles(a), legs.percentiles(b)
    f50, f99 = legs.percentiles(legs.serve_floor(len(b)))
    print(f"\nstub backend, one call at a time, {len(a)} calls each ({args.rounds} rounds)\n")
    print("| broker | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    print(f"| single process (cloud-broker serve) | {a50:.2f} | {a99:.2f} |")
    print(f"| Ray Serve: front + model replica | {b50:.2f} | {b99:.2f} |")
    print(f"| **added by the Ray path** | **{b50 - a50:.2f}** | **{b99 - a99:.2f}** |")
    floor = "Serve's floor: one streamed handle call, replica to replica"
    print(f"| {floor} | {f50:.2f} | {f99:.2f} |")
    proxy = "Serve's gRPC proxy + a bare ingress replica + model replica (no TLS, no checks)"
    print(f"| {proxy} | {p50:.2f} | {p99:.2f} |")


def limit_leg(args: argparse.Namespace) -> None:
    print(f"\nshared rate limit, per request at a front ({args.limit_calls} calls each)\n")
    print("| devices | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for label, seconds in legs.limit_costs(args.limit_calls):
        p50, p99 = legs.percentiles(seconds)
        print(f"| {label} | {p50:.3f} | {p99:.3f} |")


def throughput_leg(args: argparse.Namespace, models: ModelsSettings) -> None:
    # Ray runs its workers (the replicas) at niceness 15; the load generator here runs at
    # the same, so on 2 cores it does not outrank the models it measures.
    os.nice(15 - os.nice(0))
    measured: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(args.tp_rounds):
        for replicas in (1, 2):
            config = legs.write_config(
                legs.smollm2_config(models.store_dir, replicas, app="bench-tp")
            )
            with legs.on_ray(config) as front:
                legs.throughput(front, 2, 3.0, 8)  # warm: both replicas loaded and used
                measured[replicas].append(legs.throughput(front, 8, args.seconds, 64))
    print(
        f"\n{MODEL}, one thread per replica, 8 clients, 64 tokens, {args.seconds:g} s a level,"
        f" {args.tp_rounds} rounds (mean)\n"
    )
    print("| replicas | answers/s | tokens/s | vs 1 replica | per round |")
    print("|---:|---:|---:|---:|---|")
    base = float(np.mean([tokens for _, tokens in measured[1]]))
    for replicas, runs in measured.items():
        answers, tokens = (float(np.mean(column)) for column in zip(*runs, strict=True))
        each = ", ".join(f"{t:.1f}" for _, t in runs)
        print(f"| {replicas} | {answers:.2f} | {tokens:.1f} | {tokens / base:.2f}x | {each} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--legs", default="latency,limit,throughput,calibration")
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--calls", type=int, default=200, help="latency: calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--limit-calls", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=30.0, help="throughput: per level")
    parser.add_argument("--tp-rounds", type=int, default=2, help="throughput: rounds")
    parser.add_argument("--store", type=Path, default=os.environ.get("RIDGELINE_TEST_STORE"))
    args = parser.parse_args()
    import ray
    from ray import serve

    chosen = args.legs.split(",")
    models = ModelsSettings(**({"store_dir": args.store} if args.store else {}))
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if {"latency", "throughput"} & set(chosen):
            serve.start(proxy_location="Disabled")
        if "latency" in chosen:
            latency_leg(args)
        if "limit" in chosen:
            limit_leg(args)
        if "throughput" in chosen:
            throughput_leg(args, models)
        if "calibration" in chosen:
            calibration_leg(args, models)
    finally:
        ray.shutdown()
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
