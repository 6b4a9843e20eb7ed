"""The edge daemon: what HTTP adds over the in-process SDK, its memory, and its throughput
with 4 concurrent clients next to ``python -m llama_cpp.server`` on the same model.

Three parts, one run, SmolLM2-135M-Instruct Q4_1 everywhere:

  overhead    the same request (a short question, 8 tokens, temperature 0, mode local),
              round after round: in-process (``EdgeAgent.ask``), through the daemon's HTTP
              API with a lean keep-alive client and with the official ``openai`` client,
              and through ``EdgeClient`` (gRPC, unix socket). Generation time swings on a
              shared machine more than the overhead measured, so each leg's measure is
              the p50 of (client wall time - the pipeline's own decision.timings.total_ms),
              and the overhead is a leg's p50 minus the SDK's. The openai client's own
              cost (request building, response models) is the difference between the two
              HTTP legs: the app pays it with any OpenAI-compatible server. The floor leg
              (``benchmarks/http_floor.py``) is a bare aiohttp server that runs the same
              time of memory-heavy work on a worker thread and answers a canned body of
              the same size: what HTTP and a thread hop cost on this machine after a
              model has streamed its weights through the caches, without Ridgeline.
  memory      the daemon's RSS once it is ready (no model loaded) and after its first
              answer (SmolLM2 loaded), from /proc via psutil.
  throughput  4 client threads, each sending the same list of prompts (64 tokens max,
              temperature 0) through the ``openai`` client, against (a) llama_cpp.server
              with n_threads 2 and (b) the daemon with 1 slot x 2 threads and 2 slots x 1
              thread (the same 2 threads in all). tokens/s = completion tokens / wall time.
              The daemon runs mode local, as llama_cpp.server has no broker; in auto mode
              without a broker it does the same work.

Rerun (about 4 minutes on 2 cores): ``.venv/bin/python benchmarks/daemon.py``
Options: ``--requests 100`` (overhead rounds), ``--rounds 3`` (prompts per client = rounds x 4).
Results: a table on stdout and ``benchmarks/results/daemon.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Explain what a noun is.",
    "What is the boiling point of water?",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


class Daemon:
    def __init__(self, env: dict[str, str], root: Path, slots: int, threads: int) -> None:
        config = root / f"edge-{slots}.toml"
        config.write_text(
            f'[models]\ndefault = "{MODEL}"\n'
            f"[runtime]\nthreads = {threads}\n"
            "[telemetry]\nsources = []\n"
            f'[budget]\nstate_file = "{root / "budget.json"}"\n'
        )
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.grpc = f"unix:{root / f's{slots}.sock'}"
        self.log = (root / f"daemon-{slots}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", "--config", str(config), "serve",
             "--http", f"127.0.0.1:{port}", "--grpc", f"unix:{root / f's{slots}.sock'}",
             "--slots", str(slots)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_http(self.url + "/health")
        self.config = config

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class LeanHttp:
    """A keep-alive HTTP/1.1 client with TCP_NODELAY and nothing else: what the daemon
    itself costs, without an SDK's request building and response models."""

    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlparse(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        self.connection.connect()
        assert self.connection.sock is not None
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        self.last_work_ms = 0.0

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        self.connection.request(
            "POST", "/v1/chat/completions", data, {"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        reply: dict[str, Any] = json.loads(response.read())
        timing = response.headers.get("Server-Timing", "")
        if timing.startswith("work;dur="):
            self.last_work_ms = float(timing.split("=", 1)[1])
        return reply


def overhead(daemon: Daemon, env: dict[str, str], pairs: int) -> dict[str, Any]:
    """Per leg: wall time per request, and wall time minus the pipeline's own total_ms
    (what is spent outside the pipeline: the API, the thread hop, the client)."""
    import openai

    from edge_agent import EdgeAgent, EdgeClient, load_edge_settings

    settings = load_edge_settings(config_file=daemon.config, env=env).settings
    api = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
    lean = LeanHttp(daemon.url)
    floor_port = free_port()
    floor_log = (daemon.config.parent / "http_floor.log").open("w")
    floor_proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "http_floor.py"), str(floor_port)],
        stdout=floor_log,
        stderr=subprocess.STDOUT,
    )
    floor_url = f"http://127.0.0.1:{floor_port}"
    wait_http(floor_url + "/health")
    floor = LeanHttp(floor_url)
    question = "What is 2 plus 2?"
    messages = [{"role": "user", "content": question}]
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "ridgeline": {"mode": "local"}}
    wall: dict[str, list[float]] = {leg: [] for leg in LEGS}
    gap: dict[str, list[float]] = {leg: [] for leg in LEGS}
    with EdgeAgent(settings, background=False) as agent, EdgeClient(daemon.grpc) as edge:

        def sdk() -> float:
            answer = agent.ask(question, max_tokens=8, temperature=0, mode="local")
            return answer.decision.timings.total_ms

        def http_lean() -> float:
            reply = lean.chat(body)
            return float(reply["ridgeline"]["decision"]["timings"]["total_ms"])

        def http_openai() -> float:
            reply = api.chat.completions.create(
                model="default",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=8,
                temperature=0,
                extra_body={"ridgeline": {"mode": "local"}},
            )
            return float((reply.model_extra or {})["ridgeline"]["decision"]["timings"]["total_ms"])

        def grpc_client() -> float:
            answer = edge.ask(question, max_tokens=8, temperature=0, mode="local")
            return answer.decision.timings.total_ms

        work_ms = [100.0]  # the SDK's pipeline time this round: the floor works as long

        def http_floor() -> float:
            floor.chat({"work_ms": work_ms[0]})
            return floor.last_work_ms

        calls = {
            "sdk": sdk,
            "http": http_lean,
            "openai": http_openai,
            "grpc": grpc_client,
            "floor": http_floor,
        }
        try:
            for index in range(pairs + 5):  # the first 5 rounds warm everything up
                for leg in LEGS:  # interleaved, so drift on a shared machine hits all alike
                    time.sleep(0.02)  # llama.cpp's threads stop spinning between legs
                    started = time.perf_counter()
                    served = calls[leg]()
                    took = (time.perf_counter() - started) * 1000
                    if leg == "sdk":
                        work_ms[0] = served
                    if index >= 5:
                        wall[leg].append(took)
                        gap[leg].append(took - served)
        finally:
            floor_proc.terminate()
            floor_proc.wait(10)
            floor_log.close()
    result: dict[str, Any] = {"rounds": pairs}
    for leg in LEGS:
        result[leg] = {
            "wall_p50_ms": statistics.median(wall[leg]),
            "outside_p50_ms": statistics.median(gap[leg]),
            "outside_p90_ms": percentile(gap[leg], 0.9),
        }
    return result


LEGS = ("sdk", "http", "openai", "grpc", "floor")


def load(url: str, model: str, rounds: int, extra: dict[str, Any] | None) -> dict[str, Any]:
    import openai

    api = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=600)
    tokens = [0] * 4
    errors: list[str] = []

    def client(index: int) -> None:
        for _ in range(rounds):
            for offset in range(len(PROMPTS)):
                prompt = PROMPTS[(index + offset) % len(PROMPTS)]
                try:
                    reply = api.chat.completions.create(
                        model=model,
                        messages=[{"role": "user", "content": prompt}],
                        max_tokens=64,
                        temperature=0,
                        extra_body=extra,
                    )
                except openai.OpenAIError as exc:
                    errors.append(str(exc))
                    continue
                assert reply.usage is not None
                tokens[index] += reply.usage.completion_tokens

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    requests = 4 * rounds * len(PROMPTS)
    return {
        "requests": requests,
        "errors": len(errors),
        "completion_tokens": sum(tokens),
        "wall_s": wall,
        "tokens_per_s": sum(tokens) / wall,
        "requests_per_s": (requests - len(errors)) / wall,
    }


def llama_server(model_path: Path, root: Path, rounds: int) -> dict[str, Any]:
    port = free_port()
    log = (root / "llama_cpp_server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path),
         "--n_threads", "2", "--n_ctx", "2048", "--host", "127.0.0.1", "--port", str(port),
         "--model_alias", MODEL],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/v1/models")
        load(url, MODEL, 1, None)  # warm up
        return load(url, MODEL, rounds, None)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100, help="overhead rounds")
    parser.add_argument("--rounds", type=int, default=3, help="prompt lists per client")
    args = parser.parse_args()

    from edge_agent import load_edge_settings
    from ridgeline_core.store import ManifestCatalog

    env = dict(os.environ)
    settings = load_edge_settings(config_file=None, env=env).settings
    store = settings.models.store()
    manifest = ManifestCatalog.with_bundled().get(MODEL)
    model_path = store.pull(manifest).path
    env["RIDGELINE_EDGE_MODELS__STORE_DIR"] = str(store.root)
    results: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()}
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        daemon = Daemon(env, root, slots=1, threads=2)
        try:
            results["rss_idle_mb"] = daemon.rss_mb()
            urllib.request.urlopen(
                urllib.request.Request(
                    daemon.url + "/v1/chat/completions",
                    data=json.dumps(
                        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
                    ).encode(),
                    headers={"Content-Type": "application/json"},
                ),
                timeout=60,
            ).read()
            results["rss_loaded_mb"] = daemon.rss_mb()
            print("overhead: alternating SDK and HTTP requests ...", flush=True)
            results["overhead"] = overhead(daemon, env, args.requests)
            print("throughput: ridgeline, 1 slot x 2 threads ...", flush=True)
            local = {"ridgeline": {"mode": "local"}}
            load(daemon.url, "default", 1, local)
            results["ridgeline_1x2"] = load(daemon.url, "default", args.rounds, local)
        finally:
            daemon.stop()
        daemon = Daemon(env, root, slots=2, threads=1)
        try:
            print("throughput: ridgeline, 2 slots x 1 thread ...", flush=True)
            load(daemon.url, "default", 1, local)
            results["ridgeline_2x1"] = load(daemon.url, "default", args.rounds, local)
        finally:
            daemon.stop()
        print("throughput: llama_cpp.server, n_threads 2 ...", flush=True)
        results["llama_cpp_server"] = llama_server(model_path, root, args.rounds)

    o = results["overhead"]
    sdk = o["sdk"]
    print()
    print(f"Same request ({o['rounds']} interleaved rounds, 8 tokens, temperature 0, mode local)")
    print()
    print("| leg | wall p50 | outside the pipeline p50 (p90) | overhead vs SDK, p50 |")
    print("|---|---|---|---|")
    for leg, name in (
        ("sdk", "SDK in-process (EdgeAgent.ask)"),
        ("http", "daemon HTTP, keep-alive client (TCP_NODELAY)"),
        ("openai", "daemon HTTP, official openai client"),
        ("grpc", "daemon gRPC, EdgeClient over the unix socket"),
        ("floor", "floor: bare aiohttp + worker thread, same work time"),
    ):
        r = o[leg]
        extra = r["outside_p50_ms"] - sdk["outside_p50_ms"]
        print(
            f"| {name} | {r['wall_p50_ms']:.1f} ms | {r['outside_p50_ms']:.2f} "
            f"({r['outside_p90_ms']:.2f}) ms | {'' if leg == 'sdk' else f'{extra:.2f} ms'} |"
        )
    print()
    print("| measure | value | target |")
    print("|---|---|---|")
    http_extra = o["http"]["outside_p50_ms"] - sdk["outside_p50_ms"]
    own = o["http"]["outside_p50_ms"] - o["floor"]["outside_p50_ms"]
    print(f"| daemon HTTP overhead vs SDK, p50 | {http_extra:.2f} ms | ≤ 2 ms |")
    print(f"| ... of which over the HTTP floor (Ridgeline's own) | {own:.2f} ms | |")
    print(f"| daemon RSS, ready, no model | {results['rss_idle_mb']:.0f} MB | ≤ 120 MB |")
    print(f"| daemon RSS, SmolLM2 loaded | {results['rss_loaded_mb']:.0f} MB | ≤ 350 MB |")
    print()
    print(
        "| 4 concurrent clients, 64 tokens max | requests | errors | tokens | wall s | tokens/s |"
    )
    print("|---|---|---|---|---|---|")
    for name, key in (
        ("llama_cpp.server, n_threads 2", "llama_cpp_server"),
        ("ridgeline daemon, 1 slot x 2 threads", "ridgeline_1x2"),
        ("ridgeline daemon, 2 slots x 1 thread", "ridgeline_2x1"),
    ):
        r = results[key]
        print(
            f"| {name} | {r['requests']} | {r['errors']} | {r['completion_tokens']} | "
            f"{r['wall_s']:.1f} | {r['tokens_per_s']:.1f} |"
        )
    out = ROOT / "benchmarks" / "results" / "daemon.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
