"""``edge-agent specialists | classify | cache``: the ONNX specialists on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ridgeline_core.cli import CliProgress, CliState, RidgelineGroup, echo_json
from ridgeline_core.errors import RidgelineError

from .options import MODES, broker_flags, broker_option, check_dev, dev_option

__all__ = ["cache", "classify", "specialists"]


def _agent(state: CliState, flags: dict[str, tuple[Any, str]] | None = None) -> Any:
    from ..agent import EdgeAgent

    return EdgeAgent(state.load(flags).settings, background=False)


@click.group("specialists", cls=RidgelineGroup)
def specialists() -> None:
    """Train, list and remove specialist classifiers (a head on sentence embeddings)."""


@specialists.command("train")
@click.argument("name")
@click.option(
    "--examples",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='training examples, JSONL: {"text": ..., "label": ...}',
)
@click.option(
    "--heldout",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="held-out examples, same format: only measured, never trained on",
)
@click.option("--description", default="", help="the task in words (the broker's model reads it)")
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0.5, 1.0),
    default=0.99,
    show_default=True,
    help="the threshold keeps local answers this often right (cross-validated)",
)
@click.option("--json", "as_json", is_flag=True, help="print the record as JSON")
@click.pass_obj
def train(
    state: CliState,
    name: str,
    examples: Path,
    heldout: Path | None,
    description: str,
    target_accuracy: float,
    as_json: bool,
) -> None:
    """Train specialist NAME on labelled examples and register it."""
    from ..knowledge.specialists import TrainOptions, load_examples, train_specialist

    train_set = load_examples(examples)
    held = load_examples(heldout) if heldout is not None else []
    with _agent(state) as agent:
        record = train_specialist(
            name,
            train_set,
            agent.embedder,
            agent.store,
            agent.specialists.directory,
            heldout=held,
            description=description,
            options=TrainOptions(target_accuracy=target_accuracy),
            progress=CliProgress(unit="examples"),
        )
    if as_json:
        echo_json(record.model_dump())
        return
    m = record.metrics
    click.echo(
        f"trained {record.name}: {len(record.labels)} labels, {m['train']['n']} examples, "
        f"threshold {record.threshold:.2f}, temperature {record.temperature:.2f}"
    )
    cv = m["cross_validated"]
    click.echo(
        f"  cross-validated ({m['folds']} folds): accuracy {cv['accuracy']:.3f}, "
        f"kept locally {cv['coverage']:.1%} at {cv['accuracy_kept']:.3f} accuracy"
    )
    if "heldout" in m:
        h = m["heldout"]
        click.echo(
            f"  held-out ({h['n']} examples): accuracy {h['accuracy']:.3f}, ECE {h['ece']:.3f}, "
            f"kept locally {h['coverage']:.1%} at {h['accuracy_kept']:.3f} accuracy"
        )


@specialists.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_specialists(state: CliState, as_json: bool) -> None:
    """Trained specialists and their measured accuracy."""
    with _agent(state) as agent:
        registry = agent.specialists
        records = [registry.record(name) for name in registry.names()]
    rows = [
        {
            "name": r.name,
            "labels": len(r.labels),
            "encoder": f"{r.encoder}/{r.encoder_variant}",
            "threshold": r.threshold,
            "heldout_accuracy": r.metrics.get("heldout", {}).get("accuracy"),
            "trained_at": r.trained_at,
        }
        for r in records
    ]
    if as_json:
        echo_json({"directory": str(registry.directory), "specialists": rows})
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "LABELS", "ENCODER", "THRESHOLD", "HELD-OUT ACC", "TRAINED"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        acc = row["heldout_accuracy"]
        table.add_row(
            row["name"], str(row["labels"]), row["encoder"], f"{row['threshold']:.2f}",
            "n/a" if acc is None else f"{acc:.3f}", row["trained_at"],
        )  # fmt: skip
    Console(width=200).print(table)


@specialists.command("show")
@click.argument("name")
@click.pass_obj
def show(state: CliState, name: str) -> None:
    """The record of specialist NAME, as JSON."""
    with _agent(state) as agent:
        echo_json(agent.specialists.record(name).model_dump())


@specialists.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.pass_obj
def remove(state: CliState, names: tuple[str, ...]) -> None:
    """Forget specialists (their heads stay in the store until `models` cleans up)."""
    with _agent(state) as agent:
        for name in names:
            agent.specialists.record(name)  # unknown: a clear error
            agent.specialists.remove(name)
            click.echo(f"removed specialist {name}")


@click.command("classify")
@click.argument("name")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--mode", type=MODES, help="auto (default), local: never escalate, cloud: always")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="escalate below this")
@click.option("--deadline", type=click.FloatRange(min=0.1), help="broker deadline, seconds")
@broker_option
@dev_option
@click.pass_obj
def classify(
    state: CliState,
    name: str,
    text: str,
    as_json: bool,
    mode: str | None,
    threshold: float | None,
    deadline: float | None,
    broker: str | None,
    dev: bool,
) -> None:
    """Label TEXT ("-" reads stdin) with specialist NAME; the broker decides when unsure."""
    import sys

    from ..agent import EdgeAgent

    if text == "-":
        text = sys.stdin.read()
    try:
        settings = check_dev(state, broker_flags(broker, dev, None), dev)
        from ..request.options import RequestOptions

        options = RequestOptions.parse(
            {"threshold": threshold, "mode": mode, "deadline_s": deadline}
        )
        with EdgeAgent(settings, background=False) as agent:
            result = agent.classify(name, text, options)
    except RidgelineError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"kind": exc.kind, "message": str(exc)}}))
        raise
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.label)
    d = result.decision
    click.secho(
        f"[{result.source} · {d.local_label} {d.local_probability:.2f} · τ {d.threshold:.2f} · "
        f"{d.total_ms:.0f} ms — {d.reason}]",
        err=True,
        dim=True,
    )


@click.group("cache", cls=RidgelineGroup)
def cache() -> None:
    """The semantic answer cache: show it, clear it."""


def _open_cache(state: CliState) -> Any:
    from ..knowledge.cache import SemanticCache
    from ..knowledge.embeddings import Embedder
    from ..settings import state_dir

    settings = state.load().settings
    c = settings.cache
    models = settings.models
    embedder = Embedder(settings.embeddings, models.catalog(), models.store())
    return SemanticCache(
        c.path or state_dir() / "answer-cache.sqlite",
        embedder.embed_one,
        encoder=f"{embedder.name}/{embedder.variant}",
        similarity=c.similarity,
        ttl_s=c.ttl_s,
        max_entries=c.max_entries,
    )


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def stats(state: CliState, as_json: bool) -> None:
    """Entries, size on disk and settings of the answer cache."""
    with _open_cache(state) as answer_cache:
        figures = answer_cache.stats()
    if as_json:
        echo_json(figures)
        return
    for key, value in figures.items():
        click.echo(f"{key}: {value}")


@cache.command("clear")
@click.pass_obj
def clear(state: CliState) -> None:
    """Remove every cached answer."""
    with _open_cache(state) as answer_cache:
        removed = answer_cache.clear()
    click.echo(f"removed {removed} cached answer(s)")
