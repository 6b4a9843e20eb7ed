"""``edge-agent knowledge``: collections of documents the local model answers from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ridgeline_core.cli import CliProgress, CliState, RidgelineGroup, echo_json

__all__ = ["knowledge"]

ESCALATE = click.Choice(["never", "question-only", "redacted", "allowed"])


def _agent(state: CliState) -> Any:
    from ..agent import EdgeAgent

    return EdgeAgent(state.load().settings, background=False)


@click.group("knowledge", cls=RidgelineGroup)
def knowledge() -> None:
    """Add, list, search and remove collections of documents ("memory experts") that
    `edge-agent ask --knowledge` answers from."""


@knowledge.command("add")
@click.argument("name")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--escalate", type=ESCALATE,
    help="what an escalation may send from this collection (default: knowledge.escalate)",
)  # fmt: skip
@click.option("--description", help="what the collection holds, in a few words")
@click.option("--model", help="the local model its questions are answered with")
@click.option(
    "--adapter", type=click.Path(dir_okay=False, path_type=Path),
    help="a LoRA adapter (GGUF) applied to the model for its questions",
)  # fmt: skip
@click.option("--adapter-scale", type=click.FloatRange(-4.0, 4.0), help="its scale (default 1)")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.pass_obj
def add(
    state: CliState,
    name: str,
    paths: tuple[Path, ...],
    escalate: str | None,
    description: str | None,
    model: str | None,
    adapter: Path | None,
    adapter_scale: float | None,
    as_json: bool,
) -> None:
    """Add PATHS (files, or directories of .md .txt .html files) to collection NAME,
    creating it. Files already added and unchanged are not read again; a changed file's
    chunks are replaced; a file gone from a directory named again is dropped."""
    from ..knowledge.library import ExpertFiles

    with _agent(state) as agent:
        if model is not None:
            agent.catalog.get(model)  # UnknownModelError, or a path-like name refused
        report = agent.library.add(
            name, list(paths), escalate=escalate, description=description,
            expert=ExpertFiles(model, adapter, adapter_scale),
            progress=CliProgress(unit="chunks"),
        )  # fmt: skip
    if as_json:
        echo_json(vars(report))
        return
    click.echo(report.summary())


@knowledge.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_collections(state: CliState, as_json: bool) -> None:
    """The collections, their size and their privacy setting."""
    with _agent(state) as agent:
        library = agent.library
        infos = [library.info(name) for name in library.names()]
        default = agent.settings.knowledge.escalate
    rows = [
        {**vars(i), "escalate": i.escalate or default, "own": i.escalate is not None} for i in infos
    ]
    if as_json:
        echo_json({"directory": str(library.root), "collections": rows})
        return
    if not rows:
        click.echo(f"no collections in {library.root} (edge-agent knowledge add NAME PATH...)")
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "SOURCES", "CHUNKS", "JUDGED", "SIZE", "ESCALATE", "DESCRIPTION"):
        table.add_column(column, no_wrap=column != "DESCRIPTION")
    for r in rows:
        escalate = r["escalate"] + ("" if r["own"] else " (default)")
        table.add_row(
            r["name"], str(r["sources"]), str(r["chunks"]), str(r["judged"]),
            f"{r['bytes'] / 1e6:.1f} MB",
            escalate, r["description"],
        )  # fmt: skip
    Console(width=160).print(table)


@knowledge.command("search")
@click.argument("query")
@click.option(
    "--in", "names", multiple=True, metavar="NAME",
    help="a collection to search (repeat for more; default: choose among all)",
)  # fmt: skip
@click.option("-k", "k", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def search(state: CliState, query: str, names: tuple[str, ...], k: int, as_json: bool) -> None:
    """The chunks most similar to QUERY, with the collections' scores."""
    from ..knowledge.library import AUTO, Weights, retrieve

    with _agent(state) as agent:
        settings = agent.settings.knowledge
        found = retrieve(
            agent.library, agent.embedder.embed_one(query), list(names) or [AUTO],
            experts=len(names) or settings.experts, passages=k,
            min_similarity=settings.min_similarity, weights=Weights.of(settings),
        )  # fmt: skip
    passages = [p.citation(n) | {"text": p.text} for n, p in enumerate(found.passages, 1)]
    if as_json:
        experts = [e.record() for e in found.experts]
        echo_json({"experts": experts, "passages": passages, "skipped": list(found.skipped)})
        return
    scores = ", ".join(_expert_line(e) for e in found.experts)
    click.echo(f"collections: {scores or 'none'} ({found.ms:.1f} ms)")
    for line in found.skipped:
        click.secho(f"skipped {line}", err=True, fg="yellow")
    for p in passages:
        where = f"{p['collection']} · {Path(str(p['source'])).name} #{p['chunk']}"
        click.echo(f"[{p['n']}] {p['score']:.3f} {where} · {p['heading']}")
        click.echo(f"    {' '.join(str(p['text']).split())[:300]}")


def _expert_line(e: Any) -> str:
    """NAME SCORE, with what besides its best chunk moved the score."""
    moved = f" (profile {e.profile:.2f}" + (
        f", judged {e.judged:.2f} of {e.support:.1f})" if e.support else ")"
    )
    return f"{e.name} {e.score:.2f}{moved}{' ✓' if e.chosen else ''}"


@knowledge.command("rm")
@click.argument("name")
@click.pass_obj
def remove(state: CliState, name: str) -> None:
    """Remove collection NAME: its chunks and vectors (the source files stay)."""
    with _agent(state) as agent:
        agent.library.remove(name)
    click.echo(f"removed collection {name}")


knowledge_option = click.option(
    "--knowledge", "knowledge", multiple=True, metavar="NAME",
    help="answer from these collections (auto: choose among all); default: auto when the "
    "dataset names collections",
)  # fmt: skip


def retriever_for(agent: Any, names: tuple[str, ...], items: list[Any]) -> Any:
    """For calibrate and eval: the passages each question is answered from, as the agent
    retrieves them (None: the questions are answered without knowledge). A dataset whose
    items name collections is answered with ``auto`` unless ``names`` says otherwise; its
    collections must be on this device."""
    from ridgeline_core.errors import UnknownCollectionError

    from ..knowledge.library import AUTO, Weights, retrieve

    wanted = {item.collection for item in items if item.collection}
    if not names and not wanted:
        return None
    library = agent.library
    missing = sorted(wanted - set(library.names()))
    if missing:
        raise UnknownCollectionError(
            f"the dataset's collection {missing[0]!r} is not on this device "
            f"(edge-agent knowledge add {missing[0]} FILES...)"
        )
    chosen = list(names) or [AUTO]
    s = agent.settings.knowledge

    def passages(item: Any) -> Any:
        return retrieve(
            library, agent.embedder.embed_one(item.prompt), chosen, experts=s.experts,
            passages=s.passages, min_similarity=s.min_similarity, weights=Weights.of(s),
        )  # fmt: skip

    return passages
