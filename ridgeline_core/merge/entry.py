"""A merged model as a store entry: its manifest under ``<store>/manifests/`` (the
catalog reads that folder) and its merge record under ``<store>/merges/``.

The record keeps the recipe and the sha256 of every input, so a rerun can tell whether
the stored output is still what the recipe makes, and :func:`stale_inputs` says which
input changed since. The manifest is written last, atomically: until it exists the model
does not, so a merge killed at any point leaves no partial entry.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..errors import ModelError, UnknownModelError
from ..files import atomic_write
from ..store.manifest import ManifestCatalog, ModelManifest, check_name
from ..store.records import BuiltFile
from ..store.store import ModelStore

__all__ = ["MergeRecord", "manifest_path", "record_of", "remove_merged", "stale_inputs"]

log = logging.getLogger(__name__)


class MergeRecord(BaseModel):
    """``merges/<name>.json``: how a merged model was made."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["ridgeline-merge/1"] = "ridgeline-merge/1"
    model: str
    recipe: dict[str, Any]  # the recipe as read (MergeRecipe.as_record)
    recipe_path: str
    inputs: dict[str, str]  # store model (or "adapter:<file>") -> sha256 it was merged from
    output: BuiltFile
    builder: dict[str, str] = {}
    seconds: float = 0.0
    merged_at: str = ""


def manifest_path(store: ModelStore, name: str) -> Path:
    return store.root / "manifests" / f"{check_name(name)}.toml"


def _record_path(store: ModelStore, name: str) -> Path:
    return store.root / "merges" / f"{check_name(name)}.json"


def record_of(store: ModelStore, name: str) -> MergeRecord | None:
    path = _record_path(store, name)
    try:
        return MergeRecord.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable merge record %s: %s", path, exc)
        return None


def save_entry(store: ModelStore, record: MergeRecord, manifest: dict[str, Any]) -> None:
    """The record, then the manifest (the entry exists once the manifest does). A merge
    that replaces an earlier one with other bytes drops the earlier one's calibration."""
    earlier = record_of(store, record.model)
    if earlier is not None and earlier.output.sha256 != record.output.sha256:
        _drop_calibrations(store, record.model)
    for path, text in (
        (_record_path(store, record.model), record.model_dump_json(indent=2)),
        (manifest_path(store, record.model), to_toml(manifest)),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text, mode=None)


def stale_inputs(store: ModelStore, catalog: ManifestCatalog, manifest: ModelManifest) -> list[str]:
    """Why a merged model no longer matches its inputs (empty: it does, or it was not
    merged): an input whose stored digest changed or that is gone from the catalog."""
    record = record_of(store, manifest.name) if manifest.source.kind == "merge" else None
    if record is None:
        return []
    reasons = []
    for name, digest in record.inputs.items():
        if name.startswith("adapter:"):
            continue  # a file outside the store: the record keeps its digest for the reader
        try:
            now = catalog.get(name).sha256
        except (UnknownModelError, ModelError):
            reasons.append(f"input {name!r} is no longer a known model")
            continue
        if now != digest:
            reasons.append(f"input {name!r} changed (sha256 {digest[:12]} -> {now[:12]})")
    return reasons


def remove_merged(store: ModelStore, manifest: ModelManifest) -> None:
    """Forget a merged model: its manifest, record and calibration (``store.remove`` takes
    its files)."""
    if manifest.source.kind != "merge":
        return
    for path in (manifest_path(store, manifest.name), _record_path(store, manifest.name)):
        path.unlink(missing_ok=True)
    _drop_calibrations(store, manifest.name)


def _drop_calibrations(store: ModelStore, name: str) -> None:
    """``edge-agent calibrate`` fits a model's confidence beside its manifest; a fit for
    other weights must not carry over to a model merged again under the same name."""
    for kind in ("", ".knowledge"):
        (store.root / "manifests" / f"{check_name(name)}{kind}.calibration.json").unlink(
            missing_ok=True
        )


def to_toml(data: dict[str, Any]) -> str:
    """A manifest table as TOML: scalars first, then tables, then arrays of tables."""
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if not _is_table(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *(f"{k} = {_value(v)}" for k, v in value.items())]
        elif _is_table(value):
            for item in value:
                lines += ["", f"[[{key}]]", *(f"{k} = {_value(v)}" for k, v in item.items())]
    return "\n".join(lines) + "\n"


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON's escapes are TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")
