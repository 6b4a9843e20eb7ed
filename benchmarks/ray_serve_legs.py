"""The broker-on-Ray-Serve legs of ``benchmarks/ray_scale.py`` (see its docstring).

Each leg deploys the application with :func:`cloud_broker.on_ray.app.broker_app` (what
``cloud-broker serve --ray`` runs) on the local Ray the benchmark started, and loads it
through the project's own gRPC client from this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ridgeline_core.client import BrokerClient

HERE = Path(__file__).resolve().parent
SMOLLM2 = "smollm2-135m-instruct"
PROMPT = "What is the capital of France?"
STORY = "Write a short story about a lighthouse keeper."  # runs to max_tokens


@contextlib.contextmanager
def process(command: list[str], pattern: str = r"^listening on (\S+)") -> Iterator[str]:
    """A subprocess, until it prints its address (the first match of ``pattern``)."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if match := re.match(pattern, line):
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                yield match.group(1)
                break
        else:
            raise RuntimeError(f"{command[0]} exited before it listened")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# loopback plaintext, no auth and no limits: what the legs measure is the path, not the checks
_LOOPBACK = """[server]
listen = "127.0.0.1:0"
allow_plaintext = true
[auth]
enabled = false
[metrics]
listen = ""
[limits]
requests_per_minute = 0
tokens_per_minute = 0
"""


def stub_config(base_url: str, *, app: str) -> str:
    return f"""
[models]
serve = []
default = "stub"
[[openai]]
name = "stub"
base_url = "{base_url}"
{_LOOPBACK}[ray]
app_name = "{app}"
front_num_cpus = 0
[ray.models.stub]
num_cpus = 0
"""


def smollm2_config(store: Path, replicas: int, *, app: str) -> str:
    return f"""
[models]
store_dir = "{store}"
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[llama_cpp]
threads = 1
slots = 1
queue = 16
{_LOOPBACK}[ray]
app_name = "{app}"
front_num_cpus = 0
[ray.models.{SMOLLM2}]
replicas = {replicas}
num_cpus = 1
"""


def write_config(text: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix="ray-bench-")) / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return path


@contextlib.contextmanager
def on_ray(config: Path) -> Iterator[str]:
    """The broker deployed on the running Ray; the address of its (one) front."""
    import ray
    from ray import serve

    from cloud_broker.on_ray.app import broker_app
    from cloud_broker.on_ray.limits import keeper_name
    from cloud_broker.settings import load_broker_settings

    settings = load_broker_settings(config_file=config, env={}).settings
    name = settings.ray.app_name
    serve.run(broker_app(settings), name=name, route_prefix=None)
    keeper = ray.get_actor(keeper_name(name), namespace=settings.ray.namespace)
    try:
        while not (fronts := ray.get(keeper.fronts.remote())):
            time.sleep(0.1)
        yield fronts[0]
    finally:
        serve.delete(name)
        ray.kill(keeper)


@contextlib.contextmanager
def single_process(config: Path) -> Iterator[str]:
    command = [str(HERE.parent / ".venv" / "bin" / "cloud-broker"), "--config", str(config)]
    with process([*command, "serve", "--dev", "--listen", "127.0.0.1:0"]) as address:
        yield address


def latencies(address: str, count: int, warmup: int) -> np.ndarray:
    """Seconds from request to result, one call at a time."""
    out = []
    with BrokerClient(address, plaintext=True, timeout_s=30) as client:
        for i in range(warmup + count):
            started = time.perf_counter()
            for _ in client.generate(PROMPT, max_tokens=8):
                pass
            if i >= warmup:
                out.append(time.perf_counter() - started)
    return np.asarray(out)


def throughput(address: str, clients: int, seconds: float, max_tokens: int) -> tuple[float, float]:
    """Answers and completion tokens per second from ``clients`` closed-loop clients."""
    stop = time.monotonic() + seconds
    done: list[int] = []
    lock = threading.Lock()

    def load() -> None:
        with BrokerClient(address, plaintext=True, timeout_s=120) as client:
            while time.monotonic() < stop:
                answer = client.ask(STORY, max_tokens=max_tokens, temperature=0.0)
                with lock:
                    done.append(answer.result.usage.completion_tokens)

    started = time.monotonic()
    threads = [threading.Thread(target=load) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return len(done) / wall, sum(done) / wall


class LimitProbe:
    """A Ray actor that times the front's side of the shared rate limit against the real
    keeper: what ``admitted`` and ``charge`` cost per request."""

    async def measure(self, app: str, devices: int, requests: int, lease_s: float) -> list[float]:
        from cloud_broker.on_ray.limits import SharedRate, open_keeper, settle_every

        keeper = open_keeper(app, "ridgeline", (60_000, 1_000_000_000, None))  # never refused
        rate = SharedRate(keeper, fronts=2, lease_s=lease_s)
        settle = asyncio.create_task(settle_every(rate))
        out = []
        try:
            for i in range(requests):
                device = f"device-{i % devices}"
                started = time.perf_counter()
                await rate.admitted(device)
                rate.charge(device, 40)
                out.append(time.perf_counter() - started)
                await asyncio.sleep(0.002)  # ~ the pace of one front's calls
        finally:
            settle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await settle
            import ray

            ray.kill(keeper)
        return out


def limit_costs(requests: int) -> list[tuple[str, np.ndarray]]:
    import ray

    probe = ray.remote(LimitProbe).options(num_cpus=0).remote()
    cases = [
        ("one busy device (leases reused)", 1, 5.0),
        ("20 devices taking turns", 20, 5.0),
        ("every call a new device (a lease each)", requests, 5.0),
    ]
    rows = []
    for label, devices, lease_s in cases:
        seconds = ray.get(probe.measure.remote("limit-bench", devices, requests, lease_s))
        rows.append((label, np.asarray(seconds)))
    ray.kill(probe)
    return rows


class Echo:
    """A replica that streams one message back: the least a model replica can do."""

    async def stream(self, text: str) -> Any:
        yield [text]


class Caller:
    """A replica that calls :class:`Echo` the way a front calls a model replica."""

    def __init__(self, echo: Any) -> None:
        self.echo = echo.options(stream=True)

    async def run(self, calls: int) -> list[float]:
        out = []
        for _ in range(calls):
            started = time.perf_counter()
            async for _ in self.echo.stream.remote("x"):
                pass
            out.append(time.perf_counter() - started)
        return out


def serve_floor(calls: int) -> np.ndarray:
    """Seconds per streamed handle call between two replicas: Ray Serve's own floor."""
    from ray import serve

    deployment: Any = serve.deployment
    quiet = {"logging_config": {"enable_access_log": False}}  # as the broker's deployments
    app = deployment(Caller).options(**quiet).bind(deployment(Echo).options(**quiet).bind())
    handle = serve.run(app, name="floor", route_prefix=None)
    try:
        seconds = handle.run.remote(calls).result()
    finally:
        serve.delete("floor")
    return np.asarray(seconds)


class GrpcIngress:
    """Ray Serve's own gRPC ingress for comparison: a replica behind Serve's gRPC proxy
    answering ``ridgeline.v1.Broker/Generate`` from the model replica's stream, with
    nothing else (no TLS, tokens, limits or checks: the proxy has no place for them)."""

    def __init__(self, model: Any) -> None:
        self.model = model.options(stream=True)

    async def Generate(self, request: Any) -> Any:  # the RPC's name
        from cloud_broker import wire
        from cloud_broker.backends import BackendRequest
        from ridgeline.v1 import broker_pb2
        from ridgeline_core.runtime import ChatMessage, SamplingParams

        checked = BackendRequest(
            request.request_id or "r",
            tuple(ChatMessage("user", m.content) for m in request.messages),
            SamplingParams(max_tokens=request.params.max_tokens or 8),
        )
        async for batch in self.model.stream.remote(checked):
            for item in batch:
                if isinstance(item, str):
                    yield wire.delta_to_pb(item, "stub")
                else:
                    yield broker_pb2.GenerateResponse(
                        result=broker_pb2.GenerateResult(answer_model="stub")
                    )


@contextlib.contextmanager
def serve_grpc_proxy(config: Path, port: int) -> Iterator[str]:
    """Serve restarted with its gRPC proxy on ``port`` and :class:`GrpcIngress` in front of
    the model replica; afterwards, Serve as the other legs want it (no proxy)."""
    from ray import serve

    from cloud_broker.on_ray.app import model_options
    from cloud_broker.on_ray.replica import ModelReplica
    from cloud_broker.settings import load_broker_settings

    settings = load_broker_settings(config_file=config, env={}).settings
    serve.shutdown()
    serve.start(
        proxy_location="HeadOnly",
        grpc_options={
            "port": port,
            "grpc_servicer_functions": [
                "ridgeline.v1.broker_pb2_grpc.add_BrokerServicer_to_server"
            ],
        },
    )
    deployment: Any = serve.deployment
    model = deployment(ModelReplica).options(**model_options(settings, "stub"))
    serve.run(deployment(GrpcIngress).bind(model.bind(settings, "stub")), name="proxy")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        serve.shutdown()
        serve.start(proxy_location="Disabled")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentiles(seconds: np.ndarray) -> tuple[float, float]:
    return float(np.percentile(seconds, 50) * 1e3), float(np.percentile(seconds, 99) * 1e3)


def stub_server() -> contextlib.AbstractContextManager[str]:
    return process([sys.executable, str(HERE / "stub_openai.py"), "--port", "0"])
