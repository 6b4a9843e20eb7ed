"""``cloud-broker``: serve models over gRPC, manage device tokens, settings and the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ridgeline_core.cli import CliState, RidgelineGroup, echo_json, root_group
from ridgeline_core.errors import ConfigError

from .settings import is_loopback, load_broker_settings, split_host_port

__all__ = ["cli", "main"]

cli = root_group(
    "cloud-broker",
    "Ridgeline cloud broker: fronts large models for requests the edge escalates.",
    load_broker_settings,
)


@cli.command()
@click.option("--listen", metavar="HOST:PORT", help="gRPC address (default: server.listen)")
@click.option(
    "--dev",
    is_flag=True,
    help="development mode: plaintext, no auth, reflection on, loopback addresses only",
)
@click.option(
    "--ray",
    "ray_address",
    metavar="ADDRESS",
    help=(
        "serve as a Ray Serve application: local (start a Ray here), auto (this "
        "machine's cluster) or ray://HOST:10001; replicas and fronts from [ray]"
    ),
)
@click.pass_obj
def serve(state: CliState, listen: str | None, dev: bool, ray_address: str | None) -> None:
    """Serve the broker until SIGTERM or Ctrl-C.

    Prints "listening on HOST:PORT" once it accepts calls (port 0 picks a free one);
    with --ray, one such line per front.
    """
    from .server import run

    flags: dict[str, tuple[Any, str]] = {}
    if listen is not None:
        flags["server.listen"] = (listen, f"--listen {listen}")
    if dev:
        flags["server.allow_plaintext"] = (True, "--dev")
        flags["auth.enabled"] = (False, "--dev")
        flags["server.reflection"] = (True, "--dev")
    settings = state.load(flags).settings
    if dev:
        host, _ = split_host_port(settings.server.listen)
        if not is_loopback(host):
            raise ConfigError(
                f"--dev serves without TLS or auth, so only on loopback; "
                f"{settings.server.listen} is not a loopback address"
            )
        if settings.tls.enabled:
            raise ConfigError("--dev serves plaintext; remove the [tls] settings or drop --dev")
    mode = "dev" if dev else "production"
    if ray_address is not None:
        from .on_ray.launch import serve_on_ray

        serve_on_ray(settings, ray_address, mode=mode)
        return
    run(settings, mode=mode)


@cli.group(cls=RidgelineGroup)
def tokens() -> None:
    """Issue, list and revoke device tokens (stored hashed in auth.tokens_file)."""


def _token_file(state: CliState) -> Any:
    from .auth import TokenFile

    return TokenFile(state.load().settings.auth.tokens_file)


@tokens.command("add")
@click.argument("device_id")
@click.option("--replace", is_flag=True, help="issue a new token if the device has one")
@click.pass_obj
def tokens_add(state: CliState, device_id: str, replace: bool) -> None:
    """Issue a token for DEVICE_ID and print it (it is shown only this once)."""
    token = _token_file(state).add(device_id, replace=replace)
    click.echo(token)
    click.secho(
        f"token for {device_id} (shown once; the broker stores only its hash)", err=True, dim=True
    )


@tokens.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def tokens_list(state: CliState, as_json: bool) -> None:
    """Devices that hold a token."""
    entries = sorted(_token_file(state).load().values(), key=lambda e: e.device_id)
    if as_json:
        echo_json([{"device_id": e.device_id, "created": e.created} for e in entries])
        return
    for entry in entries:
        click.echo(f"{entry.device_id}\t{entry.created}")


@tokens.command("revoke")
@click.argument("device_id")
@click.pass_obj
def tokens_revoke(state: CliState, device_id: str) -> None:
    """Revoke DEVICE_ID's token (a running broker notices within a second)."""
    _token_file(state).revoke(device_id)
    click.echo(f"revoked {device_id}")


@cli.group(cls=RidgelineGroup)
def router() -> None:
    """Train the learned router that routes among models (``router = "learned"``)."""


@router.command("train")
@click.option(
    "--outcomes",
    "outcomes_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="judged outcomes, JSONL: prompt, model, correct (+ tokens, logprobs)",
)
@click.option("--out", "out_file", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--encoder", default=None, help="embedding model of the store (all-minilm-l6-v2)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@click.option(
    "--ray", "ray_address", metavar="ADDRESS",
    help="embed the prompts on Ray Data actors: local (a Ray started for this run), auto "
    "(the cluster this machine is in) or ray://HOST:PORT (the ray extra)",
)  # fmt: skip
@click.option(
    "--ray-actors", type=click.IntRange(min=1), default=2, show_default=True,
    help="with --ray: encoder copies embedding at once (one Ray actor each)",
)  # fmt: skip
@click.pass_obj
def router_train(
    state: CliState,
    *,
    outcomes_file: Path,
    out_file: Path,
    encoder: str | None,
    as_json: bool,
    ray_address: str | None,
    ray_actors: int,
) -> None:
    """Fit a router on judged outcomes and write it to --out (a strategy's router_file)."""
    from ridgeline_core.cli import CliProgress

    from .router.commands import train_command
    from .router.on_ray import RayEmbedding

    ray = None if ray_address is None else RayEmbedding(ray_address, ray_actors)
    summary = train_command(
        state.load().settings, outcomes_file, out_file, encoder,
        ray=ray, progress=CliProgress(unit="items"),
    )  # fmt: skip
    if as_json:
        echo_json(summary)
        return
    for model, head in summary["heads"].items():
        click.echo(
            f"{model}: {head['rows']} outcomes, accuracy {head['accuracy']:.3f}, "
            f"held-out AUROC {head['holdout_auroc']:.3f} (l2 {head['l2']:g})"
        )
    for model, calibration in summary["calibration"].items():
        click.echo(
            f"{model}: confidence calibration, held-out AUROC {calibration['holdout_auroc']:.3f}"
        )
    click.echo(f"wrote {out_file}")


def main() -> None:
    cli(prog_name="cloud-broker")
