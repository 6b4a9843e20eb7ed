"""A real ``cloud-broker serve`` process on loopback, for tests.

The process is started with the test's environment and config, and the test
waits for its "listening on HOST:PORT" line. ``stop()`` sends SIGTERM and
waits; a broker still running at teardown is killed so no test leaks one.
"""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

_LISTENING = re.compile(r"^listening on (\S+) ")
_METRICS = re.compile(r"^metrics on (\S+)")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


class BrokerProcess:
    def __init__(
        self,
        args: list[str],
        env: dict[str, str],
        *,
        config: str | None = None,
        tmp_path: Path,
        ready_timeout_s: float = 120.0,
    ) -> None:
        command = [sys.executable, "-m", "cloud_broker"]
        if config is not None:
            config_file = tmp_path / f"broker-{time.monotonic_ns()}.toml"
            config_file.write_text(config, encoding="utf-8")
            command += ["--config", str(config_file)]
        self.command = [*command, *args]
        self.stderr_path = tmp_path / f"broker-{time.monotonic_ns()}.err"
        self._stderr = self.stderr_path.open("wb")
        try:
            self.proc = subprocess.Popen(
                self.command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
            )
        except BaseException:  # no process (or the fast lane skipped it): no open file left
            self._stderr.close()
            raise
        self.address = ""
        self.metrics_url: str | None = None
        self.stdout_lines: list[str] = []
        self._wait_ready(ready_timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:  # drains stdout for the process's whole life
            assert self.proc.stdout is not None
            with self.proc.stdout:
                for line in self.proc.stdout:
                    lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break  # the process exited
            self.stdout_lines.append(line)
            if match := _METRICS.match(line):
                self.metrics_url = match.group(1)
            if match := _LISTENING.match(line):
                self.address = match.group(1)
            if line.startswith("serving "):
                break
        if not self.address:
            self.kill()
            raise AssertionError(
                f"broker did not start: {' '.join(self.command)}\n"
                f"stdout: {self.stdout_lines}\nstderr:\n{self.stderr()}"
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def metrics(self) -> dict[str, float]:
        """Current samples as ``{'name{labels}': value}`` (labels as Prometheus prints them)."""
        assert self.metrics_url is not None, "metrics are off for this broker"
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if match := _SAMPLE.match(line):
                samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
        return samples

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()
