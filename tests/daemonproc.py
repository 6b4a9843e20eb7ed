"""A real ``edge-agent serve`` process on loopback and a private unix socket, for tests.

Started with the test's environment and config; waits for its "ready" line and reads
its HTTP URL and gRPC target from the lines before. Every later stdout line is kept
(``wait_for_line``). A daemon still running at teardown is killed.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class DaemonProcess:
    def __init__(
        self,
        env: dict[str, str],
        tmp_path: Path,
        *,
        config: str = "",
        args: tuple[str, ...] = (),
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.config_file = tmp_path / "edge.toml"
        self.config_file.write_text(config, encoding="utf-8")
        self.socket = tmp_path / "run" / "edge.sock"
        self.command = [
            sys.executable, "-m", "edge_agent", "--config", str(self.config_file), "serve",
            "--http", "127.0.0.1:0", "--grpc", f"unix:{self.socket}", *args,
        ]  # fmt: skip
        self.stderr_path = tmp_path / f"daemon-{time.monotonic_ns()}.err"
        self._stderr = self.stderr_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command, env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
            )
        except BaseException:  # no process (or the fast lane skipped it): no open file left
            self._stderr.close()
            raise
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = ""
        self.grpc = ""
        if not self.wait_for_line("ready", ready_timeout_s):
            self.kill()
            raise AssertionError(
                f"daemon did not start: {' '.join(self.command)}\n"
                f"stdout: {self.lines}\nstderr:\n{self.stderr()}"
            )
        for line in self.lines:
            if line.startswith("http listening on "):
                self.url = line.split()[-1]
            if line.startswith("grpc listening on "):
                self.grpc = line.split()[-1]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for_line(self, text: str, timeout_s: float = 30.0) -> bool:
        """Wait until a stdout line starts with ``text`` (lines seen before count)."""
        deadline = time.monotonic() + timeout_s
        while not any(line.startswith(text) for line in self.lines):
            try:
                line = self._new.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return False
            if line is None:
                return any(line.startswith(text) for line in self.lines)
            self.lines.append(line)
        return True

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, key: str | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read().decode()
                status = response.status
        except urllib.error.HTTPError as error:
            body, status = error.read().decode(), error.code
        try:
            return status, json.loads(body)
        except json.JSONDecodeError:
            return status, body

    def post(
        self,
        path: str,
        body: Any,
        key: str | None = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, headers, text = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            status, headers, text = error.code, dict(error.headers), error.read()
        return status, headers, json.loads(text.decode())

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.wait_for_line("stopped", 1.0)  # collect the last lines
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()
