"""Broker overhead: what ``cloud-broker`` adds to a request, apart from model time.

A fast OpenAI-compatible stub (``benchmarks/stub_openai.py``, a fixed five-event stream sent
at once) is the shared backend. Each leg is a closed-loop load at concurrency 1, 64 and 256
from this process (the load generator); the servers under test are separate processes:

  direct      aiohttp streaming POST to the stub (the baseline)
  broker      ``cloud-broker serve --dev`` with the stub as its only (openai) backend, loaded
              through ``AsyncBrokerClient.generate`` (gRPC server streaming)
  grpc-floor  a bare grpc.aio Broker server streaming the same answer with no upstream call
              (same client): what gRPC in Python costs before the broker does any work
  litellm     LiteLLM's proxy (its own venv) fronting the stub, loaded with the direct client

Latency is request start to the final event ([DONE] / the result message). Every server
level runs right after a direct level at the same concurrency, and "added" latency is the
difference to that direct run, so drift on the shared machine hits both alike. rps counts
successful requests over the level's wall time. Proxy CPU is the server process's user+sys
time per request (from /proc): what a request costs the proxy, apart from queueing; client
CPU is the same for this process. A closed loop at concurrency c has mean latency c / rps
(Little's law), so at c=64 added latency mostly measures throughput, not a fixed cost.

Rerun (``make bench-broker`` does this, creating ``.venv-litellm`` first):

    .venv/bin/python benchmarks/broker_overhead.py --litellm .venv-litellm/bin/litellm

Options: ``--legs direct,broker,grpc-floor,litellm``, ``--concurrency 1,64,256``,
``--requests 300,3000,5000``, ``--warmup 200``, ``--max-seconds 30`` per level, ``--profile``
(py-spy on the broker and LiteLLM during one extra, unreported c=64 level; add
``--profile-native`` for gRPC's C core and syscalls), ``--litellm-master-key``. Results: a
table on stdout, ``benchmarks/results/broker_overhead.json`` (with the machine: cores,
Python, grpcio, LiteLLM versions), server logs and profiles next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
STUB = ROOT / "benchmarks" / "stub_openai.py"
EXPECTED_TEXT = "Hello from the stub"
PROMPT = "Say hello"
MODEL = "stub"
MAX_TOKENS = 16
TARGET_CONCURRENCY = 64
TARGET_ADDED_P50_MS = 1.0
TARGET_ADDED_P99_MS = 5.0
TARGET_LITELLM_RATIO = 5.0
LISTENING = re.compile(rb"listening on ([\w.\-]+|\[[0-9a-f:]+\]):(\d+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")

Call = Callable[[], Awaitable[None]]


class RequestError(Exception):
    """A request that failed or answered something else than the stub's text."""


# --- server processes ---------------------------------------------------------------------


class ServerProcess:
    """A server under test: a subprocess in its own session, output to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, **popen: Any) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                **popen,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join("    " + line for line in text[-lines:])

    def _failed(self, why: str) -> RuntimeError:
        return RuntimeError(f"{self.name} {why}; log {self.log}:\n{self.log_tail()}")

    async def wait_listening(self, timeout_s: float) -> int:
        """The port from the ``listening on HOST:PORT`` line the server prints when ready."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = LISTENING.search(self.log.read_bytes())
            if found:
                return int(found.group(2))
            if self.proc.poll() is not None:
                raise self._failed(f"exited with status {self.proc.returncode} before listening")
            await asyncio.sleep(0.05)
        raise self._failed(f"printed no 'listening on HOST:PORT' line in {timeout_s:.0f} s")

    async def wait_http(self, url: str, timeout_s: float) -> None:
        import aiohttp

        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise self._failed(f"exited with status {self.proc.returncode} while starting")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.25)
        raise self._failed(f"did not answer {url} within {timeout_s:.0f} s")

    def cpu_s(self) -> float:
        """User + system CPU seconds of the process and its live descendants."""
        total = 0
        for pid in _process_tree(self.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / CLK_TCK

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, ()))
    return tree


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- clients: one async context per level, yielding a function that makes one request ------


class Target(Protocol):
    def session(self, concurrency: int) -> contextlib.AbstractAsyncContextManager[Call]: ...


@dataclass
class OpenAIStreamTarget:
    """OpenAI chat completions, streamed, through one aiohttp session (direct and LiteLLM)."""

    base_url: str
    headers: dict[str, str] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def session(self, concurrency: int) -> AsyncIterator[Call]:
        import aiohttp

        body = json.dumps(
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": PROMPT}],
                "max_tokens": MAX_TOKENS,
                "stream": True,
            }
        ).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        url = f"{self.base_url}/chat/completions"
        connector = aiohttp.TCPConnector(limit=max(concurrency, 100), limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

            async def call() -> None:
                async with http.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise RequestError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                    text = await _read_sse(resp.content)
                if text != EXPECTED_TEXT:
                    raise RequestError(f"streamed {text!r}, not {EXPECTED_TEXT!r}")

            yield call


async def _read_sse(content: Any) -> str:
    """The text of an OpenAI SSE stream, read to its end; it must close with [DONE]."""
    parts: list[str] = []
    done = False
    async for line in content:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        for choice in json.loads(data).get("choices", ()):
            text = (choice.get("delta") or {}).get("content")
            if text:
                parts.append(text)
    if not done:
        raise RequestError("stream ended without data: [DONE]")
    return "".join(parts)


@dataclass
class BrokerTarget:
    """The broker's Generate stream through the project's AsyncBrokerClient."""

    address: str

    @contextlib.asynccontextmanager
    async def session(self, concurrency: int) -> AsyncIterator[Call]:
        from ridgeline_core.client import AsyncBrokerClient

        async with AsyncBrokerClient(self.address, plaintext=True) as client:

            async def call() -> None:
                parts: list[str] = []
                result = None
                async for event in client.generate(PROMPT, model=MODEL, max_tokens=MAX_TOKENS):
                    if event.WhichOneof("event") == "delta":
                        parts.append(event.delta.text)
                    else:
                        result = event.result
                if result is None:
                    raise RequestError("stream ended without a result")
                if "".join(parts) != EXPECTED_TEXT:
                    raise RequestError(f"streamed {''.join(parts)!r}, not {EXPECTED_TEXT!r}")

            yield call


# --- the closed-loop load generator ---------------------------------------------------------


@dataclass
class LevelResult:
    leg: str
    concurrency: int
    requested: int
    latencies_s: list[float]
    errors: dict[str, int]
    wall_s: float
    proxy_cpu_s: float | None
    stub_cpu_s: float
    client_cpu_s: float

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) * 1000 if self.ok else float("nan")

    @property
    def rps(self) -> float:
        return self.ok / self.wall_s if self.wall_s > 0 else 0.0

    def per_request_ms(self, cpu_s: float | None) -> float | None:
        return None if cpu_s is None or not self.ok else cpu_s / self.ok * 1000

    def _latency_json(self) -> dict[str, float]:
        shown = {name: self.ms(q) for name, q in (("p50", 50), ("p90", 90), ("p99", 99))}
        shown |= {"p999": self.ms(99.9), "mean": float(np.mean(self.latencies_s)) * 1000}
        shown["max"] = max(self.latencies_s) * 1000
        return {name: round(value, 3) for name, value in shown.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "leg": self.leg,
            "concurrency": self.concurrency,
            "requested": self.requested,
            "ok": self.ok,
            "errors": self.errors,
            "wall_s": round(self.wall_s, 4),
            "rps": round(self.rps, 1),
            "latency_ms": self._latency_json() if self.ok else None,
            "proxy_cpu_ms_per_req": _round(self.per_request_ms(self.proxy_cpu_s)),
            "stub_cpu_ms_per_req": _round(self.per_request_ms(self.stub_cpu_s)),
            "client_cpu_ms_per_req": _round(self.per_request_ms(self.client_cpu_s)),
        }


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


async def _drive(
    call: Call, concurrency: int, count: int, max_s: float
) -> tuple[list[float], Counter[str], float]:
    """``count`` requests from ``concurrency`` workers, each sending its next one as soon as
    the last ends; stops early after ``max_s`` seconds."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    remaining = count
    started = time.perf_counter()
    deadline = started + max_s

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            now = time.perf_counter()
            if now > deadline:
                return
            remaining -= 1
            try:
                await call()
            except Exception as exc:  # a failed request is counted, not fatal
                errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
            else:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - started


@dataclass
class LoadPlan:
    concurrency: list[int]
    requests: list[int]
    warmup: int
    max_seconds: float

    def levels(self) -> Iterator[tuple[int, int]]:
        return zip(self.concurrency, self.requests, strict=True)


async def run_level(
    leg: str,
    target: Target,
    concurrency: int,
    requests: int,
    plan: LoadPlan,
    stub: ServerProcess,
    proxy: ServerProcess | None,
) -> LevelResult:
    async with target.session(concurrency) as call:
        await _drive(call, concurrency, max(plan.warmup, 2 * concurrency), plan.max_seconds)
        stub_cpu, proxy_cpu = stub.cpu_s(), proxy.cpu_s() if proxy else 0.0
        client_cpu = time.process_time()
        latencies, errors, wall = await _drive(call, concurrency, requests, plan.max_seconds)
        client_cpu = time.process_time() - client_cpu
        stub_cpu = stub.cpu_s() - stub_cpu
        proxy_cpu = proxy.cpu_s() - proxy_cpu if proxy else 0.0
    result = LevelResult(
        leg=leg,
        concurrency=concurrency,
        requested=requests,
        latencies_s=latencies,
        errors=dict(errors),
        wall_s=wall,
        proxy_cpu_s=proxy_cpu if proxy else None,
        stub_cpu_s=stub_cpu,
        client_cpu_s=client_cpu,
    )
    _print_progress(result)
    return result


def _print_progress(r: LevelResult) -> None:
    errors = f", {sum(r.errors.values())} errors" if r.errors else ""
    print(
        f"  {r.leg:<8} c={r.concurrency:<4} {r.ok:>5} ok in {r.wall_s:6.2f} s  "
        f"p50 {r.ms(50):7.2f} ms  p99 {r.ms(99):7.2f} ms  {r.rps:7.0f} rps{errors}",
        flush=True,
    )
    for message, count in list(r.errors.items())[:3]:
        print(f"    {count} x {message}", flush=True)


# --- profiling ------------------------------------------------------------------------------


class Profiler:
    """``py-spy record`` on a server while a ``with`` block runs, written as speedscope JSON.

    Sampling is nonblocking unless ``native``: native frames (gRPC's C core, syscalls) need
    py-spy to pause the process for each sample, which slows it down more."""

    def __init__(self, py_spy: Path, pid: int, output: Path, native: bool) -> None:
        self.output = output
        mode = ["--native"] if native else ["--nonblocking"]
        self._argv = [
            *(str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--subprocesses"),
            *(*mode, "--format", "speedscope", "--output", str(output)),
        ]
        self._proc: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> Profiler:
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        await asyncio.sleep(1.0)  # let it attach
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            _, err = self._proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        if not self.output.exists():
            print(f"    py-spy wrote no profile: {err.decode(errors='replace')[-500:]}")


def _frame_name(frame: dict[str, Any]) -> str:
    file = str(frame.get("file") or "?")
    file = re.sub(r"^.*(site-packages/|lib/python3\.\d+/)", "", file)
    file = file.removeprefix(f"{ROOT}/")
    return f"{frame['name']} ({file}:{frame.get('line', '?')})"


def top_frames(speedscope: Path, count: int = 20) -> dict[str, list[tuple[str, float]]]:
    """Percent of samples per function: on top of the stack (self), anywhere in it (total),
    and anywhere for this repository's own code (project)."""
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    names = [_frame_name(frame) for frame in frames]
    ours = {
        i
        for i, frame in enumerate(frames)
        if str(frame.get("file", "")).startswith(str(ROOT)) and ".venv" not in frame["file"]
    }
    own: Counter[int] = Counter()
    total: Counter[int] = Counter()
    weight = 0.0
    for profile in data["profiles"]:
        for stack, w in zip(profile["samples"], profile["weights"], strict=True):
            weight += w
            if stack:
                own[stack[-1]] += w
            for index in set(stack):
                total[index] += w
    project = Counter({i: w for i, w in total.items() if i in ours})
    weight = weight or 1.0
    return {
        kind: [(names[i], round(100 * w / weight, 1)) for i, w in counter.most_common(count)]
        for kind, counter in (("self", own), ("total", total), ("project", project))
    }


async def profile_level(
    leg: str,
    target: Target,
    plan: LoadPlan,
    stub: ServerProcess,
    proxy: ServerProcess,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One extra, unreported level at the target concurrency with py-spy attached."""
    output = RESULTS / f"profile_{leg}_c{TARGET_CONCURRENCY}.speedscope.json"
    output.unlink(missing_ok=True)
    if not args.py_spy.exists():
        return {"error": f"{args.py_spy} not found (pip install py-spy)"}
    count = plan.requests[plan.concurrency.index(TARGET_CONCURRENCY)]
    print(f"  profiling {leg} at c={TARGET_CONCURRENCY} with py-spy (not in the table)")
    async with Profiler(args.py_spy, proxy.pid, output, args.profile_native):
        profiled = await run_level(
            f"{leg}+prof", target, TARGET_CONCURRENCY, count, plan, stub, proxy
        )
    if not output.exists():
        return {"error": "py-spy wrote no profile"}
    top = top_frames(output)
    for kind, title in (("self", "on top of the stack"), ("project", "in the stack, our code")):
        if not top[kind]:
            continue
        print(f"  {leg} under py-spy, % of samples with the function {title}:")
        for name, share in top[kind][:10]:
            print(f"    {share:5.1f}%  {name}")
    print(f"  profile: {output.relative_to(ROOT)} (open in https://www.speedscope.app)")
    return {"file": str(output.relative_to(ROOT)), "run": profiled.to_json(), "top": top}


# --- legs -----------------------------------------------------------------------------------


@dataclass
class LegOutcome:
    leg: str
    levels: list[tuple[LevelResult, LevelResult]] = field(default_factory=list)  # direct, leg
    not_measured: str | None = None
    profile: dict[str, Any] | None = None


async def run_paired(
    leg: str,
    target: Target,
    direct: Target,
    plan: LoadPlan,
    stub: ServerProcess,
    proxy: ServerProcess,
) -> list[tuple[LevelResult, LevelResult]]:
    pairs = []
    for concurrency, requests in plan.levels():
        baseline = await run_level("direct", direct, concurrency, requests, plan, stub, None)
        measured = await run_level(leg, target, concurrency, requests, plan, stub, proxy)
        pairs.append((baseline, measured))
    return pairs


BROKER_TOML = """\
[models]
serve = []
default = "stub"

[limits]
requests_per_minute = 0   # 0 = unlimited
tokens_per_minute = 0

[metrics]
listen = ""               # off

[[openai]]
name = "stub"
base_url = "http://127.0.0.1:{port}/v1"
api_key = "none"
slots = 512
queue = 1024
max_connections = 512     # upstream pool; the default (128) would cap c=256
"""

LITELLM_YAML = """\
model_list:
  - model_name: stub
    litellm_params:
      model: openai/stub
      api_base: http://127.0.0.1:{port}/v1
      api_key: dummy
litellm_settings:
  telemetry: false
general_settings:
  {auth}
"""


async def grpc_leg(
    leg: str,
    argv: list[str],
    args: argparse.Namespace,
    plan: LoadPlan,
    stub: ServerProcess,
    stub_port: int,
    workdir: Path,
) -> LegOutcome:
    """A gRPC Broker server that prints ``listening on HOST:PORT``, loaded through
    AsyncBrokerClient."""
    print(f"{leg}: starting {shlex.join(argv)}", flush=True)
    outcome = LegOutcome(leg)
    server = ServerProcess(leg, argv, RESULTS / f"{leg}.log", cwd=workdir)
    try:
        port = await server.wait_listening(args.start_timeout)
        target = BrokerTarget(f"127.0.0.1:{port}")
        direct = OpenAIStreamTarget(f"http://127.0.0.1:{stub_port}/v1")
        outcome.levels = await run_paired(leg, target, direct, plan, stub, server)
        if args.profile and leg == "broker":
            outcome.profile = await profile_level(leg, target, plan, stub, server, args)
    except Exception as exc:  # one leg failing must not lose the others
        outcome.not_measured = _failure(exc)
        print(f"{leg}: not measured: {outcome.not_measured}", flush=True)
    finally:
        server.stop()
    return outcome


async def broker_leg(
    args: argparse.Namespace, plan: LoadPlan, stub: ServerProcess, stub_port: int, workdir: Path
) -> LegOutcome:
    executable = Path(args.broker)
    if not executable.exists():
        print(f"broker: not measured: {executable} not found", flush=True)
        return LegOutcome("broker", not_measured=f"{executable} not found")
    config = workdir / "broker.toml"
    config.write_text(BROKER_TOML.format(port=stub_port))
    argv = [str(executable), "--config", str(config), "serve", "--dev", "--listen", "127.0.0.1:0"]
    return await grpc_leg("broker", argv, args, plan, stub, stub_port, workdir)


async def grpc_floor_leg(
    args: argparse.Namespace, plan: LoadPlan, stub: ServerProcess, stub_port: int, workdir: Path
) -> LegOutcome:
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-grpc-floor"]
    return await grpc_leg("grpc-floor", argv, args, plan, stub, stub_port, workdir)


def serve_grpc_floor() -> None:
    """The ``grpc-floor`` leg's server: a bare grpc.aio Broker with the broker's transport
    options that streams the same four deltas and a result at once, with no upstream call.
    What gRPC in Python costs before the broker does any work."""
    import grpc
    import grpc.aio

    from ridgeline.v1 import broker_pb2, broker_pb2_grpc
    from ridgeline_core import transport

    deltas = [
        broker_pb2.GenerateResponse(delta=broker_pb2.TextDelta(text=text, model=MODEL))
        for text in ("Hello", " from", " the", " stub")
    ]
    result = broker_pb2.GenerateResponse(
        result=broker_pb2.GenerateResult(
            finish_reason=broker_pb2.FINISH_REASON_STOP,
            models_used=[MODEL],
            answer_model=MODEL,
            usage=broker_pb2.Usage(prompt_tokens=8, completion_tokens=4),
        )
    )

    class FloorBroker(broker_pb2_grpc.BrokerServicer):
        async def Generate(
            self, request: broker_pb2.GenerateRequest, context: Any
        ) -> AsyncIterator[broker_pb2.GenerateResponse]:
            for delta in deltas:
                yield delta
            yield result

        async def ListModels(
            self, request: broker_pb2.ListModelsRequest, context: Any
        ) -> broker_pb2.ListModelsResponse:
            return broker_pb2.ListModelsResponse(default_model=MODEL)

    async def serve() -> None:
        server = grpc.aio.server(options=transport.server_options())
        broker_pb2_grpc.add_BrokerServicer_to_server(FloorBroker(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"listening on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def _failure(exc: Exception) -> str:
    """A start failure as its message (it carries the log tail); anything else with its
    traceback, since that is a bug here or in the client."""
    if isinstance(exc, RuntimeError):
        return str(exc)
    return "".join(traceback.format_exception(exc)).rstrip()


def litellm_command(path: Path) -> tuple[list[str], Path]:
    """How to start the proxy from a ``litellm`` script or a Python with litellm installed,
    and that Python (absolute: the proxy runs in a work directory of its own)."""
    path = path.absolute()
    if path.name.startswith("python"):
        run = "import sys; from litellm import run_server; sys.exit(run_server())"
        return [str(path), "-c", run], path
    return [str(path)], path.parent / "python"


async def litellm_leg(
    args: argparse.Namespace, plan: LoadPlan, stub: ServerProcess, stub_port: int, workdir: Path
) -> LegOutcome:
    outcome = LegOutcome("litellm")
    path = Path(args.litellm)
    if not path.exists():
        outcome.not_measured = (
            f"{path} not found: create it with `make bench-broker`, or pass --litellm "
            "PATH_TO_litellm_or_its_python"
        )
        print(f"litellm: not measured: {outcome.not_measured}", flush=True)
        return outcome
    port = free_port()
    master_key = f"sk-bench-{secrets.token_hex(16)}" if args.litellm_master_key else None
    auth = (
        f"master_key: {master_key}"
        if master_key
        else "dangerously_permit_weak_or_unset_master_key: true  # no auth, like --dev"
    )
    config = workdir / "litellm.yaml"
    config.write_text(LITELLM_YAML.format(port=stub_port, auth=auth))
    command, _ = litellm_command(path)
    argv = [*command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the cost map from GitHub
        "LITELLM_LOG": "ERROR",
        "LITELLM_TELEMETRY": "False",
        "NO_PROXY": "*",
    }
    print(f"litellm: starting {shlex.join(argv)}", flush=True)
    server = ServerProcess("litellm", argv, RESULTS / "litellm.log", cwd=workdir, env=env)
    try:
        started = time.monotonic()
        base = f"http://127.0.0.1:{port}"
        await server.wait_http(f"{base}/health/liveliness", args.start_timeout)
        print(f"litellm: ready after {time.monotonic() - started:.1f} s", flush=True)
        headers = {"Authorization": f"Bearer {master_key}"} if master_key else {}
        target = OpenAIStreamTarget(f"{base}/v1", headers)
        direct = OpenAIStreamTarget(f"http://127.0.0.1:{stub_port}/v1")
        outcome.levels = await run_paired("litellm", target, direct, plan, stub, server)
        if args.profile:
            outcome.profile = await profile_level("litellm", target, plan, stub, server, args)
    except Exception as exc:  # one leg failing must not lose the others
        outcome.not_measured = _failure(exc)
        print(f"litellm: not measured: {outcome.not_measured}", flush=True)
    finally:
        server.stop()
    return outcome


async def direct_only(plan: LoadPlan, stub: ServerProcess, stub_port: int) -> LegOutcome:
    outcome = LegOutcome("direct")
    direct = OpenAIStreamTarget(f"http://127.0.0.1:{stub_port}/v1")
    for concurrency, requests in plan.levels():
        result = await run_level("direct", direct, concurrency, requests, plan, stub, None)
        outcome.levels.append((result, result))
    return outcome


# --- report ---------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None or value != value else format(value, spec)


TABLE_HEADER = (
    "leg",
    "conc",
    "ok",
    "p50 ms",
    "p99 ms",
    "+p50 ms",
    "+p99 ms",
    "rps",
    "proxy cpu ms/req",
    "client cpu ms/req",
    "errors",
)


def _row(run: LevelResult, baseline: LevelResult | None) -> list[str]:
    """One table row; the added columns compare with ``baseline`` (the direct run before)."""
    return [
        run.leg,
        str(run.concurrency),
        str(run.ok),
        _fmt(run.ms(50)),
        _fmt(run.ms(99)),
        _fmt(run.ms(50) - baseline.ms(50)) if baseline else "-",
        _fmt(run.ms(99) - baseline.ms(99)) if baseline else "-",
        _fmt(run.rps, ".0f"),
        _fmt(run.per_request_ms(run.proxy_cpu_s), ".3f"),
        _fmt(run.per_request_ms(run.client_cpu_s), ".3f"),
        str(sum(run.errors.values())),
    ]


def table(outcomes: list[LegOutcome]) -> str:
    """Rows in run order: each server row follows the direct row it is compared with."""
    rows: list[list[str]] = []
    for outcome in outcomes:
        if outcome.not_measured:
            rows.append([outcome.leg, "not measured"])
        for baseline, measured in outcome.levels:
            if baseline is not measured:
                rows.append(_row(baseline, None))
            rows.append(_row(measured, None if baseline is measured else baseline))
    full = [row for row in rows if len(row) == len(TABLE_HEADER)]
    widths = [
        max(len(row[i]) for row in [list(TABLE_HEADER), *full]) for i in range(len(TABLE_HEADER))
    ]
    widths[0] = max(len(row[0]) for row in [list(TABLE_HEADER), *rows])
    lines = []
    for row in [list(TABLE_HEADER), *rows]:
        cells = [
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _at_target(outcome: LegOutcome | None) -> tuple[LevelResult, LevelResult] | None:
    if outcome is None or outcome.not_measured:
        return None
    for baseline, measured in outcome.levels:
        if measured.concurrency == TARGET_CONCURRENCY and measured.ok:
            return baseline, measured
    return None


def _max_rps(outcome: LegOutcome | None) -> float | None:
    if outcome is None or outcome.not_measured or not outcome.levels:
        return None
    return max(measured.rps for _, measured in outcome.levels)


def summary(outcomes: dict[str, LegOutcome]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    broker = _at_target(outcomes.get("broker"))
    litellm = _at_target(outcomes.get("litellm"))
    for leg, pair in (("broker", broker), ("litellm", litellm)):
        if pair:
            base, run = pair
            result[f"{leg}_added_ms_c{TARGET_CONCURRENCY}"] = {
                "p50": round(run.ms(50) - base.ms(50), 3),
                "p99": round(run.ms(99) - base.ms(99), 3),
            }
            result[f"{leg}_proxy_cpu_ms_per_req_c{TARGET_CONCURRENCY}"] = _round(
                run.per_request_ms(run.proxy_cpu_s)
            )
        result[f"{leg}_max_rps"] = _round(_max_rps(outcomes.get(leg)), 1)
    if broker:
        added = result[f"broker_added_ms_c{TARGET_CONCURRENCY}"]
        result["broker_meets_latency_target"] = (
            added["p50"] <= TARGET_ADDED_P50_MS and added["p99"] <= TARGET_ADDED_P99_MS
        )
    if broker and litellm:
        b = result[f"broker_added_ms_c{TARGET_CONCURRENCY}"]
        lite = result[f"litellm_added_ms_c{TARGET_CONCURRENCY}"]
        result["litellm_over_broker_added"] = {
            q: round(lite[q] / b[q], 2) if b[q] > 0 else None for q in ("p50", "p99")
        }
        ratios = result["litellm_over_broker_added"].values()
        result["broker_meets_litellm_ratio_target"] = all(
            r is None or r >= TARGET_LITELLM_RATIO for r in ratios
        )
    if result.get("broker_max_rps") and result.get("litellm_max_rps"):
        result["broker_over_litellm_rps"] = round(
            result["broker_max_rps"] / result["litellm_max_rps"], 2
        )
    return result


def print_summary(s: dict[str, Any]) -> None:
    c = TARGET_CONCURRENCY
    print(f"\nsummary at concurrency {c}:")
    added = s.get(f"broker_added_ms_c{c}")
    if added:
        verdict = "meets" if s["broker_meets_latency_target"] else "MISSES"
        print(
            f"  broker added latency: p50 {added['p50']:.2f} ms, p99 {added['p99']:.2f} ms "
            f"(target <= {TARGET_ADDED_P50_MS:g} / <= {TARGET_ADDED_P99_MS:g} ms): {verdict}"
        )
    else:
        print("  broker: not measured")
    if s.get("litellm_max_rps") is None:
        print("  LiteLLM: not measured")
    ratio = s.get("litellm_over_broker_added")
    if ratio:
        shown = ", ".join(f"{q} {_fmt(r, '.1f')}x" for q, r in ratio.items())
        verdict = "meets" if s["broker_meets_litellm_ratio_target"] else "MISSES"
        print(
            f"  LiteLLM added latency / broker added latency: {shown} "
            f"(target >= {TARGET_LITELLM_RATIO:g}x): {verdict}"
        )
    for leg in ("broker", "litellm"):
        cpu = s.get(f"{leg}_proxy_cpu_ms_per_req_c{c}")
        if cpu is not None:
            print(f"  {leg} CPU per request: {cpu:.3f} ms")
    if "broker_over_litellm_rps" in s:
        verdict = "meets" if s["broker_over_litellm_rps"] > 1 else "MISSES"
        print(
            f"  max rps: broker {s['broker_max_rps']:.0f}, LiteLLM {s['litellm_max_rps']:.0f} "
            f"({s['broker_over_litellm_rps']:.2f}x; target > 1x): {verdict}"
        )
    else:
        for leg in ("broker", "litellm"):
            if s.get(f"{leg}_max_rps"):
                print(f"  max rps: {leg} {s[f'{leg}_max_rps']:.0f}")


def _version(package: str, python: str | None = None) -> str | None:
    if python is None:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return None
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def cpu_model() -> str:
    """The CPU's model name on Linux, else empty."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def machine(args: argparse.Namespace) -> dict[str, Any]:
    _, litellm_python = litellm_command(Path(args.litellm))
    model = cpu_model()
    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "aiohttp": _version("aiohttp"),
        "litellm": _version("litellm", str(litellm_python)) if litellm_python.exists() else None,
        "loadavg_start": os.getloadavg(),
    }


# --- main -----------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--legs",
        default="direct,broker,grpc-floor,litellm",
        help="comma-separated, run in this order",
    )
    parser.add_argument("--concurrency", type=_ints, default=[1, 64, 256])
    parser.add_argument("--requests", type=_ints, default=[300, 3000, 5000], help="per level")
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="unrecorded requests before each level (at least 2 x concurrency)",
    )
    parser.add_argument("--max-seconds", type=float, default=30.0, help="cap per level")
    parser.add_argument("--broker", default=str(ROOT / ".venv" / "bin" / "cloud-broker"))
    parser.add_argument(
        "--litellm",
        default=str(ROOT / ".venv-litellm" / "bin" / "litellm"),
        help="the litellm executable, or a python that has litellm[proxy]",
    )
    parser.add_argument(
        "--litellm-master-key",
        action="store_true",
        help="run LiteLLM with a master key (auth on); default off, like the broker's --dev",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds per server")
    parser.add_argument("--profile", action="store_true", help="py-spy the servers at c=64")
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="with --profile: native frames too (gRPC C core, syscalls); pauses the server",
    )
    parser.add_argument("--py-spy", type=Path, default=ROOT / ".venv" / "bin" / "py-spy")
    parser.add_argument("--output", type=Path, default=RESULTS / "broker_overhead.json")
    args = parser.parse_args(argv)
    if len(args.concurrency) != len(args.requests):
        parser.error("--concurrency and --requests need the same number of values")
    if args.profile and TARGET_CONCURRENCY not in args.concurrency:
        parser.error(f"--profile needs concurrency {TARGET_CONCURRENCY} among the levels")
    args.legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    unknown = set(args.legs) - {"direct", "broker", "grpc-floor", "litellm"}
    if unknown:
        parser.error(f"unknown legs: {', '.join(sorted(unknown))}")
    return args


async def run_legs(args: argparse.Namespace, plan: LoadPlan) -> dict[str, LegOutcome]:
    """The stub for the whole run, then each leg in turn, each with its own server."""
    stub = ServerProcess("stub", [sys.executable, str(STUB), "--port", "0"], RESULTS / "stub.log")
    outcomes: dict[str, LegOutcome] = {}
    try:
        stub_port = await stub.wait_listening(30)
        print(f"stub: listening on 127.0.0.1:{stub_port}", flush=True)
        with tempfile.TemporaryDirectory(prefix="broker-overhead-") as tmp:
            for leg in args.legs:
                if leg == "direct":
                    outcomes[leg] = await direct_only(plan, stub, stub_port)
                elif leg == "broker":
                    outcomes[leg] = await broker_leg(args, plan, stub, stub_port, Path(tmp))
                elif leg == "grpc-floor":
                    outcomes[leg] = await grpc_floor_leg(args, plan, stub, stub_port, Path(tmp))
                else:
                    outcomes[leg] = await litellm_leg(args, plan, stub, stub_port, Path(tmp))
    finally:
        stub.stop()
    return outcomes


def main(argv: list[str] | None = None) -> None:
    if (argv if argv is not None else sys.argv[1:]) == ["--serve-grpc-floor"]:
        serve_grpc_floor()
        return
    args = parse_args(argv)
    plan = LoadPlan(args.concurrency, args.requests, args.warmup, args.max_seconds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine(args)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    outcomes = asyncio.run(run_legs(args, plan))
    info["loadavg_end"] = os.getloadavg()
    print()
    print(table(list(outcomes.values())))
    result = summary(outcomes)
    print_summary(result)
    report = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "plan": dataclasses.asdict(plan),
        "levels": [
            {**measured.to_json(), "baseline": None if base is measured else base.to_json()}
            for outcome in outcomes.values()
            for base, measured in outcome.levels
        ],
        "not_measured": {o.leg: o.not_measured for o in outcomes.values() if o.not_measured},
        "profiles": {o.leg: o.profile for o in outcomes.values() if o.profile},
        "summary": result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {args.output}")


if __name__ == "__main__":
    main()
