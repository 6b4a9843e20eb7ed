"""Command-line pieces both ``edge-agent`` and ``cloud-broker`` use.

One translation seam for errors: :class:`RidgelineGroup` turns a
:class:`RidgelineError` into one line on stderr and the error's exit code.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import __version__
from .config import LoadedSettings, SettingsLoader, parse_assignment, to_toml
from .errors import ModelError, ModelNotPulledError, RidgelineError
from .store import ManifestCatalog, ModelManifest, ModelsSettings, ModelStore

__all__ = [
    "CliProgress",
    "CliState",
    "RidgelineGroup",
    "configure_logging",
    "echo_json",
    "format_bytes",
    "parse_set_options",
    "root_group",
]

INTERNAL_ERROR_EXIT = 70


class RidgelineGroup(click.Group):
    """A click group that reports Ridgeline errors in one line, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RidgelineError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:  # e.g. `models list | head`: the reader left, nothing to say
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(141)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                traceback.print_exc()
            click.echo(
                f"internal error: {type(exc).__name__}: {exc} (run with -vv for the traceback)",
                err=True,
            )
            ctx.exit(INTERNAL_ERROR_EXIT)


def configure_logging(verbosity: int) -> None:
    """0: warnings from Ridgeline only; 1: info; 2+: debug, llama.cpp's own log included."""
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ridgeline.llama_cpp").setLevel(
        logging.DEBUG if verbosity >= 2 else logging.ERROR
    )


def parse_set_options(assignments: Iterable[str]) -> dict[str, tuple[Any, str]]:
    overrides: dict[str, tuple[Any, str]] = {}
    for text in assignments:
        key, value = parse_assignment(text)
        overrides[key] = (value, f"--set {text}")
    return overrides


def format_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


class CliProgress:
    """A transient progress bar on a terminal; otherwise one line per phase, or silence.

    ``lines=False`` keeps logs quiet for commands whose long phases are rare
    (``ask`` verifies a model before its first load). ``unit="items"`` counts things
    (questions answered) instead of bytes; off a terminal it then prints a line at every
    tenth of the way.
    """

    def __init__(
        self, console: Console | None = None, *, lines: bool = True, unit: str = "bytes"
    ) -> None:
        self._unit = unit
        self._total: int | None = None
        self._done = 0
        self._console = console or Console(stderr=True)
        self._bar = self._console.is_terminal
        self._lines = lines and not self._bar
        self._progress: Any = None
        self._task: Any = None
        self._started = 0.0
        self._description = ""

    def start(self, description: str, total: int | None) -> None:
        self._description, self._started = description, time.monotonic()
        self._total, self._done = total, 0
        if self._lines:
            size = f" ({format_bytes(total)})" if total and self._unit == "bytes" else ""
            self._console.print(f"{description}{size}...", highlight=False)
        if not self._bar:
            return
        self._progress, self._task = _rich_bar(self._console, self._unit, description, total)

    def advance(self, amount: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, amount)
        before, self._done = self._done, self._done + amount
        total = self._total
        counting = self._lines and self._unit != "bytes"
        if counting and total and before * 10 // total != self._done * 10 // total:
            self._console.print(f"  {self._done}/{total}", highlight=False)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._lines and self._description:
            elapsed = time.monotonic() - self._started
            self._console.print(f"{self._description}: done in {elapsed:.1f} s", highlight=False)
        self._description = ""


def _rich_bar(console: Console, unit: str, description: str, total: int | None) -> Any:
    """A started rich progress bar (bytes with speed, or items counted) and its task."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    amounts = (
        (DownloadColumn(), TransferSpeedColumn()) if unit == "bytes" else (MofNCompleteColumn(),)
    )
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        *amounts,
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    progress.start()
    return progress, progress.add_task(description, total=total)


def root_group(name: str, help_text: str, loader: SettingsLoader[Any]) -> click.Group:
    """A command's root group: --config, --set and -v, plus ``config`` and ``models``."""

    @click.group(
        name=name,
        cls=RidgelineGroup,
        help=help_text,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    @click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        help="TOML settings file (see `config show` for the default)",
    )
    @click.option(
        "--set",
        "assignments",
        multiple=True,
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set models.default=NAME (repeatable)",
    )
    @click.option("-v", "--verbose", count=True, help="more logging (-vv: native libraries too)")
    @click.version_option(__version__, prog_name=name)
    @click.pass_context
    def root(
        ctx: click.Context, config_file: Path | None, assignments: tuple[str, ...], verbose: int
    ) -> None:
        configure_logging(verbose)
        ctx.obj = CliState(loader, config_file, parse_set_options(assignments))

    root.add_command(_config_group())
    root.add_command(_models_group())
    return root


@dataclass
class CliState:
    loader: SettingsLoader[Any]
    config_file: Path | None
    overrides: dict[str, tuple[Any, str]] = field(default_factory=dict)

    def load(self, extra: Mapping[str, tuple[Any, str]] | None = None) -> LoadedSettings[Any]:
        """Settings for this invocation: file < environment < --set < command flags."""
        return self.loader(
            config_file=self.config_file,
            env=os.environ,
            overrides={**self.overrides, **(extra or {})},
        )


def _config_group() -> click.Group:
    @click.group("config", cls=RidgelineGroup)
    def config() -> None:
        """Show the effective settings."""

    @config.command("show")
    @click.option("--json", "as_json", is_flag=True, help="print JSON with each value's origin")
    @click.pass_obj
    def show(state: CliState, as_json: bool) -> None:
        """Print the effective settings and where each value came from."""
        loaded = state.load()
        if as_json:
            echo_json(
                {
                    "config_file": loaded.config_file,
                    "settings": loaded.settings.model_dump(mode="json"),
                    "origins": loaded.origins,
                }
            )
            return
        source = loaded.config_file or "none (defaults, environment and flags only)"
        click.echo(f"# config file: {source}")
        click.echo(to_toml(loaded.settings, loaded.origins), nl=False)

    return config


def _open_models(state: CliState) -> tuple[ManifestCatalog, ModelStore, str]:
    models: ModelsSettings = state.load().settings.models
    return models.catalog(), models.store(), models.default


def _models_group() -> click.Group:
    """``models list | pull | build | merge | verify | rm`` (one group, shared by both
    commands)."""
    return models


@click.group("models", cls=RidgelineGroup)
def models() -> None:
    """List, pull, build, merge, verify and remove models in the local store."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="print JSON")
@click.pass_obj
def list_models(state: CliState, as_json: bool) -> None:
    """Known models and whether each is in the store."""
    catalog, store, default = _open_models(state)
    rows = [_model_row(m, store, default, catalog) for m in catalog]
    if as_json:
        echo_json({"store": str(store.root), "models": rows})
        return
    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ROLE", "RUNTIME", "SIZE", "STATUS", "LICENSE"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        status = "pulled" if row["pulled"] else "not pulled"
        if row["built"] is not None:
            status += ", built" if row["built"] else ", not built"
        if row["stale"]:
            status += ", stale merge"
        table.add_row(
            row["name"] + (" *" if row["default"] else ""), row["role"], row["runtime"],
            format_bytes(row["size"]), status, row["license"],
        )  # fmt: skip
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # a pipe or a log: never wrap rows
    console.print(table)
    click.echo(f"* default model · store: {store.root}")


@models.command("pull")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--force", is_flag=True, help="fetch again even if a verified copy exists")
@click.pass_obj
def pull(state: CliState, names: tuple[str, ...], force: bool) -> None:
    """Fetch models into the store and verify their sha256 (default: the default model)."""
    catalog, store, default = _open_models(state)
    for name in names or (default,):
        manifest = catalog.get(name)
        result = store.pull(manifest, CliProgress(), force=force)
        what = "pulled" if result.fetched else "already present and verified:"
        click.echo(
            f"{what} {manifest.name} ({format_bytes(result.size)}, "
            f"sha256 {manifest.sha256[:12]}) in {result.seconds:.1f} s"
        )


@models.command("build")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.option("--force", is_flag=True, help="build again even if an up-to-date build exists")
@click.pass_obj
def build(state: CliState, names: tuple[str, ...], force: bool) -> None:
    """Make the files a model's runtime loads (ONNX fp32 and int8 from safetensors),
    pulling the model first if needed, and store them with their sha256."""
    from .store.build import build_model

    catalog, store, _ = _open_models(state)
    for name in names:
        manifest = catalog.get(name)
        result = build_model(store, manifest, CliProgress(), force=force)
        what = "built" if result.built else "already built:"
        variants = ", ".join(
            f"{variant} {format_bytes(built.size)} sha256 {built.sha256[:12]}"
            for variant, built in result.record.artifacts.items()
        )
        click.echo(f"{what} {manifest.name} ({variants}) in {result.seconds:.1f} s")


@models.command("merge")
@click.argument("recipe", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="merge again even if an up-to-date merge is stored")
@click.option("--threads", type=click.IntRange(min=1), help="quantizer threads [default: cores]")
@click.pass_obj
def merge(state: CliState, recipe: Path, force: bool, threads: int | None) -> None:
    """Merge store models into a new one as RECIPE.toml says (linear, slerp,
    task_arithmetic, ties, dare_ties; or lora: adapters baked into a base); an encoder
    is then built to ONNX. See the README's "Merging models"."""
    from .merge import MergeRecipe, merge_models
    from .store.build import build_model

    catalog, store, _ = _open_models(state)
    parsed = MergeRecipe.from_file(recipe)
    result = merge_models(
        store, catalog, parsed, recipe.resolve(), CliProgress(),
        force=force, threads=threads or os.cpu_count() or 1,
    )  # fmt: skip
    output = result.record.output
    what = "merged" if result.merged else "already merged (same recipe, same inputs):"
    click.echo(
        f"{what} {parsed.name} ({format_bytes(output.size)}, sha256 {output.sha256[:12]}) "
        f"in {result.seconds:.1f} s"
    )
    if result.manifest.build is not None and parsed.build:
        built = build_model(store, result.manifest, CliProgress())
        artifacts = built.record.artifacts.items()
        variants = ", ".join(f"{v} sha256 {b.sha256[:12]}" for v, b in artifacts)
        click.echo(f"built {parsed.name} ({variants}) in {built.seconds:.1f} s")


@models.command("verify")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.pass_obj
def verify(state: CliState, names: tuple[str, ...]) -> None:
    """Hash stored models in full and compare with their manifests; a merged model must
    also still match the inputs it was merged from."""
    from .merge.entry import stale_inputs

    catalog, store, _ = _open_models(state)
    for name in names:
        manifest = catalog.get(name)
        store.verify(manifest, CliProgress())
        click.echo(f"ok: {manifest.name} matches sha256 {manifest.sha256}")
        if manifest.build is not None and store.build_record(manifest) is not None:
            for variant in manifest.build.variants:
                store.open_built(manifest, variant, full=True)
                click.echo(f"ok: {manifest.name} {variant} build")
        stale = stale_inputs(store, catalog, manifest)
        if stale:
            recipe = getattr(manifest.source, "recipe", "RECIPE.toml")
            raise ModelError(
                f"model {manifest.name!r} is stale: {'; '.join(stale)}; "
                f"run `models merge {recipe}` again"
            )


@models.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@click.pass_obj
def remove(state: CliState, names: tuple[str, ...]) -> None:
    """Delete models from the store."""
    from .merge.entry import remove_merged

    catalog, store, _ = _open_models(state)
    for name in names:
        manifest = catalog.get(name)
        shared = {p.sha256 for m in catalog if m.name != manifest.name for p in m.parts()}
        freed = store.remove(manifest, keep=shared)
        remove_merged(store, manifest)
        if not freed and manifest.source.kind != "merge":
            raise ModelNotPulledError(f"model {name!r} is not in the store {store.root}")
        click.echo(f"removed {manifest.name} ({format_bytes(freed)} freed)")


def _model_row(
    manifest: ModelManifest, store: ModelStore, default: str, catalog: ManifestCatalog
) -> dict[str, Any]:
    from .merge.entry import stale_inputs

    return {
        "name": manifest.name,
        "description": manifest.description,
        "runtime": manifest.runtime,
        "format": manifest.format,
        "role": manifest.role,
        "license": manifest.license,
        "size": manifest.size,
        "sha256": manifest.sha256,
        "pulled": store.is_present(manifest),
        # None: nothing to build; otherwise whether an up-to-date build is stored
        "built": None if manifest.build is None else store.build_record(manifest) is not None,
        "default": manifest.name == default,
        "merged": manifest.source.kind == "merge",
        "stale": stale_inputs(store, catalog, manifest),  # why a merge no longer matches
    }


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
