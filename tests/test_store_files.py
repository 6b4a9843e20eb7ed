"""Models of several files (weights, tokenizer, config) and built files in the store.

Synthetic files through path sources; the real all-MiniLM-L6-v2 build is in test_onnx.py
and test_models_build.py.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import flip_byte

from ridgeline_core.errors import IntegrityError, ManifestError, ModelError, ModelNotPulledError
from ridgeline_core.store import ModelManifest, ModelStore
from ridgeline_core.store.store import BuildRecord, BuiltFile


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(path: Path, data: bytes) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"kind": "path", "path": str(path)}


@pytest.fixture
def encoder(tmp_path: Path) -> tuple[ModelManifest, dict[str, bytes]]:
    blobs = {
        "model": os.urandom(4000),
        "tokenizer.json": b'{"tokenizer": true}',
        "config.json": b'{"model_type": "bert"}',
    }
    source = tmp_path / "src"
    manifest = ModelManifest.from_dict(
        {
            "name": "tiny-encoder",
            "runtime": "onnx",
            "format": "safetensors",
            "role": "embedding",
            "license": "MIT",
            "sha256": sha256(blobs["model"]),
            "size": len(blobs["model"]),
            "source": write(source / "model.safetensors", blobs["model"]),
            "files": [
                {
                    "name": name,
                    "sha256": sha256(data),
                    "size": len(data),
                    "source": write(source / name, data),
                }
                for name, data in blobs.items()
                if name != "model"
            ],
            "build": {"kind": "bert-onnx"},
        }
    )
    return manifest, blobs


def test_pull_stores_every_file_and_open_files_names_them(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, blobs = encoder
    store = ModelStore(tmp_path / "store")
    assert not store.is_present(manifest)
    result = store.pull(manifest)
    assert result.fetched
    assert result.size == sum(len(b) for b in blobs.values())
    assert store.is_present(manifest)
    files = store.open_files(manifest)
    assert set(files) == {"model", "tokenizer.json", "config.json"}
    for name, path in files.items():
        assert path.read_bytes() == blobs[name]
    assert store.open_verified(manifest) == files["model"]
    assert not store.pull(manifest).fetched


def test_a_missing_companion_makes_the_model_not_pulled(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, _ = encoder
    store = ModelStore(tmp_path / "store")
    store.pull(manifest)
    tokenizer = store.open_files(manifest)["tokenizer.json"]
    tokenizer.chmod(0o644)
    tokenizer.unlink()
    assert not store.is_present(manifest)
    with pytest.raises(ModelNotPulledError, match=r"tiny-encoder \(tokenizer.json\)"):
        store.open_files(manifest)
    assert store.pull(manifest).fetched  # fetches just what is missing
    assert store.is_present(manifest)


def test_a_tampered_companion_is_refused_and_named(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, _ = encoder
    store = ModelStore(tmp_path / "store")
    store.pull(manifest)
    flip_byte(store.open_files(manifest)["config.json"], 3)
    with pytest.raises(IntegrityError, match=r"tiny-encoder \(config.json\): .*pull tiny-encoder"):
        store.verify(manifest)


def test_remove_deletes_every_file_and_the_builds(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, blobs = encoder
    store = ModelStore(tmp_path / "store")
    store.pull(manifest)
    built = tmp_path / "model.onnx"
    built.write_bytes(b"onnx" * 100)
    digest, size = store.add_file(built)
    store.save_build_record(
        manifest,
        BuildRecord(
            model=manifest.name,
            inputs=store.inputs_of(manifest),
            artifacts={"fp32": BuiltFile(sha256=digest, size=size)},
        ),
    )
    freed = store.remove(manifest)
    assert freed == sum(len(b) for b in blobs.values()) + size
    assert store.build_record(manifest) is None
    assert not list((store.root / "blobs" / "sha256").glob("[0-9a-f]*"))


def test_build_record_round_trip_and_checked_blobs(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, _ = encoder
    store = ModelStore(tmp_path / "store")
    store.pull(manifest)
    with pytest.raises(ModelNotPulledError, match=r"not built yet.*build tiny-encoder"):
        store.open_built(manifest, "fp32")
    built = tmp_path / "model.onnx"
    built.write_bytes(b"graph" * 50)
    digest, size = store.add_file(built)
    assert digest == sha256(b"graph" * 50)
    store.save_build_record(
        manifest,
        BuildRecord(
            model=manifest.name,
            inputs=store.inputs_of(manifest),
            artifacts={"fp32": BuiltFile(sha256=digest, size=size)},
        ),
    )
    path = store.open_built(manifest, "fp32")
    assert path.read_bytes() == b"graph" * 50
    assert not os.access(path, os.W_OK) or os.geteuid() == 0
    with pytest.raises(ModelNotPulledError, match="not built"):
        store.open_built(manifest, "int8")  # the default variant, never built
    with pytest.raises(ModelError, match="no variant 'fp16'"):
        store.open_built(manifest, "fp16")
    flip_byte(path, 0)
    with pytest.raises(IntegrityError, match=r"fp32 build.*build tiny-encoder"):
        store.open_built(manifest, "fp32", full=True)


def test_a_build_of_other_inputs_is_not_used(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, _ = encoder
    store = ModelStore(tmp_path / "store")
    built = tmp_path / "model.onnx"
    built.write_bytes(b"x" * 10)
    digest, size = store.add_file(built)
    inputs = dict(store.inputs_of(manifest), model="0" * 64)  # weights that changed since
    store.save_build_record(
        manifest,
        BuildRecord(
            model=manifest.name,
            inputs=inputs,
            artifacts={"fp32": BuiltFile(sha256=digest, size=size)},
        ),
    )
    assert store.build_record(manifest) is None


def test_an_unreadable_build_record_is_ignored(
    tmp_path: Path, encoder: tuple[ModelManifest, dict[str, bytes]]
) -> None:
    manifest, _ = encoder
    store = ModelStore(tmp_path / "store")
    (store.root / "builds").mkdir(parents=True)
    (store.root / "builds" / "tiny-encoder.json").write_text("{not json")
    assert store.build_record(manifest) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"build": None}, "needs a \\[build\\] section"),
        ({"files": []}, "needs files"),
        ({"runtime": "llama.cpp"}, "build is for runtime 'onnx'"),
        ({"build": {"kind": "bert-onnx", "variants": ["fp32"]}}, "default_variant 'int8'"),
        ({"build": {"kind": "bert-onnx", "variants": ["int8", "int8"]}}, "listed twice"),
    ],
)
def test_manifest_checks_files_and_build(
    encoder: tuple[ModelManifest, dict[str, bytes]], change: dict[str, Any], message: str
) -> None:
    manifest, _ = encoder
    data = manifest.model_dump(mode="json", exclude={"origin", "file_label"})
    data.update(change)
    with pytest.raises(ManifestError, match=message):
        ModelManifest.from_dict(data)


@pytest.mark.parametrize("name", ["../escape.json", "a/b", "", ".hidden", "x" * 65])
def test_companion_file_names_are_plain(
    encoder: tuple[ModelManifest, dict[str, bytes]], name: str
) -> None:
    manifest, _ = encoder
    data = manifest.model_dump(mode="json", exclude={"origin", "file_label"})
    data["files"][0]["name"] = name
    with pytest.raises(ManifestError, match="files"):
        ModelManifest.from_dict(data)


def test_the_bundled_minilm_manifest_lists_its_files(
    encoder: tuple[ModelManifest, dict[str, bytes]],
) -> None:
    from ridgeline_core.store import ManifestCatalog

    minilm = ManifestCatalog.with_bundled().get("all-minilm-l6-v2")
    assert {f.name for f in minilm.files} == {"tokenizer.json", "config.json"}
    assert minilm.build is not None and minilm.build.default_variant == "int8"
    assert [part.label for part in minilm.parts()] == [
        "all-minilm-l6-v2",
        "all-minilm-l6-v2 (tokenizer.json)",
        "all-minilm-l6-v2 (config.json)",
    ]
