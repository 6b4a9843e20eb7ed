"""llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``) with
SmolLM2, as a real upstream for the broker's openai backend: started by a module fixture,
stopped at its end."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

UPSTREAM_ALIAS = "smollm2"
API_KEY = "test-upstream-key"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _clean_env(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RIDGELINE_")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        env.pop(key, None)
    env.update(
        HOME=str(root / "home"),
        XDG_CONFIG_HOME=str(root / "config"),
        XDG_CACHE_HOME=str(root / "cache"),
    )
    return env


@dataclass
class Upstream:
    base_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def request(self, path: str, body: dict[str, object] | None = None) -> dict[str, object]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            data=data,
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer: dict[str, object] = json.load(response)
        return answer


def _wait_upstream_ready(upstream: Upstream, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if upstream.proc.poll() is not None:
            raise AssertionError(f"llama_cpp.server exited:\n{upstream.log()[-3000:]}")
        try:
            models = upstream.request("/models")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
            continue
        ids = [entry["id"] for entry in models["data"]]  # type: ignore[attr-defined]
        assert ids == [UPSTREAM_ALIAS], models
        return
    raise AssertionError(f"llama_cpp.server not ready in {timeout_s} s:\n{upstream.log()[-3000:]}")


@contextlib.contextmanager
def running_upstream(smollm2_path: Path, root: Path) -> Iterator[Upstream]:
    """llama-cpp-python's OpenAI-compatible server with SmolLM2, one request at a time."""
    port = _free_port()
    log_path = root / "llama_cpp_server.log"
    env = _clean_env(root)
    env["PYTHONUNBUFFERED"] = "1"  # its "Disconnected from client" lines reach the log at once
    # fmt: off
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(smollm2_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "1024",
        "--model_alias", UPSTREAM_ALIAS,
        "--api_key", API_KEY,
        "--interrupt_requests", "False",
        "--verbose", "False",
    ]
    # fmt: on
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Upstream(f"http://127.0.0.1:{port}/v1", proc, log_path)
    try:
        _wait_upstream_ready(server, timeout_s=120)
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
