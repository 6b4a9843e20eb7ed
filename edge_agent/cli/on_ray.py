"""``--ray`` for ``calibrate`` and ``eval``: answer the questions on Ray Data actors
(:mod:`edge_agent.evaluation.on_ray`) instead of in this process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from ridgeline_core.cli import CliProgress
from ridgeline_core.errors import ConfigError
from ridgeline_core.runtime import Runtime, SamplingParams

from ..evaluation.dataset import QAItem
from ..evaluation.harness import Observation, observe
from ..evaluation.on_ray import RayAnswering, observe_on_ray

__all__ = ["answer_questions", "ray_answering", "ray_options"]

F = TypeVar("F", bound=Callable[..., Any])


def ray_options(command: F) -> F:
    """``--ray ADDRESS`` and ``--ray-actors N``."""
    command = click.option(
        "--ray-actors", type=click.IntRange(min=1), default=2, show_default=True,
        help="with --ray: model copies answering at once (one Ray actor each)",
    )(command)  # fmt: skip
    return click.option(
        "--ray", "ray_address", metavar="ADDRESS",
        help="answer on Ray Data actors: local (a Ray started for this run), auto (the "
        "cluster this machine is in) or ray://HOST:PORT (the ray extra)",
    )(command)  # fmt: skip


def ray_answering(address: str | None, actors: int) -> RayAnswering | None:
    return None if address is None else RayAnswering(address, actors)


def answer_questions(
    settings: Any,
    runtime: Runtime,
    items: list[QAItem],
    *,
    params: SamplingParams,
    probes: set[str],
    knowledge: Any,
    ray: RayAnswering | None,
) -> list[Observation]:
    """The questions answered here, or on Ray when ``ray`` says where."""
    progress = CliProgress(unit="items")
    system_prompt = settings.generation.system_prompt
    if ray is None:
        return observe(
            runtime, items, system_prompt=system_prompt, params=params, probes=probes,
            progress=progress, knowledge=knowledge,
        )  # fmt: skip
    if knowledge is not None:
        raise ConfigError(
            "--ray does not answer from local knowledge yet: drop --ray or --knowledge"
        )
    return observe_on_ray(
        ray, settings.models, settings.runtime, runtime.manifest.name, items,
        system_prompt=system_prompt, params=params, probes=probes, progress=progress,
    )  # fmt: skip
