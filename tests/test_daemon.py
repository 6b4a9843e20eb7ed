"""The edge daemon end to end: a real ``edge-agent serve`` process with SmolLM2, the
official ``openai`` client, ``curl``, the SDK's ``EdgeClient`` over the unix socket, and
a real broker process (Gemma-3-270M) for the escalated path."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import grpc
import openai
import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import MINILM, SMOLLM2, MiniLM, isolated_env, without_proxies
from daemonproc import DaemonProcess
from support import BAD, EASY

from edge_agent import Done, EdgeAgent, EdgeClient, EdgeSettings, TextChunk, load_edge_settings
from ridgeline_core.errors import QueueFullError, UnavailableError, UnknownModelError
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

COUNTING = "Count from 1 to 1000, separated by commas."  # SmolLM2 counts for a long time


def daemon_env(model_store: ModelStore, root: Path) -> dict[str, str]:
    return without_proxies(isolated_env(model_store, root))


def config(root: Path, extra: str = "") -> str:
    return (
        f'[models]\ndefault = "{SMOLLM2}"\n'
        "[runtime]\nthreads = 2\n"
        "[generation]\nmax_tokens = 32\n"
        "[telemetry]\nsources = []\n"
        f'[budget]\nstate_file = "{root / "budget.json"}"\n' + extra
    )


def start(model_store: ModelStore, root: Path, extra: str = "", *args: str) -> DaemonProcess:
    root.mkdir(parents=True, exist_ok=True)
    return DaemonProcess(daemon_env(model_store, root), root, config=config(root, extra), args=args)


@pytest.fixture(scope="module")
def daemon(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    """No broker: every answer is local."""
    process = start(model_store, tmp_path_factory.mktemp("daemon"))
    yield process
    process.stop()


def client(daemon: DaemonProcess, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key=key, max_retries=0, timeout=120)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


# -- the OpenAI API with the official client ---------------------------------------------


def test_openai_chat_completion_carries_the_decision(daemon: DaemonProcess) -> None:
    raw = client(daemon).chat.completions.with_raw_response.create(
        model=SMOLLM2, messages=ask(EASY), max_tokens=24, temperature=0
    )
    completion = raw.parse()
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == SMOLLM2
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    extra = completion.model_extra or {}
    decision = extra["ridgeline"]["decision"]
    assert decision["path"] == "local"
    assert "no broker is configured" in decision["reason"]
    assert raw.headers["x-ridgeline-path"] == "local"
    assert float(raw.headers["x-ridgeline-confidence"]) == pytest.approx(
        extra["ridgeline"]["confidence"], abs=1e-4
    )


def test_openai_streaming_matches_the_whole_answer(daemon: DaemonProcess) -> None:
    api = client(daemon)
    whole = api.chat.completions.create(
        model="default", messages=ask(EASY), max_tokens=24, temperature=0
    )
    chunks = list(
        api.chat.completions.create(
            model="default",
            messages=ask(EASY),
            max_tokens=24,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    *_, last, usage = chunks  # as OpenAI does: usage comes in one more chunk, no choices
    assert last.choices[0].finish_reason == "stop"
    assert (last.model_extra or {})["ridgeline"]["decision"]["path"] == "local"
    assert usage.choices == []
    assert usage.usage is not None and usage.usage.completion_tokens > 0


def test_mode_local_streams_tokens_as_they_come(daemon: DaemonProcess) -> None:
    chunks = list(
        client(daemon).chat.completions.create(
            model="default",
            messages=ask("Name three colours."),
            max_tokens=16,
            stream=True,
            extra_body={"ridgeline": {"mode": "local"}},
        )
    )
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) > 3  # token by token, not one block at the end
    assert (chunks[-1].model_extra or {})["ridgeline"]["decision"]["mode"] == "local"


def test_openai_models_and_completions(daemon: DaemonProcess) -> None:
    api = client(daemon)
    ids = [m.id for m in api.models.list()]
    assert SMOLLM2 in ids
    assert api.models.retrieve(SMOLLM2).id == SMOLLM2
    completion = api.completions.create(model=SMOLLM2, prompt=EASY, max_tokens=24)
    assert "Paris" in completion.choices[0].text
    streamed = api.completions.create(model=SMOLLM2, prompt=EASY, max_tokens=24, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text


def test_openai_client_errors(daemon: DaemonProcess) -> None:
    api = client(daemon)
    with pytest.raises(openai.NotFoundError) as unknown:
        api.chat.completions.create(model="gpt-9", messages=ask(EASY))
    assert unknown.value.code == "model_not_found"
    assert SMOLLM2 in str(unknown.value)  # says which models exist
    with pytest.raises(openai.BadRequestError) as empty:
        api.chat.completions.create(model="default", messages=ask("   "))
    assert empty.value.code == "empty_prompt"
    with pytest.raises(openai.BadRequestError) as images:
        api.chat.completions.create(
            model="default",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:,"}}],
                }
            ],
        )
    assert "text only" in str(images.value)
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="../../etc/passwd", messages=ask(EASY))
    with pytest.raises(openai.BadRequestError) as hot:  # checked before the stream starts
        api.chat.completions.create(model="default", messages=ask(EASY), temperature=5, stream=True)
    assert "temperature" in str(hot.value)


def test_malformed_and_oversized_requests(daemon: DaemonProcess) -> None:
    status, _, body = daemon.post("/v1/chat/completions", None, raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]["message"]
    status, _, body = daemon.post("/v1/chat/completions", {"messages": "hi"})
    assert status == 400 and body["error"]["param"] == "messages"
    status, _, body = daemon.post("/v1/chat/completions", {"messages": ask(EASY), "n": 2})
    assert status == 400 and "n must be 1" in body["error"]["message"]
    status, _, body = daemon.post(
        "/v1/chat/completions", {"messages": ask(EASY), "temperature": "hot"}
    )
    assert status == 400 and body["error"]["param"] == "temperature"
    status, _, body = daemon.post("/v1/chat/completions", {"messages": ask("x" * (2 << 20))})
    assert status == 413 and "max_request_bytes" in body["error"]["message"]
    status, _, body = daemon.post(
        "/v1/chat/completions", {"messages": ask("word " * 9000), "max_tokens": 4}
    )
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    status, _, body = daemon.post("/v1/chat/completions", {"messages": ask(EASY), "stop": 5})
    assert status == 400 and body["error"]["param"] == "stop"
    status, _, body = daemon.post(
        "/v1/chat/completions", None, raw=b'{"messages": [], "max_tokens": Infinity}'
    )
    assert status == 400 and "Infinity" in body["error"]["message"]
    status, _, body = daemon.post("/v1/embeddings", {"input": ["hi", "  "]})
    assert status == 400 and body["error"]["message"] == "input[1] is empty"
    status, _, body = daemon.post("/v1/classify", {"specialist": "x", "text": 5})
    assert status == 400 and body["error"]["param"] == "text"
    status, _, body = daemon.post("/v1/nothing", {})
    assert status == 404 and body["error"]["message"]
    status, _, body = daemon.post(
        "/v1/chat/completions", None, raw=b"x", headers={"Content-Type": "text/plain"}
    )
    assert status == 400 and "application/json" in body["error"]["message"]
    status, _, body = daemon.post(
        "/v1/chat/completions", {"messages": ask(EASY)}, headers={"Host": "evil.example:80"}
    )
    assert status == 403 and "loopback" in body["error"]["message"]  # no DNS rebinding
    # the daemon still answers after all that
    status, _, body = daemon.post("/v1/chat/completions", {"messages": ask(EASY)})
    assert status == 200 and "Paris" in body["choices"][0]["message"]["content"]


def test_curl_streams_server_sent_events(daemon: DaemonProcess) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is part of the test environment"
    body = {"messages": ask(EASY), "stream": True, "max_tokens": 24}
    result = subprocess.run(
        [curl, "-sN", "-H", "Content-Type: application/json", "-d", json.dumps(body),
         daemon.url + "/v1/chat/completions"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    events = [line[len("data: ") :] for line in result.stdout.splitlines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert "Paris" in text
    assert chunks[-1]["ridgeline"]["source"] == "local"


def test_health_and_metrics(daemon: DaemonProcess) -> None:
    client(daemon).chat.completions.create(model="default", messages=ask(EASY), max_tokens=8)
    status, health = daemon.get("/health")
    assert status == 200 and health["status"] == "ok"
    assert SMOLLM2 in health["models_loaded"]
    status, text = daemon.get("/metrics")
    assert status == 200
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples['ridgeline_edge_requests_total{path="local"}']) >= 1
    assert float(samples["ridgeline_edge_local_tokens_total"]) > 0
    assert float(samples["ridgeline_edge_threshold"]) == pytest.approx(health["threshold"])
    assert float(samples["ridgeline_edge_queue_depth"]) == 0
    assert float(samples["ridgeline_edge_models_loaded"]) >= 1
    assert "ridgeline_edge_local_tokens_per_second" in samples


# -- the gRPC edge service and the SDK client --------------------------------------------


def test_edge_client_over_the_unix_socket(daemon: DaemonProcess) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o600  # this user only
    with EdgeClient(daemon.grpc) as edge:
        answer = edge.ask(EASY, max_tokens=24)
        assert "Paris" in answer.text
        assert answer.decision.path == "local"
        assert answer.timings is not None and answer.timings.completion_tokens > 0
        events = list(edge.stream("Name three colours.", mode="local", max_tokens=12))
        assert isinstance(events[-1], Done)
        streamed = "".join(e.text for e in events if isinstance(e, TextChunk))
        assert streamed == events[-1].answer.text
        models = {m.name: m for m in edge.models()}
        assert models[SMOLLM2].loaded and models[SMOLLM2].default
        with pytest.raises(UnknownModelError):
            edge.ask(EASY, model="no-such-model")
    channel = grpc.insecure_channel(daemon.grpc)
    health = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"\n\x11ridgeline.v1.Edge",
        response_deserializer=lambda data: data,
    )
    assert health(b"", timeout=10) == b"\x08\x01"  # SERVING
    channel.close()


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The edge daemon and the SDK")
    section = text[start : text.index("\n## ", start + 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_examples_run_against_the_daemon(
    daemon: DaemonProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    examples = readme_examples()
    assert len(examples) == 4  # OpenAI client, EdgeAgent, EdgeClient stream, async
    env = daemon_env(model_store, tmp_path)
    env["RIDGELINE_EDGE_CONFIG"] = str(daemon.config_file)  # EdgeAgent.from_config()
    env["RIDGELINE_EDGE_DAEMON__GRPC"] = f"unix:{daemon.socket}"  # EdgeClient()
    outputs = []
    for code in examples:
        code = code.replace("http://127.0.0.1:8177", daemon.url)  # the test daemon's port
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{code}\n{result.stderr}"
        outputs.append(result.stdout)
    openai_example, in_process, streamed, in_async = outputs
    assert "Paris" in openai_example and "no broker is configured" in openai_example
    assert "Paris" in in_process and "local" in in_process
    assert len(streamed.strip()) > 3
    assert "Paris" in in_async and in_async.strip().endswith("local")


def test_edge_client_without_a_daemon_says_how_to_start_one(tmp_path: Path) -> None:
    edge = EdgeClient(f"unix:{tmp_path / 'absent.sock'}", timeout_s=5)
    with edge, pytest.raises(UnavailableError, match="edge-agent serve"):
        edge.ask(EASY)


async def _ask_async(target: str) -> tuple[str, str]:
    with EdgeClient(target) as edge:
        answer = await edge.ask_async(EASY, max_tokens=24)
        first = None
        async for event in edge.stream_async(COUNTING, mode="local", max_tokens=400):
            if isinstance(event, TextChunk):
                first = event.text
                break  # leaving early cancels the request on the daemon
        assert first is not None
        return answer.text, first


def test_edge_client_async(daemon: DaemonProcess) -> None:
    import asyncio

    text, first = asyncio.run(_ask_async(daemon.grpc))
    assert "Paris" in text
    assert first


# -- capacity: concurrency, a full queue, disconnects ------------------------------------


@pytest.fixture(scope="module")
def tight(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    """One slot, no queue: a second request is refused while one runs."""
    process = start(
        model_store, tmp_path_factory.mktemp("tight"), "", "--slots", "1", "--queue", "0"
    )
    yield process
    process.stop()


class Stream:
    """A raw streaming request that can be dropped mid-answer like a closed browser tab."""

    def __init__(self, url: str, prompt: str, max_tokens: int) -> None:
        parsed = urlparse(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        body = {
            "messages": ask(prompt),
            "max_tokens": max_tokens,
            "stream": True,
            "ridgeline": {"mode": "local"},
        }
        self.connection.request(
            "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
        )
        self.response = self.connection.getresponse()
        assert self.response.status == 200

    def next_text(self) -> str:
        while True:
            line = self.response.readline().decode().strip()
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0].get("delta", {})
                if delta.get("content"):
                    return str(delta["content"])

    def rest(self) -> list[str]:
        return [line.decode().strip() for line in self.response if line.strip()]

    def drop(self) -> None:
        self.response.close()
        self.connection.close()


def wait_until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_full_queue_answers_503_at_once_and_a_disconnect_frees_the_slot(
    tight: DaemonProcess,
) -> None:
    stream = Stream(tight.url, COUNTING, max_tokens=1500)  # ~20 s of counting
    stream.next_text()
    started = time.monotonic()
    status, headers, body = tight.post("/v1/chat/completions", {"messages": ask(EASY)})
    assert time.monotonic() - started < 2.0  # refused at once, not queued
    assert status == 503
    assert body["error"]["code"] == "queue_full"
    assert int(headers["Retry-After"]) >= 1
    with EdgeClient(tight.grpc) as edge, pytest.raises(QueueFullError):
        edge.ask(EASY)  # RESOURCE_EXHAUSTED over gRPC
    dropped = time.monotonic()
    stream.drop()
    assert wait_until(lambda: tight.get("/health")[1]["running"] == 0, 10.0)
    assert time.monotonic() - dropped < 10.0  # the 1500-token generation was cancelled
    _, metrics = tight.get("/metrics")
    assert 'ridgeline_edge_request_errors_total{kind="cancelled"} 1.0' in metrics
    status, _, body = tight.post("/v1/chat/completions", {"messages": ask(EASY)})
    assert status == 200 and "Paris" in body["choices"][0]["message"]["content"]


def test_concurrent_clients_get_the_answers_they_would_get_alone(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    daemon = start(model_store, tmp_path, "", "--slots", "2", "--queue", "4")
    try:
        questions = [EASY, "What is 2 plus 2?", "Name a primary colour.", "What is water?"]
        api = client(daemon)

        def answer(question: str) -> str:
            completion = api.chat.completions.create(
                model="default",
                messages=ask(question),
                max_tokens=24,
                extra_body={"ridgeline": {"mode": "local"}},
            )
            return completion.choices[0].message.content or ""

        alone = [answer(q) for q in questions]
        together: list[str | None] = [None] * len(questions)

        def worker(index: int) -> None:
            together[index] = answer(questions[index])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(questions))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert together == alone
        _, health = daemon.get("/health")
        assert health["slots"] == 2 and health["running"] == 0
    finally:
        daemon.stop()


# -- lifetime: idle unload, SIGTERM drain, SIGHUP reload, binding ------------------------


def test_idle_model_is_unloaded_and_loaded_again_on_use(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    daemon = start(model_store, tmp_path, "", "--idle-unload", "1")
    try:
        assert daemon.get("/health")[1]["models_loaded"] == []  # loaded on first use
        status, _, _ = daemon.post("/v1/chat/completions", {"messages": ask(EASY)})
        assert status == 200
        assert daemon.get("/health")[1]["models_loaded"] == [SMOLLM2]
        assert wait_until(lambda: daemon.get("/health")[1]["models_loaded"] == [], 10.0)
        status, _, body = daemon.post("/v1/chat/completions", {"messages": ask(EASY)})
        assert status == 200 and "Paris" in body["choices"][0]["message"]["content"]
        assert daemon.get("/health")[1]["models_loaded"] == [SMOLLM2]
    finally:
        daemon.stop()


def test_sigterm_lets_running_requests_finish_and_refuses_new_ones(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    daemon = start(model_store, tmp_path)
    try:
        stream = Stream(daemon.url, COUNTING, max_tokens=160)
        stream.next_text()
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_for_line("draining 1 request(s)", 10.0)
        status, _, body = daemon.post("/v1/chat/completions", {"messages": ask(EASY)})
        assert status == 503 and "shutting down" in body["error"]["message"]
        rest = stream.rest()
        stream.drop()
        assert rest[-1] == "data: [DONE]"
        last = json.loads(rest[-2][len("data: ") :])
        assert last["choices"][0]["finish_reason"] in ("stop", "length")  # finished, not cut
        assert daemon.proc.wait(timeout=30) == 0
        assert daemon.wait_for_line("stopped", 5.0)
        assert not daemon.socket.exists()  # the socket file is removed
    finally:
        daemon.kill()


def test_requests_still_running_when_the_drain_ends_are_told_why(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    daemon = start(model_store, tmp_path, "[daemon]\ndrain_s = 0.5\n")
    try:
        stream = Stream(daemon.url, COUNTING, max_tokens=1500)
        stream.next_text()
        daemon.signal(signal.SIGTERM)
        rest = stream.rest()
        stream.drop()
        assert rest[-1] == "data: [DONE]"
        error = json.loads(rest[-2][len("data: ") :])["error"]
        assert error["code"] == "unavailable" and "shutting down" in error["message"]
        assert daemon.proc.wait(timeout=30) == 0
        assert daemon.wait_for_line("drain time is up", 5.0)
    finally:
        daemon.kill()


def test_sighup_reloads_the_settings_and_keeps_them_when_the_file_is_bad(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    daemon = start(model_store, tmp_path)
    try:
        body = {"messages": ask(EASY), "max_tokens": 8}
        assert daemon.post("/v1/chat/completions", body)[2]["ridgeline"]["decision"]["mode"] == (
            "auto"
        )
        daemon.config_file.write_text(config(tmp_path, '[policy]\nmode = "local"\n'))
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_for_line("reloaded", 10.0)
        decision = daemon.post("/v1/chat/completions", body)[2]["ridgeline"]["decision"]
        assert decision["mode"] == "local"
        daemon.config_file.write_text(config(tmp_path, '[policy]\nmode = "sometimes"\n'))
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_for_line("reload failed", 10.0)
        decision = daemon.post("/v1/chat/completions", body)[2]["ridgeline"]["decision"]
        assert decision["mode"] == "local"  # the last good settings
        # valid settings that cannot be built (a trace file that is not there)
        daemon.lines.clear()
        missing = tmp_path / "missing.jsonl"
        daemon.config_file.write_text(config(tmp_path, f'[telemetry]\ntrace = "{missing}"\n'))
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_for_line("reload failed", 10.0)
        time.sleep(1.0)  # the idle sweep must not close the agent still in use
        decision = daemon.post("/v1/chat/completions", body)[2]["ridgeline"]["decision"]
        assert decision["mode"] == "local"
    finally:
        assert daemon.stop() == 0


def test_public_bind_needs_an_api_key(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    env = daemon_env(model_store, tmp_path)
    refused = run(
        "edge-agent", "serve", "--http", "0.0.0.0:0", "--grpc", f"unix:{tmp_path / 's.sock'}",
        env=env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "daemon.api_key" in refused.stderr and "0.0.0.0" in refused.stderr
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key\n")
    daemon = DaemonProcess(
        env,
        tmp_path,
        config=config(tmp_path),
        args=("--http", "0.0.0.0:0", "--api-key-file", str(key_file)),
    )
    try:
        url = daemon.url.replace("0.0.0.0", "127.0.0.1")
        daemon.url = url
        assert daemon.get("/health")[0] == 200  # probes need no key
        status, body = daemon.get("/v1/models")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert daemon.get("/v1/models", key="wrong")[0] == 401
        assert daemon.get("/v1/models", key="s3cret-key")[0] == 200
        api = openai.OpenAI(base_url=url + "/v1", api_key="s3cret-key", max_retries=0)
        assert api.chat.completions.create(model="default", messages=ask(EASY)).choices
        with EdgeClient(daemon.grpc, api_key="s3cret-key") as edge:
            assert edge.models()
        from ridgeline_core.errors import UnauthenticatedError

        with EdgeClient(daemon.grpc, api_key="wrong") as edge, pytest.raises(UnauthenticatedError):
            edge.models()
    finally:
        daemon.stop()


# -- the SDK in-process and through the daemon agree -------------------------------------


@pytest.fixture(scope="module")
def broker(
    smollm2_path: Path,
    gemma_path: Path,
    shared_broker: BrokerProcess,
) -> BrokerProcess:
    return shared_broker  # one for the session (conftest.py)


def test_sdk_in_process_and_client_give_the_same_answer_and_decision(
    broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    extra = f'[broker]\naddress = "{broker.address}"\nplaintext = true\n'
    daemon = start(model_store, tmp_path / "daemon", extra)
    try:
        loaded = load_edge_settings(
            config_file=daemon.config_file, env=daemon_env(model_store, tmp_path)
        )
        sources = set()
        with EdgeAgent(loaded.settings) as agent, EdgeClient(daemon.grpc) as edge:
            for question in (EASY, BAD):
                here = agent.ask(question, temperature=0)
                there = edge.ask(question, temperature=0)
                sources.add(here.source)
                assert there.text == here.text
                assert there.source == here.source
                assert there.model == here.model
                assert there.confidence == pytest.approx(here.confidence, abs=1e-6)
                mine, theirs = here.decision, there.decision
                assert theirs.path == mine.path
                assert theirs.reason == mine.reason
                assert theirs.threshold == mine.threshold
                assert theirs.threshold_terms == mine.threshold_terms
                assert mine.confidence_info is not None and theirs.confidence_info is not None
                assert theirs.confidence_info.method == mine.confidence_info.method
                assert theirs.confidence_info.raw == pytest.approx(mine.confidence_info.raw)
                assert (theirs.broker is None) == (mine.broker is None)
                if mine.broker is not None and theirs.broker is not None:
                    assert theirs.broker.model == mine.broker.model
        assert sources == {"local", "cloud"}  # both paths were compared
    finally:
        daemon.stop()


# -- the ONNX endpoints: embeddings and specialists ---------------------------------------


def test_embeddings_classify_and_private_over_http(
    minilm: MiniLM, smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    import numpy as np

    from edge_agent.knowledge.specialists import load_examples, train_specialist

    examples = Path(__file__).resolve().parent.parent / "examples/specialists/home-intents"
    chosen = {"lights_on", "weather_query", "set_timer"}
    train = [e for e in load_examples(examples / "train.jsonl") if e.label in chosen]
    extra = (
        f'[specialists]\ndir = "{tmp_path / "specialists"}"\n'
        f"[embeddings]\nthreads = 2\n"
        f'[cache]\nenabled = true\npath = "{tmp_path / "cache.sqlite"}"\nstore = "all"\n'
    )
    settings = EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(model_store.root)},
            "specialists": {"dir": str(tmp_path / "specialists")},
            "embeddings": {"threads": 2},
            "budget": {"state_file": str(tmp_path / "budget.json")},
            "telemetry": {"sources": []},
        }
    )
    with EdgeAgent(settings, background=False) as agent:
        train_specialist("three", train, agent.embedder, agent.store, tmp_path / "specialists")
        reference = agent.embedder.embed(["turn on the lights", "is it going to rain"])
    daemon = start(model_store, tmp_path / "daemon", extra)
    try:
        api = client(daemon)
        with api:  # closes its connections
            result = api.embeddings.create(  # the official client asks for base64
                model=MINILM, input=["turn on the lights", "is it going to rain"]
            )
        vectors = np.array([item.embedding for item in result.data])
        assert vectors.shape == (2, 384)
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert np.allclose(vectors, reference, atol=1e-5)
        assert result.model == MINILM and result.usage.prompt_tokens > 4
        status, _, body = daemon.post("/v1/embeddings", {"input": "lights", "model": "default"})
        assert status == 200 and len(body["data"][0]["embedding"]) == 384
        status, _, body = daemon.post("/v1/embeddings", {"input": "x", "model": SMOLLM2})
        assert status == 400 and "not the daemon's embedding model" in body["error"]["message"]
        status, _, body = daemon.post("/v1/embeddings", {"input": "x", "model": "nope"})
        assert status == 404 and body["error"]["code"] == "model_not_found"

        status, _, body = daemon.post(
            "/v1/classify", {"specialist": "three", "text": "set a timer for 5 minutes"}
        )
        assert status == 200, body
        assert body["label"] == "set_timer" and body["source"] in ("local", "local-degraded")
        assert body["decision"]["top"][0]["label"] == "set_timer"
        status, _, body = daemon.post("/v1/classify", {"specialist": "nope", "text": "hi"})
        assert status == 404 and "unknown specialist" in body["error"]["message"]
        status, _, body = daemon.post("/v1/classify", {"specialist": "three", "text": " "})
        assert status == 400 and "empty" in body["error"]["message"]

        # a private request is neither answered from nor stored in the answer cache
        question = {"messages": ask(EASY), "max_tokens": 24, "ridgeline": {"private": True}}
        status, _, body = daemon.post("/v1/chat/completions", question)
        assert status == 200 and body["ridgeline"]["decision"]["timings"]["cache_ms"] is None
        status, _, body = daemon.post("/v1/chat/completions", {**question, "ridgeline": {}})
        assert status == 200 and body["ridgeline"]["source"] == "local"  # stored now
        status, _, body = daemon.post("/v1/chat/completions", {**question, "ridgeline": {}})
        assert status == 200 and body["ridgeline"]["source"] == "cache"
    finally:
        daemon.stop()
