"""``edge-agent``: answer prompts on this device or through the broker, show telemetry and
the threshold it gives, replay traces, manage models, show settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ridgeline_core.cli import CliProgress, CliState, root_group
from ridgeline_core.errors import ConfigError, RidgelineError

from .settings import load_edge_settings

if TYPE_CHECKING:
    from .agent import Answer

__all__ = ["cli", "main"]

cli = root_group(
    "edge-agent",
    "Ridgeline edge agent: answers on this device when confident.",
    load_edge_settings,
)

MODES = click.Choice(["auto", "local", "cloud"])


def _broker_flags(broker: str | None, dev: bool, trace: Path | None) -> dict[str, tuple[Any, str]]:
    flags: dict[str, tuple[Any, str]] = {}
    if broker is not None:
        flags["broker.address"] = (broker, f"--broker {broker}")
    if dev:
        flags["broker.plaintext"] = (True, "--dev")
    if trace is not None:
        flags["telemetry.trace"] = (trace, f"--telemetry-trace {trace}")
    return flags


def _check_dev(state: CliState, flags: dict[str, tuple[Any, str]], dev: bool) -> Any:
    settings = state.load(flags).settings
    if dev and not settings.broker.address:
        raise ConfigError("--dev needs a broker address: --broker 127.0.0.1:PORT")
    return settings


broker_option = click.option("--broker", metavar="HOST:PORT", help="broker address")
dev_option = click.option(
    "--dev", is_flag=True, help="plaintext, no token: a loopback `cloud-broker serve --dev`"
)
trace_option = click.option(
    "--telemetry-trace",
    "trace",
    type=click.Path(dir_okay=False, path_type=Path),
    help="replay telemetry from a JSONL/CSV trace instead of this device",
)


@cli.command()
@click.argument("prompt")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--model", help="local model name (default: models.default)")
@click.option("--max-tokens", type=click.IntRange(min=1), help="answer length limit")
@click.option("--temperature", type=click.FloatRange(0.0, 2.0), help="0 is greedy")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="sampling seed")
@click.option("--mode", type=MODES, help="auto (default), local: never escalate, cloud: always")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="fixed τ for this request")
@click.option("--deadline", type=click.FloatRange(min=0.1), help="broker deadline, seconds")
@broker_option
@dev_option
@trace_option
@click.pass_obj
def ask(
    state: CliState,
    prompt: str,
    as_json: bool,
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    seed: int | None,
    mode: str | None,
    threshold: float | None,
    deadline: float | None,
    broker: str | None,
    dev: bool,
    trace: Path | None,
) -> None:
    """Answer PROMPT ("-" reads it from stdin): locally when confident, else by the broker."""
    from .agent import EdgeAgent

    if prompt == "-":
        prompt = sys.stdin.read()
    flags = _broker_flags(broker, dev, trace)
    for key, value, flag in (
        ("models.default", model, "--model"),
        ("generation.max_tokens", max_tokens, "--max-tokens"),
        ("generation.temperature", temperature, "--temperature"),
        ("generation.seed", seed, "--seed"),
    ):
        if value is not None:
            flags[key] = (value, f"{flag} {value}")
    try:
        settings = _check_dev(state, flags, dev)
        with EdgeAgent(settings, background=False) as agent:
            options: dict[str, Any] = {
                "mode": mode,
                "threshold": threshold,
                "deadline_s": deadline,
                "progress": CliProgress(lines=False),
            }
            if as_json:
                answer = agent.ask(prompt, **options)
                click.echo(json.dumps(answer.to_dict(), indent=2))
                return
            answer = agent.ask(prompt, on_text=_echo_streamed, on_reset=_echo_reset, **options)
    except RidgelineError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"kind": exc.kind, "message": str(exc)}}))
        raise
    click.echo()
    sys.stdout.flush()  # the answer's last line before the summary on stderr
    click.secho(f"[{summary(answer)}]", err=True, dim=True)


def summary(answer: Answer) -> str:
    """One line: path, model, confidence against τ, speed, and why."""
    parts = [answer.source, answer.model]
    if answer.confidence is not None:
        parts.append(f"confidence {answer.confidence:.2f} · τ {answer.threshold:.2f}")
    else:
        parts.append(f"τ {answer.threshold:.2f}")
    timings = answer.timings
    if answer.source in ("local", "local-degraded") and timings is not None:
        if timings.time_to_first_token_s is not None:
            parts.append(f"first token {timings.time_to_first_token_s * 1000:.0f} ms")
        if timings.tokens_per_s:
            parts.append(f"{timings.tokens_per_s:.1f} tok/s")
    total = answer.decision.timings.total_ms
    parts.append(f"{total / 1000:.2f} s")
    return " · ".join(parts) + f" — {answer.decision.reason}"


def _echo_streamed(text: str) -> None:
    click.echo(text, nl=False)
    sys.stdout.flush()


def _echo_reset(reason: str) -> None:
    click.echo()
    click.secho(f"[{reason}; the local answer follows]", err=True, dim=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--probe/--no-probe", default=True, help="check the broker's health first")
@broker_option
@dev_option
@trace_option
@click.pass_obj
def telemetry(
    state: CliState, as_json: bool, probe: bool, broker: str | None, dev: bool, trace: Path | None
) -> None:
    """Print the live telemetry snapshot and the threshold τ it gives."""
    from .agent import EdgeAgent

    settings = _check_dev(state, _broker_flags(broker, dev, trace), dev)
    with EdgeAgent(settings, background=False) as agent:
        escalator = agent.broker() if probe else None
        probed = escalator.probe() if escalator is not None else None
        snapshot = agent.sampler.snapshot()
        threshold = agent.decide_threshold()
        data = {
            "telemetry": snapshot.values(),
            "sources": list(snapshot.sources),
            "threshold": threshold.value,
            "threshold_raw": threshold.raw,
            "terms": [
                {"name": t.name, "side": t.side, "delta": t.delta, "why": t.why}
                for t in threshold.terms
            ],
            "gate": threshold.gate,
            "mode": settings.policy.mode,
            "broker": settings.broker.address or None,
            "broker_probe": probed,  # health check just now: true, false, or null (none)
        }
        if escalator is None and agent.broker_missing:
            data["broker_missing"] = agent.broker_missing
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"sources: {', '.join(snapshot.sources) or 'none'}")
    for key, value in data["telemetry"].items():
        click.echo(f"  {key:20} {_format(value)}")
    click.echo(f"τ = {threshold.value:.3f}  (raw {threshold.raw:.3f}, mode {data['mode']})")
    for term in data["terms"]:
        click.echo(f"  {term['delta']:+.3f}  {term['why']}")
    if threshold.gate:
        click.echo(f"escalation blocked: {threshold.gate}")
    if probed is not None:
        click.echo(f"broker {data['broker']}: {'serving' if probed else 'not answering'}")
    elif data.get("broker_missing"):
        click.echo(str(data["broker_missing"]))


@cli.command()
@click.option(
    "--trace",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="telemetry trace (JSONL or CSV; one step per row)",
)
@click.option(
    "--prompts",
    "prompts_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="prompts, one per line (the list repeats over the trace)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("simulation"),
    show_default=True,
    help="directory for simulation.csv and simulation.png",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--no-plot", is_flag=True, help="write the table only (no matplotlib needed)")
@click.pass_obj
def simulate(
    state: CliState,
    trace: Path,
    prompts_file: Path,
    out: Path,
    max_tokens: int,
    no_plot: bool,
) -> None:
    """Replay a telemetry trace over prompts: τ, confidence and decisions over time.

    The local model runs for real; escalations are recorded, not sent. The table goes to
    stdout; simulation.csv (with each step's reason) and simulation.png go to --out."""
    from rich.console import Console
    from rich.table import Table

    from . import simulate as sim

    prompts = sim.load_prompts(prompts_file)
    settings = state.load().settings
    console = Console(stderr=True)

    def on_step(index: int, total: int, step: sim.SimulationStep) -> None:
        console.print(f"[dim]step {index + 1}/{total}: {step.path}[/dim]", highlight=False)

    steps = sim.simulate(settings, trace, prompts, max_tokens=max_tokens, on_step=on_step)
    out.mkdir(parents=True, exist_ok=True)
    sim.write_csv(steps, out / "simulation.csv")
    table = Table("t (s)", "τ", "raw τ", "confidence", "path", "prompt", box=None)
    for step in steps:
        table.add_row(
            f"{step.t:g}",
            f"{step.threshold:.2f}",
            f"{step.threshold_raw:.2f}",
            "-" if step.confidence is None else f"{step.confidence:.2f}",
            step.path,
            step.prompt if len(step.prompt) <= 40 else step.prompt[:39] + "…",
        )
    Console(width=120).print(table)
    written = [out / "simulation.csv"]
    if not no_plot:
        sim.plot(steps, trace, out / "simulation.png")
        written.append(out / "simulation.png")
    click.echo("wrote " + ", ".join(str(path) for path in written), err=True)


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> None:
    cli(prog_name="edge-agent")
