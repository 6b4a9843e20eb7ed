"""``edge-agent``: answer prompts on this device, manage models, show settings."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ridgeline_core.cli import CliProgress, CliState, root_group
from ridgeline_core.errors import RidgelineError

from .settings import load_edge_settings

__all__ = ["cli", "main"]

cli = root_group(
    "edge-agent",
    "Ridgeline edge agent: answers on this device when confident.",
    load_edge_settings,
)


@cli.command()
@click.argument("prompt")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--model", help="model name (default: models.default)")
@click.option("--max-tokens", type=click.IntRange(min=1), help="answer length limit")
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), help="0 is greedy")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="sampling seed")
@click.pass_obj
def ask(
    state: CliState,
    prompt: str,
    as_json: bool,
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
) -> None:
    """Answer PROMPT with the local model ("-" reads it from stdin)."""
    from .agent import EdgeAgent

    if prompt == "-":
        prompt = sys.stdin.read()
    flags: dict[str, tuple[Any, str]] = {}
    for key, value, flag in (
        ("models.default", model, "--model"),
        ("generation.max_tokens", max_tokens, "--max-tokens"),
        ("generation.temperature", temperature, "--temperature"),
        ("generation.seed", seed, "--seed"),
    ):
        if value is not None:
            flags[key] = (value, f"{flag} {value}")
    try:
        with EdgeAgent(state.load(flags).settings) as agent:
            if as_json:
                answer = agent.ask(prompt, progress=CliProgress(lines=False))
                click.echo(json.dumps(answer.to_dict(), indent=2))
                return
            answer = agent.ask(prompt, on_text=_echo_streamed, progress=CliProgress(lines=False))
    except RidgelineError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"kind": exc.kind, "message": str(exc)}}))
        raise
    click.echo()
    sys.stdout.flush()  # the answer's last line before the summary on stderr
    timings = answer.timings
    if timings.time_to_first_token_s is None:
        summary = f"{answer.source} · {answer.model} · no tokens · {answer.finish_reason}"
    else:
        speed = f"{timings.tokens_per_s:.1f} tok/s" if timings.tokens_per_s else "- tok/s"
        summary = (
            f"{answer.source} · {answer.model} · confidence {answer.confidence:.2f} · "
            f"first token {timings.time_to_first_token_s * 1000:.0f} ms · {speed} · "
            f"{timings.completion_tokens} tokens · {answer.finish_reason}"
        )
    click.secho(f"[{summary}]", err=True, dim=True)


def _echo_streamed(text: str) -> None:
    click.echo(text, nl=False)
    sys.stdout.flush()


def main() -> None:
    cli(prog_name="edge-agent")
