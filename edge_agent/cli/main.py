"""``edge-agent``: answer prompts on this device or through the broker, show telemetry and
the threshold it gives, replay traces, manage models, show settings."""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ridgeline_core.cli import CliProgress, CliState, root_group
from ridgeline_core.errors import (
    ConfigError,
    InvalidRequestError,
    RidgelineError,
    UnavailableError,
)

from ..settings import load_edge_settings
from .knowledge import knowledge_option, retriever_for
from .on_ray import answer_questions, ray_answering, ray_options
from .options import (
    MODES,
    broker_flags,
    broker_option,
    check_dev,
    dev_option,
    trace_option,
)

if TYPE_CHECKING:
    from ..request.answer import Answer
    from ..request.pipeline import Pipeline

__all__ = ["cli", "main"]

cli = root_group(
    "edge-agent",
    "Ridgeline edge agent: answers on this device when confident.",
    load_edge_settings,
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
@click.option("--private", is_flag=True, help="keep it out of the semantic answer cache")
@click.option("--strategy", help="a strategy configured on the broker (broker.strategy)")
@click.option("--max-cost", type=click.FloatRange(min=0.0), help="most the escalation may cost")
@click.option(
    "--knowledge", "knowledge", multiple=True, metavar="NAME",
    help="answer from this knowledge collection (repeat for more; auto: the best of all)",
)  # fmt: skip
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
    private: bool,
    strategy: str | None,
    max_cost: float | None,
    knowledge: tuple[str, ...],
    broker: str | None,
    dev: bool,
    trace: Path | None,
) -> None:
    """Answer PROMPT ("-" reads it from stdin): locally when confident, else by the broker."""
    from ..agent import EdgeAgent
    from ..request.options import RequestOptions

    if prompt == "-":
        prompt = sys.stdin.read()
    flags = broker_flags(broker, dev, trace)
    for key, value, flag in (
        ("models.default", model, "--model"),
        ("generation.max_tokens", max_tokens, "--max-tokens"),
        ("generation.temperature", temperature, "--temperature"),
        ("generation.seed", seed, "--seed"),
    ):
        if value is not None:
            flags[key] = (value, f"{flag} {value}")
    try:
        settings = check_dev(state, flags, dev)
        options = RequestOptions.parse(
            dict(mode=mode, threshold=threshold, deadline_s=deadline, private=private,
                 strategy=strategy, max_cost=max_cost, knowledge=list(knowledge) or None)
        )  # fmt: skip
        with EdgeAgent(settings, background=False) as agent:
            progress = CliProgress(lines=False)
            if as_json:
                answer = agent.ask(prompt, progress=progress, **options.model_dump())
                click.echo(json.dumps(answer.to_dict(), indent=2))
                return
            answer = _echo_events(agent.pipeline(prompt, options, live=True, progress=progress))
    except RidgelineError as exc:
        if as_json:
            click.echo(json.dumps({"error": {"kind": exc.kind, "message": str(exc)}}))
        raise
    click.echo()
    sys.stdout.flush()  # the answer's last line before the summary on stderr
    for line in _sources(answer):
        click.secho(line, err=True, dim=True)
    click.secho(f"[{summary(answer)}]", err=True, dim=True)


def _sources(answer: Answer) -> list[str]:
    """The passages the answer drew on, and what the broker was (not) sent."""
    lines = [
        f"[{c['n']}] {c['collection']} · {Path(c['source']).name} #{c['chunk']}"
        f"{' · ' + c['heading'] if c['heading'] else ''}"
        for c in answer.citations
    ]
    info = answer.decision.knowledge
    if info is not None and info.sent is not None:
        withheld = f"; withheld: {', '.join(info.withheld)}" if info.withheld else ""
        lines.append(f"[sent to the broker: {info.sent}{withheld}]")
    return lines


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
        info = answer.decision.confidence_info
        if info is not None and info.probes_ms is not None:
            variant = f" ({info.variant.split(' ')[0]})" if info.variant else ""
            parts.append(f"probes {info.probes_ms:.0f} ms{variant}")
    total = answer.decision.timings.total_ms
    parts.append(f"{total / 1000:.2f} s")
    broker = answer.decision.broker
    if broker is not None and broker.strategy not in (None, "single"):
        parts.append(_strategy_summary(broker))
    return " · ".join(parts) + f" — {answer.decision.reason}"


def _strategy_summary(broker: Any) -> str:
    """The broker's strategy, its members and the cost, in one phrase."""
    members = ", ".join(
        f"{m['model']} {m['role']}{' ✓' if m['accepted'] else ''}"
        + ("" if m["score"] is None else f" {m['score']:.2f}")
        for m in broker.members
    )
    name = broker.strategy_name or "ad hoc"
    verdict = broker.draft_verdict
    judged = ""
    if verdict is not None:
        judged = f"; draft {'accepted' if verdict['accepted'] else 'rejected'}"
        judged += " (remembered)" if broker.verdict_recorded else ""
    return f"{broker.strategy} {name}: {members}; cost {broker.cost or 0:.6g}{judged}"


def _echo_events(pipeline: Pipeline) -> Answer:
    """Print the answer's text as it streams; return the answer."""
    from ..request.events import Done, Reset, TextChunk

    for event in pipeline.events():
        if isinstance(event, TextChunk):
            click.echo(event.text, nl=False)
            sys.stdout.flush()
        elif isinstance(event, Reset):
            click.echo()
            click.secho(f"[{event.reason}; the local answer follows]", err=True, dim=True)
        elif isinstance(event, Done):
            return event.answer
    raise RuntimeError("the pipeline ended without an answer")


@cli.command()
@click.option("--http", metavar="HOST:PORT", help="OpenAI-compatible API (default: daemon.http)")
@click.option("--grpc", metavar="unix:PATH|HOST:PORT", help="gRPC edge service (daemon.grpc)")
@click.option("--slots", type=click.IntRange(1, 64), help="requests answered at once")
@click.option("--queue", type=click.IntRange(0, 4096), help="requests waiting beyond the slots")
@click.option(
    "--idle-unload", type=click.FloatRange(min=0), help="unload a model unused this many seconds"
)
@click.option(
    "--api-key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="file holding the API key (required to bind a non-loopback address)",
)
@broker_option
@dev_option
@trace_option
@click.pass_obj
def serve(
    state: CliState,
    http: str | None,
    grpc: str | None,
    slots: int | None,
    queue: int | None,
    idle_unload: float | None,
    api_key_file: Path | None,
    broker: str | None,
    dev: bool,
    trace: Path | None,
) -> None:
    """Run the edge daemon until SIGTERM or Ctrl-C (SIGHUP reloads the settings).

    Serves an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions,
    /v1/models, /health, /metrics) and the gRPC edge service that EdgeClient uses.
    Prints "http listening on URL" and "grpc listening on TARGET", then "ready".
    """
    from ..daemon import run

    flags = broker_flags(broker, dev, trace)
    for key, value, flag in (
        ("daemon.http", http, "--http"),
        ("daemon.grpc", grpc, "--grpc"),
        ("daemon.slots", slots, "--slots"),
        ("daemon.queue", queue, "--queue"),
        ("daemon.idle_unload_s", idle_unload, "--idle-unload"),
        ("daemon.api_key_file", api_key_file, "--api-key-file"),
    ):
        if value is not None:
            flags[key] = (value, f"{flag} {value}")
    settings = check_dev(state, flags, dev)
    run(settings, reload=lambda: state.load(flags).settings)


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
    from ..agent import EdgeAgent

    settings = check_dev(state, broker_flags(broker, dev, trace), dev)
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

    from ..evaluation import simulate as sim

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


dataset_option = click.option(
    "--dataset",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSONL questions: {"prompt": ..., "answers": [...]} per line',
)
limit_option = click.option(
    "--limit", type=click.IntRange(min=1), help="use only the first N questions"
)
calibrate_tokens_option = click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="answer length limit (the confidence features read the first sentence)",
)


def _calibration_items(
    dataset: Path | None, outcomes: Path | None, model: str, limit: int | None
) -> list[Any]:
    """The questions of --dataset and the judged outcomes of --outcomes (one is needed)."""
    from ..evaluation.dataset import load_judged

    if dataset is None and outcomes is None:
        raise click.UsageError("give --dataset FILE, --outcomes FILE, or both")
    items = _questions(dataset, None) if dataset is not None else []
    if outcomes is not None:
        judged = load_judged(outcomes, model)
        if not judged:
            raise InvalidRequestError(f"{outcomes}: no judged outcomes of {model}")
        items += judged
    return items[:limit] if limit else items


def _questions(path: Path, limit: int | None) -> list[Any]:
    from ..evaluation.dataset import load_dataset

    items = load_dataset(path)
    return items[:limit] if limit else items


@cli.command()
@click.option(
    "--dataset",
    type=click.Path(dir_okay=False, path_type=Path),
    help='JSONL questions: {"prompt": ..., "answers": [...]} per line',
)
@click.option(
    "--outcomes",
    type=click.Path(dir_okay=False, path_type=Path),
    help="judged outcomes (the outcome memory's JSONL: feedback and the broker's verdicts "
    "on drafts) of the model, learned from as questions with their verdict",
)
@click.option("--model", help="local model name (default: models.default)")
@click.option(
    "--method",
    type=click.Choice(["auto", "isotonic", "platt", "logistic-fast", "logistic"]),
    default="auto",
    show_default=True,
    help="calibrator to save; auto: the lowest Brier score out of sample",
)
@click.option(
    "--heldout",
    type=click.Path(dir_okay=False, path_type=Path),
    help="score the methods on this question set instead of cross-validating",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="calibration file (default: beside the model's manifest, where the agent looks)",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="reliability and coverage plot (default: <model>.calibration.png beside --out)",
)
@click.option("--no-plot", is_flag=True, help="skip the plot (no matplotlib needed)")
@click.option(
    "--remember",
    is_flag=True,
    help="also keep whether each answer was right: in the pre-route memory (preroute.memory), "
    "or, answered from knowledge, in the collections' expert selection",
)
@calibrate_tokens_option
@limit_option
@knowledge_option
@ray_options
@click.option("--json", "as_json", is_flag=True, help="print the report as one JSON object")
@click.pass_obj
def calibrate(
    state: CliState,
    dataset: Path | None,
    outcomes: Path | None,
    model: str | None,
    method: str,
    heldout: Path | None,
    out: Path | None,
    plot_path: Path | None,
    no_plot: bool,
    remember: bool,
    max_tokens: int,
    limit: int | None,
    knowledge: tuple[str, ...],
    ray_address: str | None,
    ray_actors: int,
    as_json: bool,
) -> None:
    """Fit the local model's confidence calibration on labelled questions.

    Answers every question with the agent's chat prompt, records the confidence evidence
    and whether the answer was right, scores each method out of sample (AUROC, ECE,
    Brier, accuracy at coverage), then fits the chosen one on all questions and saves it
    where the agent finds it. With --remember, each question and whether its answer was
    right also go to the pre-route's outcome memory. --outcomes adds judged outcomes (the
    broker's verdicts on drafts, feedback) as questions whose verdict is already known.
    With --knowledge (or a dataset whose questions name collections), the questions are
    answered from local knowledge and the calibration of such answers is fitted, saved as
    <model>.knowledge.calibration.json."""
    from ..agent import EdgeAgent
    from ..evaluation import harness

    settings = state.load({"models.default": (model, f"--model {model}")} if model else None)
    settings = settings.settings
    items = _calibration_items(dataset, outcomes, settings.models.default, limit)
    dataset = dataset or outcomes
    assert dataset is not None
    held = _questions(heldout, None) if heldout else None
    with EdgeAgent(settings, background=False) as agent:
        retriever = retriever_for(agent, knowledge, items + (held or []))
        fitted = _fit_calibration(
            agent, items, held, dataset, method, out, max_tokens, retriever,
            ray=ray_answering(ray_address, ray_actors),
        )  # fmt: skip
        remembered = (
            _remember(agent, fitted.name, fitted.observations, retriever) if remember else None
        )
    plot_file = None
    if not no_plot:
        plot_file = plot_path or fitted.target.with_suffix(".png")
        how = fitted.chosen_report.how
        title = f"{fitted.name}: fitted on {dataset.name} ({len(items)} questions), {how}"
        harness.plot_calibration(fitted.reports, plot_file, title)
    if as_json:
        report = fitted.report(dataset, len(items), plot_file, remembered)
        click.echo(json.dumps(_json_safe(report), indent=2))
        return
    _print_calibration(fitted, out, plot_file, len(items))
    if remembered is not None:
        click.echo(f"remembered {len(items)} outcomes in {remembered}")


@dataclass
class _Fitted:
    """A calibration fitted and saved: for the report."""

    name: str
    target: Path
    default_target: Path | None  # where the agent looks without calibration_file
    reports: list[Any]
    chosen: str
    chosen_report: Any
    accuracy: float
    observations: list[Any]
    cheap: str | None = None  # the method fitted as the cheap variant

    def report(
        self, dataset: Path, n: int, plot: Path | None, remembered: str | None
    ) -> dict[str, Any]:
        return {
            "model": self.name,
            "dataset": str(dataset),
            "questions": n,
            "local_accuracy": self.accuracy,
            "methods": [r.row() for r in self.reports],
            "chosen": self.chosen,
            "cheap": self.cheap,
            "saved": str(self.target),
            "plot": None if plot is None else str(plot),
            "remembered": remembered,
        }


def _fit_calibration(
    agent: Any,
    items: list[Any],
    held: list[Any] | None,
    dataset: Path,
    method: str,
    out: Path | None,
    max_tokens: int,
    knowledge: Any = None,
    ray: Any = None,
) -> _Fitted:
    """Answer the questions (from ``knowledge``, the retriever, when given), compare the
    methods, fit the chosen one and save it."""
    from ridgeline_core.runtime import SamplingParams

    from ..confidence.calibrated import calibration_path, prompt_style
    from ..evaluation import harness

    settings = agent.settings
    name = settings.models.default
    manifest = agent.catalog.get(name)
    target = out or calibration_path(manifest, knowledge is not None)
    if target is None:
        raise ConfigError(f"{name} has no manifest file to save beside; pass --out FILE")
    _check_writable(target)
    runtime = agent.runtime(name, CliProgress(lines=False))
    methods = harness.methods_for(knowledge is not None)
    system_prompt = settings.generation.system_prompt

    def observe(questions: list[Any]) -> list[Any]:
        return answer_questions(
            settings, runtime, questions,
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
            probes=harness.probes_needed(methods), knowledge=knowledge, ray=ray,
        )  # fmt: skip

    observations = observe(items)
    reports = harness.compare_methods(
        observations, methods, heldout=observe(held) if held is not None else None
    )
    chosen = min(reports, key=lambda r: r.brier).method if method == "auto" else method
    chosen_report = next(r for r in reports if r.method == chosen)
    accuracy = sum(o.correct for o in observations) / len(observations)
    info = {
        "dataset": str(dataset), "questions": len(items), "accuracy": accuracy,
        "max_tokens": max_tokens, "knowledge": knowledge is not None,
        "heldout": chosen_report.row(), "methods": [r.row() for r in reports],
        "fitted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    style = prompt_style(runtime, system_prompt)
    cheap = harness.cheap_method(chosen, reports)
    harness.fit(
        observations, harness.METHODS[chosen], model=name, prompt_style=style, info=info,
        cheap=cheap,
    ).save(target)  # fmt: skip
    return _Fitted(
        name, target, calibration_path(manifest, knowledge is not None), reports, chosen,
        chosen_report, accuracy, observations, None if cheap is None else cheap.method,
    )  # fmt: skip


def _print_calibration(fitted: _Fitted, out: Path | None, plot: Path | None, n: int) -> None:
    _print_methods(fitted.reports, fitted.chosen)
    click.echo(f"accuracy of the local answers: {fitted.accuracy:.3f} ({n} questions)")
    cheap = f" (cheap variant: {fitted.cheap})" if fitted.cheap else ""
    click.echo(f"saved {fitted.chosen} calibration{cheap} to {fitted.target}")
    default = fitted.default_target
    if out is not None and (default is None or out.resolve() != default.resolve()):
        click.echo(f'  (the agent reads it with confidence.calibration_file = "{out}")')
    if plot is not None:
        click.echo(f"wrote {plot}")


def _remember(agent: Any, model: str, observations: list[Any], retriever: Any) -> str:
    """Keep each observed question's outcome: in the agent's outcome memory, or, for
    answers from local knowledge, in the collections they came from. Where it went."""
    from ..knowledge.memory import Outcome

    if retriever is not None:
        for o in observations:
            used = retriever(o.item).used()
            if used:
                agent.library.judge(used, o.item.prompt, o.correct, "calibration")
        return "the collections' expert selection (knowledge.judged_weight)"
    now = time.time()
    agent.memory.extend(
        [Outcome(o.item.prompt, model, o.correct, "calibration", now) for o in observations]
    )
    return str(agent.memory.path)


@cli.command()
@click.argument("prompt")
@click.option("--right", "verdict", flag_value="right", help="the local answer was right")
@click.option("--wrong", "verdict", flag_value="wrong", help="the local answer was wrong")
@click.option("--model", help="the local model that answered (default: models.default)")
@click.option(
    "--knowledge", "knowledge", multiple=True, metavar="NAME",
    help="the answer came from this collection (repeat for more): the judgment goes to "
    "its expert selection, not to the pre-route's memory",
)  # fmt: skip
@click.pass_obj
def feedback(
    state: CliState, prompt: str, verdict: str | None, model: str | None, knowledge: tuple[str, ...]
) -> None:
    """Remember whether the local model answered PROMPT right (--right or --wrong): the
    pre-route's outcome memory (preroute.memory) then expects the same of similar prompts.
    With --knowledge, the collections that answered keep it instead, and choose themselves
    more (or less) for similar questions (knowledge.judged_weight)."""
    from ..agent import EdgeAgent

    if verdict is None:
        raise click.UsageError("say whether the answer was right: --right or --wrong")
    settings = state.load(None).settings
    with EdgeAgent(settings, background=False) as agent:
        outcome = agent.feedback(prompt, verdict == "right", model, knowledge)
        where = str(agent.memory.path)
        enabled = settings.preroute.memory.enabled
    verdict = "right" if outcome.right else "wrong"
    if knowledge:
        named = ", ".join(dict.fromkeys(knowledge))
        click.echo(f"remembered: answered {verdict} from {named} (in its expert selection)")
        if settings.knowledge.judged_weight == 0:
            click.echo("  (expert selection reads it once knowledge.judged_weight > 0)", err=True)
        return
    click.echo(f"remembered: {outcome.model} answered {verdict} (in {where})")
    if not enabled:
        click.echo("  (pre-route reads it once preroute.memory.enabled = true)", err=True)


def _check_writable(target: Path) -> None:
    """Fail before an hour of answering, not after it."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"cannot write {target}: {exc.strerror or exc}; pass --out FILE"
        ) from None


def _print_methods(reports: list[Any], chosen: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..evaluation.harness import coverage_points

    table = Table(
        "method", "AUROC", "ECE", "Brier", "s/answer", "acc@20%", "acc@50%", "acc@80%",
        "acc@100%", box=None, title=f"out of sample: {reports[0].how}",
    )  # fmt: skip
    for r in reports:
        at = dict(coverage_points(r.coverage, (0.2, 0.5, 0.8, 1.0)))
        mark = " ←" if r.method == chosen else ""
        table.add_row(
            r.method + mark, f"{r.auroc:.3f}", f"{r.ece:.3f}", f"{r.brier:.3f}",
            f"{r.seconds:.2f}", *(f"{at[c]:.2f}" for c in (0.2, 0.5, 0.8, 1.0)),
        )  # fmt: skip
    Console(width=120).print(table)


@cli.command(name="eval")
@dataset_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option(
    "--strong",
    type=click.Choice(["oracle", "broker"]),
    default="oracle",
    show_default=True,
    help="the escalation side: always right (oracle), or ask the broker",
)
@click.option("--model", help="local model name (default: models.default)")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), help="τ (default: the policy's")
@calibrate_tokens_option
@limit_option
@knowledge_option
@ray_options
@broker_option
@dev_option
@click.pass_obj
def evaluate(
    state: CliState,
    dataset: Path,
    as_json: bool,
    strong: str,
    model: str | None,
    threshold: float | None,
    max_tokens: int,
    limit: int | None,
    knowledge: tuple[str, ...],
    ray_address: str | None,
    ray_actors: int,
    broker: str | None,
    dev: bool,
) -> None:
    """Measure the whole decision on labelled questions: local accuracy, how well the
    confidence ranks answers (AUROC, ECE), how many escalate at τ and the accuracy that
    gives, and the routing curve (CPT50/80, APGR) against a random router."""
    from ..routing.policy import ThresholdPolicy
    from ..telemetry import Telemetry

    items = _questions(dataset, limit)
    flags = broker_flags(broker, dev, None)
    if model:
        flags["models.default"] = (model, f"--model {model}")
    settings = check_dev(state, flags, dev)
    name = settings.models.default
    if threshold is None:  # the policy's τ with no telemetry pulling it either way
        threshold = ThresholdPolicy(settings.policy).evaluate(Telemetry()).value
    started = time.perf_counter()
    result = {
        "model": name,
        "dataset": str(dataset),
        "strong": strong,
        **_run_eval(
            settings,
            items,
            knowledge,
            strong,
            max_tokens,
            threshold,
            ray_answering(ray_address, ray_actors),
        ),
        "seconds": time.perf_counter() - started,
    }
    if as_json:
        click.echo(json.dumps(_json_safe(result), indent=2))
        return
    _print_eval(result)


def _run_eval(
    settings: Any,
    items: list[Any],
    knowledge: tuple[str, ...],
    strong: str,
    max_tokens: int,
    threshold: float,
    ray: Any = None,
) -> dict[str, Any]:
    """Answer, judge and route ``items`` as the agent does (the cheap variant when
    confidence.variant says so, else the full one); the numbers ``eval`` reports."""
    from ridgeline_core.runtime import SamplingParams

    from ..agent import EdgeAgent
    from ..evaluation import harness

    name = settings.models.default
    with EdgeAgent(settings, background=False) as agent:
        runtime = agent.runtime(name, CliProgress(lines=False))
        retriever = retriever_for(agent, knowledge, items)
        confidence = agent.confidence_for(name, runtime, retriever is not None)
        variant = "cheap" if settings.confidence.variant == "cheap" else "full"
        observations = answer_questions(
            settings, runtime, items,
            params=SamplingParams(max_tokens=max_tokens, temperature=0.0),
            probes=confidence.probes(variant), knowledge=retriever, ray=ray,
        )  # fmt: skip
        strong_correct = (
            [True] * len(items) if strong == "oracle" else _ask_broker(agent, items, max_tokens)
        )
        result = harness.evaluate(
            observations, confidence, runtime, strong_correct, threshold, variant
        )
    return {"calibrated": confidence.calibrated, "confidence": confidence.describe(), **result}


def _ask_broker(agent: Any, items: list[Any], max_tokens: int) -> list[bool]:
    from ..evaluation.matcher import is_correct

    progress = CliProgress(unit="items")
    progress.start(f"asking the broker {len(items)} questions", len(items))
    correct = []
    try:
        for item in items:
            answer = agent.ask(item.prompt, mode="cloud", max_tokens=max_tokens)
            if answer.source != "cloud":
                raise UnavailableError(
                    f"the broker did not answer {item.id}: {answer.decision.reason}"
                )
            correct.append(is_correct(answer.text, item.answers))
            progress.advance(1)
    finally:
        progress.finish()
    return correct


def _json_safe(value: Any) -> Any:
    """NaN (a metric that is undefined, e.g. AUROC with one class) becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _print_eval(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    random = result["random"]
    table = Table("", "Ridgeline", "random router", box=None)
    table.add_row("local accuracy", _f(result["local_accuracy"]), "")
    table.add_row(f"strong accuracy ({result['strong']})", _f(result["strong_accuracy"]), "")
    table.add_row("AUROC", _f(result["auroc"]), "0.500")
    table.add_row("ECE", _f(result["ece"]), "")
    table.add_row("Brier", _f(result["brier"]), "")
    table.add_row(f"escalation rate at τ {result['threshold']:.2f}",
                  _f(result["escalation_rate"]), _f(result["escalation_rate"]))  # fmt: skip
    table.add_row("hybrid accuracy", _f(result["hybrid_accuracy"]),
                  _f(random["hybrid_accuracy"]))  # fmt: skip
    table.add_row("CPT50", _f(result["cpt50"]), _f(random["cpt50"]))
    table.add_row("CPT80", _f(result["cpt80"]), _f(random["cpt80"]))
    table.add_row("APGR", _f(result["apgr"]), _f(random["apgr"]))
    console = Console(width=100)
    console.print(
        f"{result['model']} on {result['dataset']}: {result['n']} questions, "
        f"confidence {result['confidence']}",
        highlight=False,
    )
    console.print(table)


def _f(value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.3f}"


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def main() -> None:
    cli(prog_name="edge-agent")


# Commands of the ONNX specialists, in their own module (it imports the helpers above).
from .knowledge import knowledge  # noqa: E402
from .specialists import cache, classify, specialists  # noqa: E402

for _command in (specialists, classify, cache, knowledge):
    cli.add_command(_command)
