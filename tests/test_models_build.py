"""``models build`` with the real all-MiniLM-L6-v2 wheel: the command line, the record it
keeps, rebuilding when the recipe changes, and refusing tampered builds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from clirun import run
from conftest import MINILM, MiniLM, flip_byte

from ridgeline_core.errors import IntegrityError, ModelError
from ridgeline_core.store import ModelStore
from ridgeline_core.store.build import build_model

pytestmark = pytest.mark.model


def test_cli_build_list_and_verify(minilm: MiniLM, edge_env: dict[str, str]) -> None:
    built = run("edge-agent", "models", "build", MINILM, env=edge_env)
    assert built.returncode == 0, built.stderr
    assert f"already built: {MINILM} (fp32" in built.stdout  # the session built it
    listed = run("edge-agent", "models", "list", "--json", env=edge_env)
    rows = {row["name"]: row for row in json.loads(listed.stdout)["models"]}
    assert rows[MINILM]["pulled"] and rows[MINILM]["built"] is True
    assert rows["smollm2-135m-instruct"]["built"] is None  # nothing to build
    verified = run("edge-agent", "models", "verify", MINILM, env=edge_env)
    assert verified.returncode == 0, verified.stderr
    assert f"ok: {MINILM} fp32 build" in verified.stdout
    assert f"ok: {MINILM} int8 build" in verified.stdout
    nothing = run("edge-agent", "models", "build", "smollm2-135m-instruct", env=edge_env)
    assert nothing.returncode != 0 and "needs no build" in nothing.stderr


def test_a_new_recipe_rebuilds_the_same_bytes_and_a_fresh_store_builds_from_scratch(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    record = model_store.build_record(minilm.manifest)
    assert record is not None
    # copy the pulled files into a store of our own, so the session's store stays intact
    store = ModelStore(tmp_path / "store")
    blobs = store.root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for path in minilm.files.values():
        shutil.copyfile(path, blobs / path.name)
    first = build_model(store, minilm.manifest)
    assert first.built
    again = build_model(store, minilm.manifest)
    assert not again.built  # up to date: nothing to do
    stale = first.record.model_copy(update={"recipe": "bert-onnx/0"})
    store.save_build_record(minilm.manifest, stale)
    rebuilt = build_model(store, minilm.manifest)
    assert rebuilt.built
    # the build is reproducible: same inputs, same recipe, same libraries, same bytes
    assert rebuilt.record.artifacts == first.record.artifacts == record.artifacts


def test_a_tampered_build_is_refused(minilm: MiniLM, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    blobs = store.root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for path in minilm.files.values():
        shutil.copyfile(path, blobs / path.name)
    build_model(store, minilm.manifest)
    int8 = store.open_built(minilm.manifest, "int8")
    flip_byte(int8, 1000)
    with pytest.raises(IntegrityError, match=r"int8 build.*models build all-minilm-l6-v2"):
        store.open_built(minilm.manifest, "int8")
    # building again replaces the damaged file
    assert build_model(store, minilm.manifest).built
    store.open_built(minilm.manifest, "int8")
    with pytest.raises(ModelError, match="no variant 'fp16'"):
        store.open_built(minilm.manifest, "fp16")
