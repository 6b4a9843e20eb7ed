"""Layered settings: defaults < TOML file < environment < command-line flags.

Entry points call :func:`load_settings` once and pass the result down; nothing
else reads the environment. Each effective value remembers which layer set it,
so ``config show`` can say why a value is what it is.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import platformdirs
from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "LoadedSettings",
    "Section",
    "SettingsLoader",
    "load_settings",
    "parse_assignment",
    "settings_loader",
    "to_toml",
]

SettingsT = TypeVar("SettingsT", bound=BaseModel)
SettingsT_co = TypeVar("SettingsT_co", bound=BaseModel, covariant=True)


class Section(BaseModel):
    """Base of settings models: unknown keys are errors, values are read-only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class LoadedSettings(Generic[SettingsT_co]):
    settings: SettingsT_co
    # dotted key -> "default", "file <path>", "env <NAME>" or "flag <text>"
    origins: dict[str, str]
    config_file: Path | None


def load_settings(
    model: type[SettingsT],
    *,
    config_file: Path | None,
    env: Mapping[str, str],
    env_prefix: str,
    overrides: Mapping[str, tuple[Any, str]] | None = None,
    default_config_file: Path | None = None,
) -> LoadedSettings[SettingsT]:
    """Build ``model`` from its defaults, a TOML file, ``env`` and ``overrides``.

    The file is ``config_file``, else ``{env_prefix}CONFIG`` from ``env``, else
    ``default_config_file`` if it exists; a file named either of the first two
    ways must exist. ``overrides`` maps dotted keys to ``(value, flag text)``.
    Environment variables are ``{env_prefix}{SECTION}__{KEY}`` (case-insensitive);
    an unknown one is an error, so a typo never goes unnoticed, and an empty one
    counts as unset.
    """
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    path = _config_path(config_file, env, env_prefix, default_config_file)
    if path is not None:
        _merge_file(path, merged, origins)
    _merge_env(model, env, env_prefix, merged, origins)
    for key, (value, flag) in (overrides or {}).items():
        _known_key(model, key, flag)
        _set(merged, key, value)
        origins[key] = f"flag {flag}"

    try:
        settings = model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None
    for key, _ in _flatten(settings.model_dump()):
        origins.setdefault(key, "default")
    return LoadedSettings(settings=settings, origins=origins, config_file=path)


def _config_path(
    config_file: Path | None,
    env: Mapping[str, str],
    env_prefix: str,
    default_config_file: Path | None,
) -> Path | None:
    path = config_file
    if path is None:
        named = next((v for k, v in env.items() if k.upper() == f"{env_prefix}CONFIG"), "")
        path = Path(named) if named else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path is None and default_config_file is not None and default_config_file.is_file():
        path = default_config_file
    return path


def _merge_file(path: Path, merged: dict[str, Any], origins: dict[str, str]) -> None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    for key, value in _flatten(data):
        _set(merged, key, value)
        origins[key] = f"file {path}"


def _merge_env(
    model: type[BaseModel],
    env: Mapping[str, str],
    env_prefix: str,
    merged: dict[str, Any],
    origins: dict[str, str],
) -> None:
    for name, raw in sorted(env.items()):
        upper = name.upper()
        if not upper.startswith(env_prefix) or upper == f"{env_prefix}CONFIG":
            continue
        if raw == "":
            continue  # an empty variable is unset, not an empty value
        key = upper[len(env_prefix) :].lower().replace("__", ".")
        _known_key(model, key, f"environment variable {name}")
        _set(merged, key, _parse_env_value(raw))
        origins[key] = f"env {name}"


class SettingsLoader(Protocol[SettingsT_co]):
    def __call__(
        self,
        *,
        config_file: Path | None,
        env: Mapping[str, str],
        overrides: Mapping[str, tuple[Any, str]] | None = None,
    ) -> LoadedSettings[SettingsT_co]: ...


def settings_loader(
    model: type[SettingsT], *, env_prefix: str, file_name: str
) -> SettingsLoader[SettingsT]:
    """A loader for ``model`` reading ``<user config dir>/ridgeline/<file_name>`` by default."""

    def load(
        *,
        config_file: Path | None,
        env: Mapping[str, str],
        overrides: Mapping[str, tuple[Any, str]] | None = None,
    ) -> LoadedSettings[SettingsT]:
        return load_settings(
            model,
            config_file=config_file,
            env=env,
            env_prefix=env_prefix,
            overrides=overrides,
            default_config_file=Path(platformdirs.user_config_dir("ridgeline")) / file_name,
        )

    return load


def parse_assignment(text: str) -> tuple[str, Any]:
    """Parse ``section.key=value`` from a ``--set`` flag; the value is TOML or a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def to_toml(settings: BaseModel, origins: Mapping[str, str] | None = None) -> str:
    """Render settings as TOML, each value annotated with where it came from."""
    top: list[str] = []  # keys outside any table must come before the first table
    lines: list[str] = []
    tables: list[str] = []  # arrays of tables go last, where TOML allows them
    data = settings.model_dump(mode="json")
    for section, values in data.items():
        if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
            origin = f"  # {origins.get(section, 'default')}" if origins is not None else ""
            for entry in values:
                tables.append(f"\n[[{section}]]{origin}")
                tables += [_toml_line(key, value, "", None) for key, value in entry.items()]
            continue
        if not isinstance(values, dict):
            top.append(_toml_line(section, values, section, origins))
            continue
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            lines.append(_toml_line(key, value, f"{section}.{key}", origins))
    return "\n".join(top + lines + tables).lstrip("\n") + "\n"


def _toml_line(key: str, value: Any, dotted: str, origins: Mapping[str, str] | None) -> str:
    origin = f"  # {origins.get(dotted, 'default')}" if origins is not None else ""
    if value is None:
        return f"# {key} = (unset){origin}"
    return f"{key} = {_toml_value(value)}{origin}"


def _toml_value(value: Any) -> str:
    """A TOML literal for the JSON-like values settings hold."""
    if isinstance(value, str):
        # JSON string escapes are valid TOML; TOML also forbids a raw DEL character.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):  # an inline table
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{ " + ", ".join(items) + " }"
    return json.dumps(value)


def _toml_key(key: str) -> str:
    return (
        key
        if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
        else (_toml_value(key))
    )


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{dotted}.")
        else:
            yield dotted, value


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"setting {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _known_key(model: type[BaseModel], dotted: str, where: str) -> None:
    """Accept only a full path to one setting (``section.key``), never a whole section."""
    current: type[BaseModel] | None = model
    for part in dotted.split("."):
        fields = current.model_fields if current is not None else {}
        if part not in fields:
            valid = ", ".join(_leaf_keys(model))
            raise ConfigError(f"{where}: unknown setting {dotted!r} (known: {valid})")
        annotation = fields[part].annotation
        current = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
    if current is not None:
        raise ConfigError(f"{where}: {dotted!r} is a section; set its keys one by one")


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(_leaf_keys(annotation, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _parse_env_value(raw: str) -> Any:
    stripped = raw.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            pass
    return raw


def _describe(exc: ValidationError, origins: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        key = ".".join(parts)
        origin = next(
            (
                origins[".".join(parts[:n])]
                for n in range(len(parts), 0, -1)
                if ".".join(parts[:n]) in origins
            ),
            None,
        )
        where = f" (from {origin})" if origin else ""
        problems.append(f"{key}: {error['msg']}{where}")
    return "invalid settings: " + "; ".join(problems)
