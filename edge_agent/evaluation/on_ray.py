"""Answering labelled questions on Ray Data (issue 21): ``calibrate --ray`` and ``eval
--ray`` spread :func:`~edge_agent.evaluation.harness.observe` over an actor pool.

Each actor loads the model once (from the store it is given, checked like any load) and
answers the questions it is handed one at a time, exactly as the serial run does: same
chat prompt, same greedy decoding, same probes. The observations come back to the driver
pickled, in question order, so a calibration or an evaluation fitted on them is the one
the serial run gives. ``address`` is Ray's: ``local`` starts a Ray for this run (stopped
after it), ``auto`` joins the cluster this machine belongs to, ``ray://host:10001`` a
remote one. Importing this module imports no Ray.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ridgeline_core.on_ray import RayPool, joined_ray, on_actors
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime import SamplingParams
from ridgeline_core.store import ModelsSettings

from ..settings import RuntimeSettings
from .dataset import QAItem
from .harness import Observation, observe

__all__ = ["RayAnswering", "observe_on_ray"]


RayAnswering = RayPool  # where the questions are answered


@dataclass(frozen=True)
class _Job:
    """What every actor needs, sent to each once."""

    models: ModelsSettings
    runtime: RuntimeSettings
    model: str
    items: tuple[QAItem, ...]
    system_prompt: str | None
    params: SamplingParams
    probes: frozenset[str]


class _Answerer:
    """A Ray Data actor: the model loaded once, then a batch of question indexes answered."""

    def __init__(self, job: _Job, parallel: int) -> None:
        from ridgeline_core.runtime import load_runtime

        self.job = job
        manifest = job.models.catalog().get(job.model)
        store = job.models.store()
        store.pull(manifest)
        path = store.open_verified(manifest)
        self.runtime = load_runtime(manifest, path, job.runtime.load_options(parallel))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        job, answered = self.job, []
        for index in batch["index"]:
            item = job.items[int(index)]
            found = observe(
                self.runtime, [item], system_prompt=job.system_prompt, params=job.params,
                probes=set(job.probes),
            )  # fmt: skip
            answered.append(pickle.dumps(found[0]))
        return {"index": list(batch["index"]), "observation": answered}


def observe_on_ray(
    where: RayAnswering,
    models: ModelsSettings,
    runtime: RuntimeSettings,
    model: str,
    items: Sequence[QAItem],
    *,
    system_prompt: str | None,
    params: SamplingParams,
    probes: set[str],
    progress: Progress = NULL_PROGRESS,
) -> list[Observation]:
    """:func:`observe` over ``where.actors`` actors; the observations in question order."""
    job = _Job(models, runtime, model, tuple(items), system_prompt, params, frozenset(probes))
    found: dict[int, Observation] = {}
    with joined_ray(where.address) as ray:
        answered = on_actors(ray, len(items), _Answerer, (job, where.actors), where.actors)
        progress.start(f"answering {len(items)} questions on {where.actors} Ray actors", len(items))
        try:
            for row in answered.iter_rows():
                found[int(row["index"])] = pickle.loads(row["observation"])
                progress.advance(1)
        finally:
            progress.finish()
    return [found[i] for i in range(len(items))]
