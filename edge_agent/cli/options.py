"""Options and helpers shared by the ``edge-agent`` command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ridgeline_core.cli import CliState
from ridgeline_core.errors import ConfigError

__all__ = ["MODES", "broker_flags", "broker_option", "check_dev", "dev_option", "trace_option"]

MODES = click.Choice(["auto", "local", "cloud"])


def broker_flags(broker: str | None, dev: bool, trace: Path | None) -> dict[str, tuple[Any, str]]:
    flags: dict[str, tuple[Any, str]] = {}
    if broker is not None:
        flags["broker.address"] = (broker, f"--broker {broker}")
    if dev:
        flags["broker.plaintext"] = (True, "--dev")
    if trace is not None:
        flags["telemetry.trace"] = (trace, f"--telemetry-trace {trace}")
    return flags


def check_dev(state: CliState, flags: dict[str, tuple[Any, str]], dev: bool) -> Any:
    settings = state.load(flags).settings
    if dev and not settings.broker.address:
        raise ConfigError("--dev needs a broker address: --broker 127.0.0.1:PORT")
    return settings


broker_option = click.option("--broker", metavar="HOST:PORT", help="broker address")
dev_option = click.option(
    "--dev", is_flag=True, help="plaintext, no token: a loopback `cloud-broker serve --dev`"
)
trace_option = click.option(
    "--telemetry-trace",
    "trace",
    type=click.Path(dir_okay=False, path_type=Path),
    help="replay telemetry from a JSONL/CSV trace instead of this device",
)
