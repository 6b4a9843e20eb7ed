"""``models merge``: GGUF language models (a tiny llama model built by the test, and
SmolLM2) and the MiniLM encoder merged into store entries, checked against numpy, against
the inputs, and through llama.cpp and the ONNX build; recipe errors; LoRA baking; the
merge record (reproducible bytes, stale inputs) and a merge killed half-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clirun import BIN, run
from conftest import MiniLM, isolated_env
from lora_adapter import build_adapter
from tiny_gguf import build_tiny_gguf, greedy_tokens, tensors

from ridgeline_core.errors import ManifestError, ModelError, UnknownModelError
from ridgeline_core.merge import MergeRecipe, merge_models
from ridgeline_core.merge.entry import manifest_path, record_of, stale_inputs, to_toml
from ridgeline_core.merge.tensors import SafetensorsFile
from ridgeline_core.merge.writers import SafetensorsOut
from ridgeline_core.store.fetch import sha256_file
from ridgeline_core.store.manifest import ManifestCatalog, ModelManifest
from ridgeline_core.store.store import ModelStore

EDGE_AGENT = str(BIN / "edge-agent")


@dataclass
class Bench:
    """A store of its own, and a folder of manifests for the inputs (path sources)."""

    root: Path
    store: ModelStore
    manifests: Path

    def add(self, name: str, path: Path, like: ModelManifest | None = None, **files: Path) -> None:
        if like is None:
            table: dict[str, Any] = {
                "runtime": "llama.cpp", "format": "gguf", "role": "base", "license": "MIT",
            }  # fmt: skip
        else:
            table = like.model_dump(mode="json", exclude_none=True)
        table.update(
            name=name, sha256=sha256_file(path), size=path.stat().st_size,
            source={"kind": "path", "path": str(path)},
            files=[
                {"name": n, "sha256": sha256_file(p), "size": p.stat().st_size,
                 "source": {"kind": "path", "path": str(p)}}
                for n, p in files.items()
            ],
        )  # fmt: skip
        (self.manifests / f"{name}.toml").write_text(to_toml(table), encoding="utf-8")

    def catalog(self) -> ManifestCatalog:
        return ManifestCatalog.with_bundled([self.store.root / "manifests", self.manifests])

    def merge(self, force: bool = False, **recipe: Any) -> tuple[ModelManifest, Path]:
        parsed = MergeRecipe.from_dict(recipe)
        path = self.root / f"{parsed.name}.toml"
        result = merge_models(self.store, self.catalog(), parsed, path, force=force)
        return result.manifest, self.store.blob_path(result.record.output.sha256)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Bench:
    root = tmp_path_factory.mktemp("merge")
    (root / "manifests").mkdir()
    made = Bench(root, ModelStore(root / "store"), root / "manifests")
    for seed in (0, 1):
        made.add(f"tiny-{seed}", build_tiny_gguf(root / f"tiny-{seed}.gguf", seed=seed))
    made.add("tiny-wide", build_tiny_gguf(root / "tiny-wide.gguf", width=96))
    made.add("tiny-other", build_tiny_gguf(root / "tiny-other.gguf", arch="qwen2"))
    made.add("tiny-words", build_tiny_gguf(root / "tiny-words.gguf", first_letter="k"))
    return made


def inputs(*names: str, weights: tuple[float, ...] = ()) -> list[dict[str, Any]]:
    return [{"model": n, **({"weight": w} if weights else {})} for n, w in
            zip(names, weights or (1.0,) * len(names), strict=True)]  # fmt: skip


# -- GGUF language models -------------------------------------------------------------


@pytest.mark.parametrize(
    "recipe",
    [
        {"method": "slerp", "parameters": {"t": 0.5}},  # unchanged tensors kept as stored
        {"method": "linear", "parameters": {"normalize": False}, "weights": (0.5, 0.5)},
    ],  # ...and Σ wᵢ xᵢ computed for every tensor
    ids=["slerp", "linear-computed"],
)
def test_self_merge_loads_in_llama_cpp_and_generates_the_same_tokens(
    bench: Bench, recipe: dict[str, Any]
) -> None:
    source = bench.root / "tiny-0.gguf"
    weights = recipe.pop("weights", ())
    manifest, merged = bench.merge(
        name=f"tiny-self-{recipe['method']}",
        inputs=inputs("tiny-0", "tiny-0", weights=weights),
        **recipe,
    )
    assert manifest.runtime == "llama.cpp" and manifest.source.kind == "merge"
    assert greedy_tokens(merged) == greedy_tokens(source)
    mine, theirs = tensors(merged), tensors(source)
    assert sorted(mine) == sorted(theirs)  # llama.cpp's quantizer writes its own order
    assert all(np.array_equal(mine[n], theirs[n]) for n in theirs)


def test_slerp_endpoints_are_the_inputs(bench: Bench) -> None:
    for t, expected in ((0.0, "tiny-0"), (1.0, "tiny-1")):
        _, merged = bench.merge(
            name=f"tiny-end-{int(t)}", method="slerp", parameters={"t": t},
            inputs=inputs("tiny-0", "tiny-1"),
        )  # fmt: skip
        want = tensors(bench.root / f"{expected}.gguf")
        got = tensors(merged)
        assert all(np.allclose(got[n], want[n], atol=1e-6) for n in want), t


def test_linear_and_ties_match_numpy_on_every_tensor(bench: Bench) -> None:
    a, b = tensors(bench.root / "tiny-0.gguf"), tensors(bench.root / "tiny-1.gguf")
    _, linear = bench.merge(
        name="tiny-linear", method="linear", inputs=inputs("tiny-0", "tiny-1", weights=(1, 3))
    )
    got = tensors(linear)
    assert all(np.allclose(got[n], 0.25 * a[n] + 0.75 * b[n], atol=1e-6) for n in a)

    _, ties = bench.merge(
        name="tiny-ties", method="ties", base="tiny-0", inputs=inputs("tiny-1"),
        parameters={"density": 0.3},
    )  # fmt: skip
    got = tensors(ties)
    for name in a:  # one task vector: TIES keeps its 30% largest changes, the rest is base
        delta = b[name] - a[name]
        keep = max(1, int(0.3 * delta.size))
        cut = np.sort(np.abs(delta).ravel())[delta.size - keep]
        want = a[name] + np.where(np.abs(delta) >= cut, delta, 0)
        assert np.allclose(got[name], want, atol=1e-6), name


def test_quantized_output_uses_llama_cpp_types_and_stays_close(bench: Bench) -> None:
    _, merged = bench.merge(
        name="tiny-q8", method="linear", quantization="Q8_0", inputs=inputs("tiny-0")
    )
    import gguf

    kinds = {t.name: t.tensor_type.name for t in gguf.GGUFReader(merged).tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["output_norm.weight"] == "F32"
    want, got = tensors(bench.root / "tiny-0.gguf"), tensors(merged)
    worst = max(float(np.abs(got[n] - want[n]).max() / np.abs(want[n]).max()) for n in want)
    assert 0 < worst < 0.01  # quantised (not a copy), within Q8_0's error
    assert len(greedy_tokens(merged)) == 12


def test_dare_ties_is_reproducible_and_depends_on_the_seed(bench: Bench) -> None:
    recipe = {
        "method": "dare_ties", "base": "tiny-0", "inputs": inputs("tiny-1"),
        "parameters": {"density": 0.5},
    }  # fmt: skip
    first = sha256_file(bench.merge(name="tiny-dare", seed=7, **recipe)[1])
    again = sha256_file(bench.merge(name="tiny-dare", seed=7, force=True, **recipe)[1])
    other = sha256_file(bench.merge(name="tiny-dare-2", seed=8, **recipe)[1])
    assert first == again != other


def test_inputs_of_another_shape_or_architecture_are_refused(bench: Bench) -> None:
    with pytest.raises(ModelError, match=r"tensor 'token_embd.weight' is \[300, 96\]"):
        bench.merge(name="tiny-bad", method="linear", inputs=inputs("tiny-0", "tiny-wide"))
    with pytest.raises(ModelError, match="architecture 'qwen2', not 'llama'"):
        bench.merge(name="tiny-bad", method="linear", inputs=inputs("tiny-0", "tiny-other"))
    with pytest.raises(ModelError, match="another vocabulary"):
        bench.merge(name="tiny-bad", method="linear", inputs=inputs("tiny-0", "tiny-words"))
    assert not manifest_path(bench.store, "tiny-bad").exists()


@pytest.mark.parametrize(
    ("recipe", "error", "message"),
    [
        ({"inputs": inputs("tiny-0", "nope")}, UnknownModelError, "unknown model 'nope'"),
        ({"inputs": inputs("tiny-0", "tiny-1", weights=(1, -1))}, ManifestError, "sum to 0"),
        ({"inputs": [{"model": "tiny-0", "weight": "nan"}]}, ManifestError, "finite number"),
        ({"name": "../evil", "inputs": inputs("tiny-0")}, ManifestError, "name"),
        ({"name": "a/b", "inputs": inputs("tiny-0")}, ManifestError, "name"),
        ({"method": "slerp", "inputs": inputs("tiny-0")}, ManifestError, "exactly 2 inputs"),
        ({"method": "ties", "inputs": inputs("tiny-0")}, ManifestError, "needs a base"),
        ({"method": "blend", "inputs": inputs("tiny-0")}, ManifestError, "method"),
        ({"quantization": "Q9", "inputs": inputs("tiny-0")}, ManifestError, "quantization"),
        ({"parameters": {"t": 2}, "inputs": inputs("tiny-0")}, ManifestError, "parameters.t"),
        ({"name": "tiny-0", "inputs": inputs("tiny-0")}, ManifestError, "also an input"),
        ({"name": "smollm2-135m-instruct", "inputs": inputs("tiny-0")}, ModelError, "catalog"),
    ],
)
def test_recipe_errors_are_clear(
    bench: Bench, recipe: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bench.merge(**{"name": "tiny-err", "method": "linear", **recipe})
    assert not manifest_path(bench.store, "tiny-err").exists()


def test_recipe_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\nmethod = ", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"bad\.toml"):
        MergeRecipe.from_file(bad)
    with pytest.raises(ManifestError, match=r"missing\.toml"):
        MergeRecipe.from_file(tmp_path / "missing.toml")


# -- LoRA -----------------------------------------------------------------------------


def test_lora_baked_at_scale_zero_leaves_the_model_unchanged(bench: Bench) -> None:
    adapter = build_adapter(bench.root / "tiny-0.gguf", bench.root / "lora.gguf", rank=4)
    base = tensors(bench.root / "tiny-0.gguf")
    _, zero = bench.merge(
        name="tiny-lora-0", method="lora", base="tiny-0",
        adapters=[{"path": str(adapter), "scale": 0.0}],
    )  # fmt: skip
    got = tensors(zero)
    assert all(np.array_equal(got[n], base[n]) for n in base)

    _, full = bench.merge(
        name="tiny-lora-1", method="lora", base="tiny-0", adapters=[{"path": "lora.gguf"}]
    )  # a path relative to the recipe's folder
    got, lora = tensors(full), tensors(adapter)
    for name in base:
        if f"{name}.lora_a" in lora:  # alpha = rank: scale 1 adds B @ A
            want = base[name] + lora[f"{name}.lora_b"] @ lora[f"{name}.lora_a"]
            assert np.allclose(got[name], want, atol=1e-5), name
        else:
            assert np.array_equal(got[name], base[name]), name
    assert any(not np.array_equal(got[n], base[n]) for n in base)


def test_a_lora_for_another_model_is_refused(bench: Bench) -> None:
    adapter = build_adapter(bench.root / "tiny-wide.gguf", bench.root / "wide-lora.gguf")
    with pytest.raises(ModelError, match="do not fit"):
        bench.merge(
            name="tiny-lora-bad", method="lora", base="tiny-0", adapters=[{"path": str(adapter)}]
        )
    with pytest.raises(ModelError, match="no such file"):
        bench.merge(
            name="tiny-lora-bad", method="lora", base="tiny-0", adapters=[{"path": "none.gguf"}]
        )


# -- the encoder ----------------------------------------------------------------------


def test_encoder_merge_matches_numpy_and_builds_to_onnx(bench: Bench, minilm: MiniLM) -> None:
    from ridgeline_core.store.build import build_model

    companions = {n: minilm.files[n] for n in ("tokenizer.json", "config.json")}
    bench.add("mini-a", minilm.files["model"], minilm.manifest, **companions)
    source = SafetensorsFile(minilm.files["model"], "minilm")
    rng = np.random.default_rng(0)
    nudged = bench.root / "nudged.safetensors"
    out = SafetensorsOut(nudged, list(source.tensors.values()))
    for info in source.tensors.values():
        values = source.read(info.name)
        out.write(info, values + rng.normal(0, 0.01, values.shape) if info.floating else values)
    out.close()
    bench.add("mini-b", nudged, minilm.manifest, **companions)

    manifest, merged = bench.merge(
        name="mini-soup", method="linear", inputs=inputs("mini-a", "mini-b")
    )
    a, b, got = (SafetensorsFile(p, "x") for p in (minilm.files["model"], nudged, merged))
    assert list(got.tensors) == list(a.tensors)  # safetensors: the input's order
    for name, info in a.tensors.items():
        want = (a.read(name) + b.read(name)) / 2 if info.floating else a.read(name)
        assert np.allclose(got.read(name), want, atol=1e-6), name
    assert manifest.build is not None and {f.name for f in manifest.files} == set(companions)

    self_merge, _ = bench.merge(
        name="mini-self", method="linear", inputs=inputs("mini-a", "mini-a")
    )
    built = build_model(bench.store, self_merge)
    base = sha256_file(minilm.fp32)
    assert built.record.artifacts["fp32"].sha256 == base  # same weights, same ONNX graph

    assert "removed mini-self" in _cli(bench, "models", "rm", "mini-self").stdout
    tokenizer = next(f for f in self_merge.files if f.name == "tokenizer.json")
    assert bench.store.blob_path(tokenizer.sha256).is_file()  # mini-a still uses it
    assert not bench.store.blob_path(self_merge.sha256).exists()


# -- the store entry, through the command line ----------------------------------------


def _cli(bench: Bench, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = isolated_env(bench.store, bench.root / "env")
    env["RIDGELINE_EDGE_MODELS__MANIFEST_DIRS"] = json.dumps([str(bench.manifests)])
    done = run("edge-agent", *args, env=env)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_command_line_merge_record_stale_input_and_rm(bench: Bench) -> None:
    recipe = bench.root / "cli.toml"
    recipe.write_text(
        'name = "tiny-cli"\nmethod = "linear"\n'
        '[[inputs]]\nmodel = "tiny-0"\n[[inputs]]\nmodel = "tiny-1"\n',
        encoding="utf-8",
    )
    done = _cli(bench, "models", "merge", str(recipe))
    assert "merged tiny-cli" in done.stdout and "linear merge" in done.stderr
    again = _cli(bench, "models", "merge", str(recipe))
    assert "already merged" in again.stdout
    record = record_of(bench.store, "tiny-cli")
    assert record is not None and record.recipe["method"] == "linear"
    assert record.inputs["tiny-0"] == sha256_file(bench.root / "tiny-0.gguf")
    assert "ok: tiny-cli matches sha256" in _cli(bench, "models", "verify", "tiny-cli").stdout

    # an input changes: the merged model says it is stale until it is merged again
    changed = build_tiny_gguf(bench.root / "tiny-1b.gguf", seed=5)
    bench.add("tiny-1", changed)
    rows = json.loads(_cli(bench, "models", "list", "--json").stdout)["models"]
    row = next(r for r in rows if r["name"] == "tiny-cli")
    assert row["merged"] and "input 'tiny-1' changed" in row["stale"][0]
    stale = _cli(bench, "models", "verify", "tiny-cli", check=False)
    assert stale.returncode != 0 and "stale" in stale.stderr and str(recipe) in stale.stderr
    assert stale_inputs(bench.store, bench.catalog(), bench.catalog().get("tiny-cli"))
    remerged = _cli(bench, "models", "merge", str(recipe))
    assert "merged tiny-cli" in remerged.stdout
    assert not stale_inputs(bench.store, bench.catalog(), bench.catalog().get("tiny-cli"))

    # a calibration fitted on the old weights does not survive a merge with other bytes
    calibration = bench.store.root / "manifests" / "tiny-cli.calibration.json"
    calibration.write_text("{}", encoding="utf-8")
    bench.add("tiny-1", bench.root / "tiny-1.gguf")
    assert "merged tiny-cli" in _cli(bench, "models", "merge", str(recipe)).stdout
    assert not calibration.exists()
    calibration.write_text("{}", encoding="utf-8")

    assert "removed tiny-cli" in _cli(bench, "models", "rm", "tiny-cli").stdout
    assert not calibration.exists()
    assert "tiny-cli" not in bench.catalog() and record_of(bench.store, "tiny-cli") is None
    assert (bench.store.root / "blobs" / "sha256").is_dir()


@pytest.fixture
def smollm2_input(
    bench: Bench, smollm2_path: Path, smollm2_manifest: ModelManifest
) -> Iterator[str]:
    bench.add("smol", smollm2_path, smollm2_manifest)
    yield "smol"
    (bench.manifests / "smol.toml").unlink()


def test_a_killed_merge_leaves_no_partial_entry(bench: Bench, smollm2_input: str) -> None:
    recipe = bench.root / "killed.toml"
    recipe.write_text(
        f'name = "smol-killed"\nmethod = "slerp"\n'
        f'[[inputs]]\nmodel = "{smollm2_input}"\n[[inputs]]\nmodel = "{smollm2_input}"\n',
        encoding="utf-8",
    )
    env = isolated_env(bench.store, bench.root / "env")
    env["RIDGELINE_EDGE_MODELS__MANIFEST_DIRS"] = json.dumps([str(bench.manifests)])
    with subprocess.Popen(
        [EDGE_AGENT, "models", "merge", str(recipe)], env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stderr is not None
        for line in process.stderr:  # kill it once it writes the merged tensors
            if "slerp merge" in line:
                break
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert "smol-killed" not in bench.catalog()
    assert not manifest_path(bench.store, "smol-killed").exists()
    with pytest.raises(UnknownModelError):
        bench.catalog().get("smol-killed")
    leftovers = list((bench.store.root / "tmp").glob("merge-*"))
    assert leftovers  # the killed merge's scratch folder, half written...
    bench.merge(name="tiny-after-kill", method="linear", inputs=inputs("tiny-0"))
    assert not any(path.exists() for path in leftovers)  # ...which the next merge removes
