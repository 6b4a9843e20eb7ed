"""What ``models build`` made of a model: the built files (ONNX graphs, trained heads)
stored as blobs, and the record of what each was built from (``builds/<name>.json``).

:class:`BuiltFiles` is the part of :class:`~ridgeline_core.store.store.ModelStore` that
handles them, over :class:`AddedFiles` (any file made on this machine, known by its
digest); the store supplies its blob files, records and checker.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, ModelNotPulledError
from .blobs import BlobFiles
from .manifest import ModelManifest
from .records import BuildRecord, BuildRecords, inputs_of

if TYPE_CHECKING:
    from .checker import BlobChecker

__all__ = ["AddedFiles", "BuiltFiles"]


class AddedFiles:
    """Files made on this machine (a build, a trained head): made in the store's scratch
    space, added as blobs, and opened by digest, checked before use like pulled ones."""

    _files: BlobFiles

    @property
    def _checker(self) -> BlobChecker:
        raise NotImplementedError

    def scratch(self, prefix: str) -> contextlib.AbstractContextManager[Path]:
        """A temporary directory under the store's tmp/ (same disk as the blobs), removed
        on exit: where builds and pulls make files before :meth:`add_file` takes them."""
        return self._files.scratch(prefix)

    def add_file(self, source: Path) -> tuple[str, int]:
        """Copy a file made on this machine (a build, a trained head) into the store.

        Returns its sha256 and size; the blob is stamped as verified like a pulled one."""
        return self._files.add_file(source)

    def open_blob(
        self, digest: str, size: int, label: str, hint: str, *, full: bool = False
    ) -> Path:
        """A stored file known by digest and size (a build's output), checked before use;
        ``full`` hashes it even when its stamp says it is unchanged."""
        return self._checker.open_blob(digest, size, label, hint, full=full)


class BuiltFiles(AddedFiles):
    """Built files of the store's models and the records of what each was built from."""

    _records: BuildRecords
    _pull_command: str

    def _remove_build(self, manifest: ModelManifest) -> int:
        """Delete the built files and the record; return the bytes freed."""
        record = self.build_record(manifest)
        if record is None:
            return 0
        freed = sum(self._files.remove(a.sha256, manifest.label) for a in record.artifacts.values())
        with self._files.errors(f"remove the build record of {manifest.name}"):
            self._records.path(manifest.name).unlink(missing_ok=True)
        return freed

    def build_record(self, manifest: ModelManifest) -> BuildRecord | None:
        """What ``models build`` last made of this model, if it was made from these files."""
        return self._records.get(manifest)

    def save_build_record(self, manifest: ModelManifest, record: BuildRecord) -> None:
        with self._files.errors(f"record the build of {manifest.name}"):
            self._records.save(manifest, record)

    def open_built(
        self, manifest: ModelManifest, variant: str | None = None, *, full: bool = False
    ) -> Path:
        """A built file of the model (default: the manifest's default variant), checked
        (``full``: hashed in full, stamp or not)."""
        hint = f"run: {self._pull_command.replace(' pull', ' build')} {manifest.name}"
        variant = _built_variant(manifest, variant)
        record = self.build_record(manifest)
        if record is None or variant not in record.artifacts:
            raise ModelNotPulledError(f"model {manifest.name!r} is not built yet ({hint})")
        artifact = record.artifacts[variant]
        return self.open_blob(
            artifact.sha256, artifact.size, f"{manifest.name} ({variant} build)", hint, full=full
        )

    def inputs_of(self, manifest: ModelManifest) -> dict[str, str]:
        return inputs_of(manifest)


def _built_variant(manifest: ModelManifest, variant: str | None) -> str:
    if manifest.build is None:
        raise ModelError(f"model {manifest.name!r} has nothing to build; load it directly")
    variant = variant or manifest.build.default_variant
    if variant not in manifest.build.variants:
        raise ModelError(
            f"model {manifest.name!r} has no variant {variant!r} "
            f"(variants: {', '.join(manifest.build.variants)})"
        )
    return variant
