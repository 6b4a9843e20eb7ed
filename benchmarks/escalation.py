"""Escalation: what the edge agent's decision and escalation paths cost, and what they save.

Four parts, each a table with its targets marked PASS or MISS:

1. Decision overhead, in process, no model and no broker: ``sampler.snapshot()`` +
   ``policy.evaluate()`` with the snapshot unchanged (the policy's per-snapshot cache) and
   with a new snapshot every time (``sampler.refresh()`` before each, untimed; refresh is
   timed on its own), then the whole decision with ``PreRoute.predict()``. The sampler is
   the agent's own (``EdgeAgent(settings, background=False)``: the real device sources plus
   the meters); constructing the agent loads no model. Each call is timed alone with
   ``time.perf_counter_ns``; target p99 ≤ 100 µs for snapshot + policy + pre-route.
2. Escalation overhead on loopback: ``benchmarks/stub_openai.py`` behind
   ``cloud-broker serve --dev`` (one ``[[openai]]`` backend, ``models.serve = []``, the
   config of ``broker_overhead.py``), then ``agent.ask(mode="cloud")`` against
   ``BrokerClient.ask()`` to the same broker and model, interleaved (the order alternates),
   after a warm-up. Overhead is agent - direct at p50; target ≤ 3 ms.
3. Early abort: "Write a haiku about rust." (SmolLM2 loops on it) with ``mode="local"``,
   which generates to max_tokens, against ``mode="auto"``, which aborts when the running
   confidence falls below τ - margin and escalates to the stub broker. Compares local_ms.
4. Pre-route skip: "What is 17 times 23?" with ``mode="local"`` against ``mode="auto"``,
   where pre-route predicts a low confidence and skips local generation (path
   ``skipped-local``).

Settings are the defaults (not the user's edge.toml), with the model store from ``--store``,
``$RIDGELINE_TEST_STORE`` or the edge settings' store, in that order; the agent runs
without background threads, as ``edge-agent ask`` does. A model is loaded (and a warm-up
request made) before parts 3 and 4 are timed. Run:

    .venv/bin/python benchmarks/escalation.py [--store DIR] [--requests 300] [--quick]

Results: the tables on stdout, ``benchmarks/results/escalation.json`` (with the machine),
the server logs next to it. ``--timeout`` (default 900 s) bounds the whole run; the stub
and the broker are stopped however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from broker_overhead import BROKER_TOML, RESULTS, ROOT, STUB, ServerProcess, cpu_model

from edge_agent import Answer, EdgeAgent, EdgeSettings
from edge_agent.settings import load_edge_settings
from ridgeline_core.client import BrokerClient

BACKEND = "stub"  # the [[openai]] backend's name in BROKER_TOML
STUB_TEXT = "Hello from the stub"
MODEL = "smollm2-135m-instruct"
TYPICAL = "What is the capital of France?"
LOOPING = "Write a haiku about rust."  # SmolLM2 repeats itself to max_tokens
ARITHMETIC = "What is 17 times 23?"  # pre-route's arithmetic hint
CLOUD_MAX_TOKENS = 16
LOCAL_MAX_TOKENS = 128
TARGET_DECISION_P99_US = 100.0
TARGET_OVERHEAD_P50_MS = 3.0
STARTED = time.monotonic()


@dataclass(frozen=True)
class Plan:
    iterations: int  # part 1, per measurement
    requests: int  # part 2, per leg
    warmup: int  # part 2, per leg
    runs: int  # parts 3 and 4, per mode
    max_seconds: float  # part 2's timed loop


# --- output ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, spec)


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    table = [list(header), *(list(row) for row in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_table(
    title: str, command: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    print(f"\n## {title}\n$ {command}\n", flush=True)
    print(render(header, rows), flush=True)


def percentiles_ms(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


# --- part 1: decision overhead --------------------------------------------------------------


def time_calls(
    step: Callable[[], object], n: int, before: Callable[[], object] | None = None
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """Nanoseconds of ``step()``, ``n`` times after a short warm-up; ``before()`` runs
    untimed ahead of each call."""
    clock = time.perf_counter_ns
    for _ in range(min(n, 1000)):
        if before is not None:
            before()
        step()
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        if before is not None:
            before()
        start = clock()
        step()
        out[i] = clock() - start
    return out


def part_decision(settings: EdgeSettings, plan: Plan, command: str) -> dict[str, Any]:
    with EdgeAgent(settings, background=False) as agent:
        sampler, policy, preroute = agent.sampler, agent.policy, agent.preroute
        sources = [source.name for source in sampler.device_sources]
        n = plan.iterations

        def decide() -> object:
            return policy.evaluate(sampler.snapshot())

        def decide_and_route() -> object:
            policy.evaluate(sampler.snapshot())
            return preroute.predict(TYPICAL)

        cases: list[tuple[str, np.ndarray[Any, np.dtype[np.int64]], bool]] = [
            ("snapshot + policy, snapshot unchanged", time_calls(decide, n), False),
            ("snapshot + policy, new snapshot", time_calls(decide, n, sampler.refresh), False),
            ("sampler.refresh() (after a request)", time_calls(sampler.refresh, n), False),
            (
                "preroute.predict(typical prompt)",
                time_calls(lambda: preroute.predict(TYPICAL), n),
                False,
            ),
            ("decision, snapshot unchanged", time_calls(decide_and_route, n), True),
            ("decision, new snapshot", time_calls(decide_and_route, n, sampler.refresh), True),
        ]
    rows: list[list[str]] = []
    measured: dict[str, dict[str, Any]] = {}
    for name, ns, targeted in cases:
        p50, p99 = (float(np.percentile(ns, q)) / 1000 for q in (50, 99))
        target = f"p99 ≤ {TARGET_DECISION_P99_US:g} µs" if targeted else ""
        mark = verdict(p99 <= TARGET_DECISION_P99_US) if targeted else ""
        rows.append([name, fmt(p50), fmt(p99), fmt(float(ns.max()) / 1000, ".0f"), target, mark])
        measured[name] = {"p50_us": p50, "p99_us": p99, "max_us": float(ns.max()) / 1000}
        if targeted:
            measured[name]["pass"] = p99 <= TARGET_DECISION_P99_US
    title = f"1. Decision overhead ({n} calls each; sources: {', '.join(sources)})"
    print_table(title, command, ["measured", "p50 µs", "p99 µs", "max µs", "target", ""], rows)
    print("decision = snapshot + policy.evaluate + preroute.predict, what a request does first")
    return {"iterations": n, "device_sources": sources, "cases": measured}


# --- servers: the stub and a broker in front of it ------------------------------------------


@contextlib.contextmanager
def stub_broker(broker: Path, workdir: Path, timeout_s: float) -> Iterator[str]:
    """``cloud-broker serve --dev`` with the stub as its one backend; yields its address."""
    stub = ServerProcess(
        "stub", [sys.executable, str(STUB), "--port", "0"], RESULTS / "escalation-stub.log"
    )
    server: ServerProcess | None = None
    try:
        stub_port = asyncio.run(stub.wait_listening(timeout_s))
        config = workdir / "broker.toml"
        config.write_text(BROKER_TOML.format(port=stub_port))
        argv = [str(broker), "--config", str(config), "serve", "--dev", "--listen", "127.0.0.1:0"]
        server = ServerProcess("broker", argv, RESULTS / "escalation-broker.log", cwd=workdir)
        port = asyncio.run(server.wait_listening(timeout_s))
        address = f"127.0.0.1:{port}"
        print(f"stub on 127.0.0.1:{stub_port}, broker on {address}", flush=True)
        yield address
    finally:
        if server is not None:
            server.stop()
        stub.stop()


# --- part 2: escalation overhead ------------------------------------------------------------


def _check_stub(text: str, who: str) -> None:
    if text != STUB_TEXT:
        raise RuntimeError(f"{who} answered {text!r}, not {STUB_TEXT!r}")


def part_overhead(agent: EdgeAgent, address: str, plan: Plan, command: str) -> dict[str, Any]:
    direct = BrokerClient(address, plaintext=True, timeout_s=30)

    def via_agent() -> Answer:
        answer = agent.ask(TYPICAL, mode="cloud", max_tokens=CLOUD_MAX_TOKENS)
        if answer.decision.path != "cloud":
            raise RuntimeError(
                f"agent answered on path {answer.decision.path}: {answer.decision.reason}"
            )
        _check_stub(answer.text, "agent")
        return answer

    def via_client() -> None:
        _check_stub(direct.ask(TYPICAL, max_tokens=CLOUD_MAX_TOKENS, model=BACKEND).text, "client")

    try:
        for _ in range(plan.warmup):
            via_agent()
            via_client()
        agent_s: list[float] = []
        direct_s: list[float] = []
        answers: list[Answer] = []
        deadline = time.monotonic() + plan.max_seconds
        for i in range(plan.requests):
            if time.monotonic() > deadline:
                print(f"  stopped after {i} pairs: --max-seconds {plan.max_seconds:g} reached")
                break
            for leg in ("agent", "direct") if i % 2 == 0 else ("direct", "agent"):
                start = time.perf_counter()
                if leg == "agent":
                    answers.append(via_agent())
                    agent_s.append(time.perf_counter() - start)
                else:
                    via_client()
                    direct_s.append(time.perf_counter() - start)
    finally:
        direct.close()
    a, d = percentiles_ms(agent_s), percentiles_ms(direct_s)
    added = {q: a[q] - d[q] for q in a}
    ok = added["p50"] <= TARGET_OVERHEAD_P50_MS
    rows = [
        ["BrokerClient.ask (direct)", str(len(direct_s)), *(fmt(d[q], ".3f") for q in d), "", ""],
        ["agent.ask(mode=cloud)", str(len(agent_s)), *(fmt(a[q], ".3f") for q in a), "", ""],
        [
            "agent - direct",
            "",
            *(fmt(added[q], "+.3f") for q in added),
            f"p50 ≤ {TARGET_OVERHEAD_P50_MS:g} ms",
            verdict(ok),
        ],
    ]
    title = (
        f"2. Escalation overhead on loopback (stub broker, max_tokens {CLOUD_MAX_TOKENS}, "
        f"warm-up {plan.warmup}, interleaved)"
    )
    print_table(title, command, ["leg", "n", "p50 ms", "p99 ms", "mean ms", "target", ""], rows)
    stages = {
        name: statistics.fmean(getattr(x.decision.timings, name) or 0.0 for x in answers)
        for name in ("decide_ms", "broker_ms", "total_ms")
    }
    stages["other_ms"] = stages["total_ms"] - stages["decide_ms"] - stages["broker_ms"]
    print(
        "\nagent stage means (decision.timings): "
        + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
    )
    return {
        "direct_ms": d,
        "agent_ms": a,
        "added_ms": added,
        "pass": ok,
        "agent_stage_means_ms": stages,
    }


# --- parts 3 and 4: local runs against the auto path ----------------------------------------


@dataclass(frozen=True)
class Run:
    path: str
    local_ms: float  # 0 when the local model did not run
    broker_ms: float | None
    total_ms: float
    tokens: int  # local completion tokens
    aborted_at: int | None
    tau: float

    @classmethod
    def of(cls, answer: Answer) -> Run:
        d = answer.decision
        return cls(
            path=d.path,
            local_ms=d.timings.local_ms or 0.0,
            broker_ms=d.timings.broker_ms,
            total_ms=d.timings.total_ms,
            tokens=answer.timings.completion_tokens if answer.timings else 0,
            aborted_at=d.aborted.at_token if d.aborted else None,
            tau=d.threshold,
        )


def compare(agent: EdgeAgent, prompt: str, runs: int) -> tuple[list[Run], list[Run]]:
    """``runs`` requests in mode local and in mode auto, alternating, after one of each."""
    agent.ask(prompt, mode="local", max_tokens=LOCAL_MAX_TOKENS)  # loads the model
    agent.ask(prompt, mode="auto", max_tokens=LOCAL_MAX_TOKENS)
    local, auto = [], []
    for _ in range(runs):
        local.append(Run.of(agent.ask(prompt, mode="local", max_tokens=LOCAL_MAX_TOKENS)))
        auto.append(Run.of(agent.ask(prompt, mode="auto", max_tokens=LOCAL_MAX_TOKENS)))
    return local, auto


def _median(runs: list[Run], field: str) -> float | None:
    values = [getattr(run, field) for run in runs if getattr(run, field) is not None]
    return statistics.median(values) if values else None


def _saved(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "-"
    share = f" ({100 * (1 - after / before):.0f} %)" if before else ""
    return f"{before - after:.1f}{share}"


COMPARE_HEADER = [
    "mode",
    "runs",
    "local ms",
    "tokens",
    "broker ms",
    "total ms",
    "path",
    "target",
    "",
]


def _mode_row(mode: str, runs: list[Run], path: str, target: str = "", mark: str = "") -> list[str]:
    return [
        f"mode={mode}",
        str(len(runs)),
        fmt(_median(runs, "local_ms"), ".1f"),
        fmt(_median(runs, "tokens"), ".0f"),
        fmt(_median(runs, "broker_ms"), ".1f"),
        fmt(_median(runs, "total_ms"), ".1f"),
        path,
        target,
        mark,
    ]


def _compare_table(
    title: str,
    command: str,
    local: list[Run],
    auto: list[Run],
    auto_path: str,
    check: str,
    ok: bool,
) -> dict[str, Any]:
    """Print the local-versus-auto table of parts 3 and 4; return the runs for the report."""
    saved = [_saved(_median(local, f), _median(auto, f)) for f in ("local_ms", "total_ms")]
    rows = [
        _mode_row("local", local, _paths(local)),
        _mode_row("auto", auto, auto_path, check, verdict(ok)),
        ["saved by auto", "", saved[0], "", "", saved[1], "", "", ""],
    ]
    title += f", max_tokens {LOCAL_MAX_TOKENS}, τ {auto[-1].tau:.2f}; medians"
    print_table(title, command, COMPARE_HEADER, rows)
    return {
        "local": [dataclasses.asdict(run) for run in local],
        "auto": [dataclasses.asdict(run) for run in auto],
        "local_ms_saved": saved[0],
        "total_ms_saved": saved[1],
        "pass": ok,
    }


def _paths(runs: list[Run]) -> str:
    return ", ".join(sorted({run.path for run in runs}))


def part_abort(agent: EdgeAgent, plan: Plan, command: str) -> dict[str, Any]:
    local, auto = compare(agent, LOOPING, plan.runs)
    ok = all(run.aborted_at is not None for run in auto)
    at = ", ".join(str(run.aborted_at) for run in auto)
    path = f"{_paths(auto)}, aborted at token {at}"
    title = f"3. Early abort ({LOOPING!r})"
    return _compare_table(title, command, local, auto, path, "aborts every run", ok)


def part_preroute(agent: EdgeAgent, plan: Plan, command: str) -> dict[str, Any]:
    local, auto = compare(agent, ARITHMETIC, plan.runs)
    ok = all(run.path == "skipped-local" and run.local_ms == 0 for run in auto)
    title = f"4. Pre-route skip ({ARITHMETIC!r})"
    result = _compare_table(title, command, local, auto, _paths(auto), "skips local every run", ok)
    print("the stub broker answers in milliseconds; a real cloud model adds its own time")
    return result


# --- main -----------------------------------------------------------------------------------


def edge_settings(store: Path, workdir: Path, address: str = "") -> EdgeSettings:
    data: dict[str, Any] = {
        "models": {"store_dir": str(store), "default": MODEL},
        "budget": {"state_file": str(workdir / "budget.json")},
        "escalation": {"deadline_s": 30.0},
    }
    if address:
        data["broker"] = {"address": address, "plaintext": True, "model": BACKEND}
    return EdgeSettings.model_validate(data)


def machine() -> dict[str, Any]:
    model = cpu_model()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg_start": os.getloadavg(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument(
        "--store",
        type=Path,
        help="model store (default: $RIDGELINE_TEST_STORE, else the edge settings')",
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="part 2, per leg (default 300; --quick 50)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations, requests and runs")
    parser.add_argument("--parts", default="1,2,3,4", help="comma-separated parts to run")
    parser.add_argument("--broker", type=Path, default=ROOT / ".venv" / "bin" / "cloud-broker")
    parser.add_argument(
        "--max-seconds", type=float, default=120.0, help="cap on part 2's timed loop"
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds for the whole run")
    parser.add_argument("--output", type=Path, default=RESULTS / "escalation.json")
    args = parser.parse_args(argv)
    args.parts = {int(part) for part in args.parts.split(",") if part.strip()}
    if not args.parts <= {1, 2, 3, 4}:
        parser.error("--parts takes 1, 2, 3 and 4")
    return args


def resolve_store(args: argparse.Namespace) -> tuple[Path, str]:
    """The model store, and the environment prefix that reproduces the run's command."""
    if args.store is not None:
        return args.store, ""
    test_store = os.environ.get("RIDGELINE_TEST_STORE")
    if test_store:
        return Path(test_store), f"RIDGELINE_TEST_STORE={shlex.quote(test_store)} "
    return load_edge_settings(config_file=None, env=os.environ).settings.models.store_dir, ""


class RunTimeout(BaseException):
    """``--timeout`` passed; a BaseException so that no part's error handling swallows it."""


def _on_alarm(signum: int, frame: FrameType | None) -> None:
    raise RunTimeout(f"--timeout reached after {time.monotonic() - STARTED:.0f} s")


def run_parts(
    args: argparse.Namespace, plan: Plan, store: Path, command: str, results: dict[str, Any]
) -> None:
    """Each selected part in turn, its result (or error) into ``results``."""

    def attempt(name: str, part: Callable[[], dict[str, Any]]) -> None:
        try:
            results[name] = part()
        except Exception as exc:  # one part failing must not lose the others
            print(f"\n{name}: not measured: {type(exc).__name__}: {exc}", flush=True)
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}

    with tempfile.TemporaryDirectory(prefix="bench-escalation-") as tmp:
        workdir = Path(tmp)
        if 1 in args.parts:
            attempt("decision", lambda: part_decision(edge_settings(store, workdir), plan, command))
        if not args.parts & {2, 3, 4}:
            return
        with (
            stub_broker(args.broker, workdir, 60.0) as address,
            EdgeAgent(edge_settings(store, workdir, address), background=False) as agent,
        ):
            if 2 in args.parts:
                attempt("overhead", lambda: part_overhead(agent, address, plan, command))
            if 3 in args.parts:
                attempt("abort", lambda: part_abort(agent, plan, command))
            if 4 in args.parts:
                attempt("preroute", lambda: part_preroute(agent, plan, command))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan(
        iterations=10_000 if args.quick else 100_000,
        requests=args.requests or (50 if args.quick else 300),
        warmup=5 if args.quick else 20,
        runs=1 if args.quick else 3,
        max_seconds=args.max_seconds,
    )
    store, env_prefix = resolve_store(args)
    python = (
        os.path.relpath(sys.executable)
        if sys.executable.startswith(os.getcwd())
        else sys.executable
    )
    command = env_prefix + shlex.join([python, *sys.argv])
    info = machine()
    print(
        f"measured on {info['cpus_usable']} cores ({info['cpu_model'] or 'unknown cpu'}), "
        f"python {info['python']}, {info['date']}; model store {store}",
        flush=True,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, _on_alarm)
    results: dict[str, Any] = {}
    signal.alarm(args.timeout)
    try:
        run_parts(args, plan, store, command, results)
    except RunTimeout as exc:
        print(f"\nstopped: {exc}; the parts not finished are not measured", flush=True)
        results["timeout"] = {"error": str(exc)}
    finally:
        signal.alarm(0)
    info["loadavg_end"] = os.getloadavg()
    start, end = info["loadavg_start"][0], info["loadavg_end"][0]
    print(f"\nload average (1 min): {start:.2f} at the start, {end:.2f} at the end")
    if max(start, end) > info["cpus_usable"]:
        print("  more runnable work than cores: other processes shared the CPUs; rerun when idle")
    report = {
        "command": command,
        "machine": info,
        "plan": dataclasses.asdict(plan),
        "parts": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults: {args.output}")
    return 1 if any("error" in part for part in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
