"""Run ``edge-agent`` and ``cloud-broker`` commands for tests: in this process by default
(click's test runner: no interpreter start-up, no re-import, models load once per
command), or as a real process (``process=True``) where the test is about the process:
the console script, exit on a signal, a daemon or broker that keeps running.

Both return what ``subprocess.run`` returns: ``returncode``, ``stdout``, ``stderr``. In
process, the environment is the one given (variables missing from it are removed for the
run), logging goes to the run's stderr as the real command's does, and an exception the
command does not handle becomes a traceback on stderr and exit status 1, as Python's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def run(
    command: str,
    *args: str,
    env: dict[str, str],
    stdin: str | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    if process:
        return subprocess.run(
            [str(BIN / command), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    return _in_process(command, list(args), env, stdin)


def _group(command: str) -> Any:
    if command == "edge-agent":
        from edge_agent.cli.main import cli

        return cli
    if command == "cloud-broker":
        from cloud_broker.cli import cli

        return cli
    raise ValueError(f"no in-process runner for {command!r}")


def _in_process(
    command: str, args: list[str], env: dict[str, str], stdin: str | None
) -> subprocess.CompletedProcess[str]:
    from click.testing import CliRunner

    changes: dict[str, str | None] = {k: v for k, v in env.items() if os.environ.get(k) != v}
    changes.update({key: None for key in os.environ if key not in env})
    with _own_logging():
        result = CliRunner().invoke(
            _group(command), args, input=stdin, env=changes, prog_name=command
        )
    stderr = result.stderr
    exception = result.exception
    if exception is not None and not isinstance(exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess([command, *args], result.exit_code, result.stdout, stderr)


@contextlib.contextmanager
def _own_logging() -> Iterator[None]:
    """The command configures logging as in a fresh process (to its own stderr); pytest's
    handlers come back afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved
        root.setLevel(level)
