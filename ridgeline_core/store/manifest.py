"""Model manifests: what a model is, where it comes from, and its sha256.

A manifest is a small TOML file (see ``models/*.toml``). Everything in it that
ends up in a file path (the name, the digest, a wheel member) is validated, so no
manifest can make the store read or write outside its directory: the checked field
types are in :mod:`.manifest_fields`, the source tables in :mod:`.manifest_sources`
(both re-exported here); this module holds the manifest itself and the catalog.
"""

from __future__ import annotations

import difflib
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from ..errors import ManifestError, UnknownModelError
from .manifest_fields import (
    DIGEST_PATTERN,
    FILE_NAME_PATTERN,
    NAME_PATTERN,
    Digest,
    ModelName,
    RelativePath,
    StrictModel,
    check_digest,
    check_name,
)
from .manifest_sources import (
    HuggingFaceSource,
    MergeSource,
    Part,
    PartsSource,
    PathSource,
    Source,
    UrlSource,
    WheelSource,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

__all__ = [
    "DIGEST_PATTERN",
    "FILE_NAME_PATTERN",
    "NAME_PATTERN",
    "VARIANTS",
    "BuildSpec",
    "Digest",
    "HuggingFaceSource",
    "ManifestCatalog",
    "MergeSource",
    "ModelFile",
    "ModelManifest",
    "ModelName",
    "Part",
    "PartsSource",
    "PathSource",
    "RelativePath",
    "Source",
    "UrlSource",
    "Variant",
    "WheelSource",
    "check_digest",
    "check_name",
]


class ModelFile(StrictModel):
    """A file that goes with the model (its tokenizer, its config), stored and verified
    like the model file itself."""

    name: str = Field(pattern=FILE_NAME_PATTERN, description="the file's name, e.g. tokenizer.json")
    sha256: Digest
    size: int = Field(gt=0)
    source: Annotated[Part | MergeSource, Field(discriminator="kind")]


Variant = Literal["fp32", "int8"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8")


class BuildSpec(StrictModel):
    """How ``models build`` turns the stored weights into files a runtime loads."""

    kind: Literal["bert-onnx"] = Field(
        description="bert-onnx: a BERT encoder's safetensors to an ONNX graph (fp32, int8)"
    )
    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS))
    default_variant: Variant = "int8"
    max_length: int = Field(default=256, gt=0, le=8192, description="tokens per input")
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True

    @model_validator(mode="after")
    def _default_is_built(self) -> BuildSpec:
        if self.default_variant not in self.variants:
            raise ValueError(f"default_variant {self.default_variant!r} is not in variants")
        if len(set(self.variants)) != len(self.variants):
            raise ValueError("variants are listed twice")
        return self


class _ManifestTable(StrictModel):
    """The fields of a manifest's TOML table. Pydantic checks them in this order, which
    is the order of the problems a ManifestError lists; :class:`ModelManifest` adds what
    the file does not say (where it was read from, the per-file views)."""

    name: ModelName
    description: str = ""
    runtime: Literal["llama.cpp", "onnx", "scripted"]
    format: Literal["gguf", "onnx", "safetensors", "script"]
    role: Literal["chat", "base", "embedding", "classifier"]
    license: str
    sha256: Digest
    size: int = Field(gt=0, description="file size in bytes")
    context_length: int | None = Field(default=None, gt=0, description="trained context")
    chat_template: str | None = Field(
        default=None, description="Jinja template overriding the one in the file"
    )
    system_prompt: str | None = Field(
        default=None, description="system message used when a request brings none"
    )
    stop: list[str] = Field(default_factory=list, description="extra stop sequences")
    source: Source
    files: list[ModelFile] = Field(
        default_factory=list, description="files that go with the model (tokenizer, config)"
    )
    build: BuildSpec | None = Field(default=None, description="how `models build` converts it")


class ModelManifest(_ManifestTable):
    """One model: what it is, how it runs, where its file comes from and its digest (a
    TOML file under manifests/, or a user's own directory)."""

    # Where the manifest was read from; set by the catalog, not by the file.
    origin: Path | None = Field(default=None, exclude=True)
    # Set on the store's per-file views of a manifest (see ModelManifest.parts).
    file_label: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> ModelManifest:
        _check_source_digest(self)
        _check_files_and_build(self)
        return self

    def parts(self) -> list[ModelManifest]:
        """The model file, then each of ``files``, each as a manifest of one file.

        The store fetches and verifies every part the same way; a part's messages name
        the model and, for a companion file, the file (``file_label``).
        """
        return [self, *(self.model_copy(update=_file_view(extra)) for extra in self.files)]

    @property
    def label(self) -> str:
        """The model's name, and the file's for a companion file view."""
        return f"{self.name} ({self.file_label})" if self.file_label else self.name

    @classmethod
    def from_file(cls, path: Path) -> ModelManifest:
        return cls.from_dict(_read_toml(path), origin=path)

    @classmethod
    def from_dict(cls, data: dict[str, object], origin: Path | None = None) -> ModelManifest:
        """A manifest from a TOML table; a ManifestError lists every problem found."""
        return _validated(cls, data, origin)

    def resolve_local_path(self, raw: str) -> Path:
        """A path source's file, relative paths taken from the manifest's folder."""
        path = Path(raw).expanduser()
        if not path.is_absolute() and self.origin is not None:
            path = self.origin.parent / path
        return path


def _file_view(extra: ModelFile) -> dict[str, object]:
    """What a companion file's view changes in its model's manifest."""
    return {
        "sha256": extra.sha256,
        "size": extra.size,
        "source": extra.source,
        "files": [],
        "build": None,
        "file_label": extra.name,
    }


def _read_toml(path: Path) -> dict[str, object]:
    try:
        data: dict[str, object] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    return data


def _check_source_digest(manifest: ModelManifest) -> None:
    if manifest.source.kind != "parts" and getattr(manifest.source, "sha256", None) is not None:
        raise ValueError(
            "source.sha256 is only for the parts of a parts source; "
            "the file's digest is the manifest's sha256"
        )


def _check_files_and_build(manifest: ModelManifest) -> None:
    names = [f.name for f in manifest.files]
    if len(set(names)) != len(names):
        raise ValueError(f"files: a name is listed twice: {names}")
    if manifest.build is not None:
        if manifest.format != "safetensors" or manifest.runtime != "onnx":
            raise ValueError("build is for runtime 'onnx' models in format 'safetensors'")
        missing = {"config.json", "tokenizer.json"} - set(names)
        if missing:
            raise ValueError(f"a bert-onnx build needs files {sorted(missing)}")
    elif manifest.format == "safetensors":
        raise ValueError("a safetensors model needs a [build] section to become runnable")


def _validated(
    cls: type[ModelManifest], data: dict[str, object], origin: Path | None
) -> ModelManifest:
    where = f"manifest {origin}" if origin else "manifest"
    for internal in ("origin", "file_label"):
        if internal in data:
            raise ManifestError(f"{where}: {internal!r} is not a manifest field")
    try:
        return cls.model_validate({**data, "origin": origin})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'manifest'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ManifestError(f"{where} is invalid: {problems}") from None


class ManifestCatalog:
    """All manifests found in a list of directories; later directories win.

    Ridgeline's bundled manifests come first, so a user's own directory can
    override one by giving a manifest the same name. An invalid manifest file is
    skipped with a warning naming it and its problem, so the other models stay usable;
    asking for the model it names (its ``name``, else the file's stem) says its manifest
    is invalid, even where an earlier directory had a valid one: an override that failed
    does not silently fall back.
    """

    def __init__(
        self, manifests: Iterable[ModelManifest], invalid: Mapping[str, str] | None = None
    ) -> None:
        self._by_name: dict[str, ModelManifest] = {}
        for manifest in manifests:
            self._by_name[manifest.name] = manifest
        self._invalid = dict(invalid or {})  # model name -> why its manifest was skipped

    @classmethod
    def from_dirs(cls, directories: Iterable[Path]) -> ManifestCatalog:
        found: dict[str, ModelManifest | str] = {}  # a manifest, or why it is invalid
        for directory in directories:
            if directory.is_dir():
                found.update(_read_directory(directory))
        manifests = [m for m in found.values() if isinstance(m, ModelManifest)]
        invalid = {name: why for name, why in found.items() if isinstance(why, str)}
        return cls(manifests, invalid)

    @classmethod
    def with_bundled(cls, extra_dirs: Iterable[Path] = ()) -> ManifestCatalog:
        """Ridgeline's bundled manifests, then ``extra_dirs`` (which may override them)."""
        bundled = Path(str(files("ridgeline_models")))
        return cls.from_dirs([bundled, *extra_dirs])

    def get(self, name: str) -> ModelManifest:
        try:
            return self._by_name[name]
        except KeyError:
            pass
        if name in self._invalid:
            raise ManifestError(f"model {name!r} cannot be used: {self._invalid[name]}")
        check_name(name)
        close = difflib.get_close_matches(name, self._by_name, n=3, cutoff=0.5) or [
            known for known in sorted(self._by_name) if known[:4] == name[:4]
        ]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        known = ", ".join(sorted(self._by_name)) or "none"
        raise UnknownModelError(f"unknown model {name!r} (known: {known}){hint}")

    def __iter__(self) -> Iterator[ModelManifest]:
        return iter(sorted(self._by_name.values(), key=lambda m: m.name))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name


def _read_directory(directory: Path) -> dict[str, ModelManifest | str]:
    """The manifests of one directory by model name, or for an invalid one why (logged).
    Two valid manifests of one name in one directory: ManifestError (which is meant?)."""
    found: dict[str, ModelManifest | str] = {}
    seen: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            manifest = ModelManifest.from_file(path)
        except ManifestError as exc:
            log.warning("skipped a model manifest: %s", exc)
            found[_claimed_name(path)] = str(exc)
            continue
        if manifest.name in seen:
            raise ManifestError(
                f"model {manifest.name!r} is defined twice: {seen[manifest.name]} and {path}"
            )
        seen[manifest.name] = path
        found[manifest.name] = manifest
    return found


def _claimed_name(path: Path) -> str:
    """The model an invalid manifest meant: its ``name`` if it reads as one, else the file
    name without ``.toml``."""
    try:
        name = tomllib.loads(path.read_text(encoding="utf-8")).get("name")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        name = None
    return name if isinstance(name, str) and name else path.stem
