"""Scale-out on Ray (issue 21): what the Ray paths cost and buy on this machine.

So far: the calibration's answering (every question answered with the agent's prompt and
every probe, as ``edge-agent calibrate`` does) serially in this process, and on Ray Data
actor pools of 1 and 2 actors (``calibrate --ray``), on the same questions; wall time, and
whether the observations equal the serial run's. The broker-on-Serve figures come with
that part.

Run on a quiet machine (about 5 minutes on 2 cores)::

    RIDGELINE_TEST_STORE=/work/teststore flock /tmp/cpu.lock \\
        .venv/bin/python benchmarks/ray_scale.py [--questions 40]

Threads: the serial run and a single actor use both cores; with two actors each gets one
(``runtime.load_options(parallel=2)``, what ``calibrate --ray`` does by default).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--store", type=Path, default=os.environ.get("RIDGELINE_TEST_STORE"))
    args = parser.parse_args()
    import ray

    models = ModelsSettings(**({"store_dir": args.store} if args.store else {}))
    items = load_dataset(DATASET)[: args.questions]
    probes = harness.probes_needed(harness.methods_for(False))
    params = SamplingParams(max_tokens=64, temperature=0.0)
    runtime_settings = RuntimeSettings()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", flush=True)

    manifest = models.catalog().get(MODEL)
    runtime = load_runtime(
        manifest, models.store().open_verified(manifest), runtime_settings.load_options()
    )
    started = time.perf_counter()
    serial = harness.observe(runtime, items, system_prompt=None, params=params, probes=probes)
    rows = [("serial, in process (2 threads)", time.perf_counter() - started, True)]
    runtime.close()

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        for actors in (1, 2):
            started = time.perf_counter()
            spread = observe_on_ray(
                RayAnswering("auto", actors), models, runtime_settings, MODEL, items,
                system_prompt=None, params=params, probes=probes,
            )  # fmt: skip
            label = f"Ray Data, {actors} actor{'s' if actors > 1 else ''}"
            rows.append((label, time.perf_counter() - started, same(spread, serial)))
    finally:
        ray.shutdown()
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"\n{len(items)} questions of {DATASET.name}, {MODEL}, every probe, 64 tokens\n")
    print("| answering | wall s | s per question | vs serial | same observations |")
    print("|---|---:|---:|---:|---|")
    for label, seconds, equal in rows:
        print(
            f"| {label} | {seconds:.1f} | {seconds / len(items):.2f} "
            f"| {rows[0][1] / seconds:.2f}x | {'yes' if equal else 'NO'} |"
        )


if __name__ == "__main__":
    main()
