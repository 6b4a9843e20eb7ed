"""The encoder side of the model-merging benchmark (issue 20): a fine-tuned all-MiniLM-L6-v2
to merge with its base, and the two figures a merge trades off.

- ``fine_tune``: all-MiniLM-L6-v2 fine-tuned with torch on the home-intents training set
  (``examples/specialists/home-intents/train.jsonl``; the held-out file is never read). The
  BERT forward pass is written here against the weights' own tensor names (no
  transformers); the loss is cross-entropy of a cosine classifier on the mean-pooled,
  L2-normalised embedding (class weights start at the classes' mean embeddings, logits
  scaled by ``SCALE``). The head is thrown away: ``model.safetensors`` keeps the base's
  header byte for byte (same names, shapes, dtypes, order), only the data changes.
- ``intent_accuracy``: what the fine-tune is for. A specialist head trained the way
  Ridgeline trains one (``edge_agent.knowledge.specialists``) on the encoder's int8 ONNX
  embeddings of train.jsonl, scored on heldout.jsonl. The base already gets 0.978 (4 of
  180 wrong), so ``intent_figures`` adds two stricter held-out figures: the head's log
  loss, and the accuracy of heads trained on 5 examples per label. (The specialist's own
  cross-validated figure is not one of them: the fine-tune has seen every fold.)
- ``retrieval_recall``: what it may cost. Recall@k on the knowledge-v1 test questions
  (a passage of the question's source file holding an accepted answer among the first k
  chunks of all collections), as ``benchmarks/knowledge.py`` measures it; nothing in
  it is about smart-home intents. (Measured: the default fine-tune raises it, 0.812 to
  0.859 on test, 0.856 to 0.923 on the train questions, rather than lowering it.)
- ``register_encoder``: a manifest (``path`` source) so the store can pull, build and
  merge the fine-tune like any other encoder.

Smoke run (fine-tune, register, then both figures for the base and the fine-tune)::

    flock /tmp/cpu.lock .venv/bin/python benchmarks/merging_encoder.py \\
        --base-blobs /work/teststore

``--base-blobs`` copies the base's three files from an existing store instead of pulling
the wheel (that store is only read); ``--store``/``--work`` default to fresh directories
under /tmp. Needs torch (CPU build); runs on 2 threads.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import struct
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

    from edge_agent.knowledge.embeddings import Embedder
    from edge_agent.knowledge.specialists import Example, Specialist
    from ridgeline_core.store import ModelStore

ROOT = Path(__file__).resolve().parent.parent
INTENTS = ROOT / "examples" / "specialists" / "home-intents"
KNOWLEDGE = ROOT / "datasets" / "knowledge-v1"
BASE_MODEL = "all-minilm-l6-v2"
FINE_TUNED = "all-minilm-l6-v2-home-intents"
COMPANIONS = ("tokenizer.json", "config.json")
MAX_TOKENS = 256  # the manifest's build.max_length
EPOCHS = 3
LEARNING_RATE = 3e-5  # the encoder's; the head's is HEAD_RATE
HEAD_RATE = 1e-3
SCALE = 20.0  # cosine logits times this
BATCH = 32
THREADS = 2

Array = npt.NDArray[Any]
Weights = dict[str, "torch.Tensor"]

# -- safetensors: read the data, write it back under the base's own header --------------

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32}  # fmt: skip


def _header(path: Path) -> tuple[bytes, dict[str, Any]]:
    """The file's first 8 + header bytes as they are, and the header parsed."""
    with path.open("rb") as stream:
        (length,) = struct.unpack("<Q", stream.read(8))
        raw = stream.read(length)
    return struct.pack("<Q", length) + raw, json.loads(raw)


def load_tensors(path: Path) -> dict[str, Array]:
    """Every tensor of a safetensors file by name, in its stored dtype (writable copies)."""
    prefix, header = _header(path)
    data = memoryview(path.read_bytes())[len(prefix) :]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = _DTYPES[entry["dtype"]]
        tensors[name] = np.frombuffer(data[start:end], dtype=dtype).reshape(entry["shape"]).copy()
    return tensors


def save_like(base: Path, tensors: Mapping[str, Array], out: Path) -> None:
    """Write ``tensors`` under ``base``'s header, unchanged: every name, shape and dtype
    must match it (so the file differs from the base in its data only)."""
    prefix, header = _header(base)
    entries = sorted((e["data_offsets"], n) for n, e in header.items() if n != "__metadata__")
    if set(tensors) != {n for _, n in entries}:
        raise ValueError(f"tensor names differ from {base}")
    with out.open("wb") as stream:
        stream.write(prefix)
        for (start, end), name in entries:
            entry, value = header[name], np.ascontiguousarray(tensors[name])
            if list(value.shape) != entry["shape"] or value.dtype != _DTYPES[entry["dtype"]]:
                raise ValueError(f"{name}: {value.dtype}{list(value.shape)} is not as in {base}")
            if stream.tell() != len(prefix) + start or value.nbytes != end - start:
                raise ValueError(f"{name}: the header's offsets do not match the data")
            stream.write(value.tobytes())


# -- the encoder in torch ---------------------------------------------------------------


@dataclass(frozen=True)
class BertShape:
    """What the forward pass needs from config.json."""

    layers: int
    heads: int
    eps: float
    hidden_dropout: float
    attention_dropout: float

    @classmethod
    def from_file(cls, path: Path) -> BertShape:
        raw = json.loads(path.read_text())
        if raw.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: only the exact (erf) gelu is supported")
        return cls(raw["num_hidden_layers"], raw["num_attention_heads"],
                   raw.get("layer_norm_eps", 1e-12), raw.get("hidden_dropout_prob", 0.0),
                   raw.get("attention_probs_dropout_prob", 0.0))  # fmt: skip


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise SystemExit("needs torch: .venv/bin/pip install torch==2.13.0 (CPU)") from exc
    torch.set_num_threads(THREADS)
    return torch


def _linear(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    import torch.nn.functional as F

    return F.linear(x, w[f"{name}.weight"], w[f"{name}.bias"])


def _norm(x: torch.Tensor, w: Weights, name: str, shape: BertShape) -> torch.Tensor:
    import torch.nn.functional as F

    return F.layer_norm(x, x.shape[-1:], w[f"{name}.weight"], w[f"{name}.bias"], shape.eps)


def _layer(
    x: torch.Tensor, keep: torch.Tensor, w: Weights, i: int, shape: BertShape, train: bool
) -> torch.Tensor:
    """One transformer layer (post-LayerNorm BERT); ``keep``: [batch, 1, 1, tokens] bool."""
    import torch.nn.functional as F

    p = f"encoder.layer.{i}."
    b, n, h = x.shape
    q, k, v = (
        _linear(x, w, f"{p}attention.self.{m}").view(b, n, shape.heads, -1).transpose(1, 2)
        for m in ("query", "key", "value")
    )
    dropout = shape.attention_dropout if train else 0.0
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout)
    attended = _linear(context.transpose(1, 2).reshape(b, n, h), w, f"{p}attention.output.dense")
    x = _norm(F.dropout(attended, shape.hidden_dropout, train) + x, w,
              f"{p}attention.output.LayerNorm", shape)  # fmt: skip
    inner = F.gelu(_linear(x, w, f"{p}intermediate.dense"))
    out = F.dropout(_linear(inner, w, f"{p}output.dense"), shape.hidden_dropout, train)
    return _norm(out + x, w, f"{p}output.LayerNorm", shape)


def encode(
    w: Weights, shape: BertShape, ids: torch.Tensor, mask: torch.Tensor, train: bool = False
) -> torch.Tensor:
    """Unit-length mean-pooled sentence embeddings [batch, hidden] of padded token ids."""
    import torch
    import torch.nn.functional as F

    positions = torch.arange(ids.shape[1])
    x = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][positions]
         + w["embeddings.token_type_embeddings.weight"][0])  # fmt: skip
    x = F.dropout(_norm(x, w, "embeddings.LayerNorm", shape), shape.hidden_dropout, train)
    keep = mask[:, None, None, :].bool()
    for i in range(shape.layers):
        x = _layer(x, keep, w, i, shape, train)
    m = mask[:, :, None].to(x.dtype)
    pooled = (x * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


# -- tokens -----------------------------------------------------------------------------


def tokenize(tokenizer_file: Path, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, cut at MAX_TOKENS (special tokens included), unpadded."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return [e.ids for e in tokenizer.encode_batch(list(texts))]


def padded(rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids padded with 0 ([PAD] in this vocabulary) to the longest row, and the mask."""
    torch = _torch()
    width = max(len(r) for r in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def embed_texts(files: Path, texts: Sequence[str]) -> Array:
    """The torch forward pass of the encoder in ``files`` (model.safetensors, config.json,
    tokenizer.json) on ``texts``: float32 [n, hidden], unit rows (for checking it)."""
    torch = _torch()
    w = {k: torch.from_numpy(v) for k, v in load_tensors(files / "model.safetensors").items()}
    rows = tokenize(files / "tokenizer.json", texts)
    with torch.no_grad():
        vectors = encode(w, BertShape.from_file(files / "config.json"), *padded(rows))
    return vectors.numpy()


# -- fine-tuning ------------------------------------------------------------------------


def _intents() -> tuple[list[str], list[int], int]:
    """home-intents train.jsonl (never heldout.jsonl): texts, label indices, label count."""
    from edge_agent.knowledge.specialists import load_examples

    examples = load_examples(INTENTS / "train.jsonl")
    labels = sorted({e.label for e in examples})
    return [e.text for e in examples], [labels.index(e.label) for e in examples], len(labels)


def _initial_head(w: Weights, shape: BertShape, rows: list[list[int]], y: Any, n: int) -> Any:
    """Class weights [labels, hidden]: each class's mean base embedding (a good start for
    a cosine classifier, so the encoder is not pulled around by a random head)."""
    torch = _torch()
    with torch.no_grad():
        vectors = torch.cat(
            [encode(w, shape, *padded(rows[i : i + 64])) for i in range(0, len(rows), 64)]
        )
    means = torch.stack([vectors[y == c].mean(dim=0) for c in range(n)])
    return torch.nn.functional.normalize(means, dim=-1).clone().requires_grad_(True)


def _schedule(step: int, total: int) -> float:
    """Linear warm-up over the first 10% of the steps, then linear decay to 0."""
    warm = max(1, total // 10)
    return step / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))


def _train(
    w: Weights, shape: BertShape, rows: list[list[int]], y: Any, n_labels: int,
    *, epochs: int, seed: int, progress: Callable[[str], None],
) -> None:  # fmt: skip
    """Fine-tune ``w`` in place (cross-entropy of a cosine classifier, AdamW)."""
    torch = _torch()
    import torch.nn.functional as F

    head = _initial_head(w, shape, rows, y, n_labels)
    params = [t for t in w.values() if t.requires_grad]
    groups = [{"params": params, "lr": LEARNING_RATE}, {"params": [head], "lr": HEAD_RATE}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    total = epochs * -(-len(rows) // BATCH)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _schedule(s, total))
    order = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for epoch in range(epochs):
        losses = []
        for batch in torch.randperm(len(rows), generator=order).split(BATCH):
            vectors = encode(w, shape, *padded([rows[i] for i in batch]), train=True)
            logits = SCALE * vectors @ F.normalize(head, dim=-1).T
            loss = F.cross_entropy(logits, y[batch])
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        elapsed = time.perf_counter() - started
        progress(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f} ({elapsed:.0f} s)")


def fine_tune(
    base: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    progress: Callable[[str], None] = print,
) -> Path:
    """Fine-tune the encoder in ``base`` (model.safetensors, config.json, tokenizer.json)
    on home-intents train.jsonl; write the encoder (no head) and its two companion files
    to ``out_dir``, which is returned. Seeded; deterministic as far as torch allows."""
    torch = _torch()
    torch.manual_seed(seed)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _fine_tune(base, out_dir, seed, epochs, progress)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _fine_tune(
    base: Path, out_dir: Path, seed: int, epochs: int, progress: Callable[[str], None]
) -> Path:
    torch = _torch()
    shape = BertShape.from_file(base / "config.json")
    arrays = load_tensors(base / "model.safetensors")
    trained = {n for n, a in arrays.items() if a.dtype.kind == "f" and not n.startswith("pooler.")}
    w = {n: torch.from_numpy(a).requires_grad_(n in trained) for n, a in arrays.items()}
    texts, labels, n_labels = _intents()
    rows = tokenize(base / "tokenizer.json", texts)
    progress(f"fine-tuning on {len(rows)} examples, {n_labels} labels, {epochs} epochs")
    _train(w, shape, rows, torch.tensor(labels), n_labels, epochs=epochs, seed=seed,
           progress=progress)  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {n: t.detach().numpy().astype(arrays[n].dtype) for n, t in w.items()}
    save_like(base / "model.safetensors", result, out_dir / "model.safetensors")
    for name in COMPANIONS:
        shutil.copyfile(base / name, out_dir / name)
    return out_dir


# -- Ridgeline's side: manifests, the store, the figures ---------------------------------


def register_encoder(manifest_dir: Path, name: str, files: Path) -> None:
    """Write ``<manifest_dir>/<name>.toml``: the encoder in ``files`` as a model with
    ``path`` sources, shaped like all-minilm-l6-v2's manifest (same [build] table)."""
    from ridgeline_core.merge.entry import to_toml
    from ridgeline_core.store import ManifestCatalog
    from ridgeline_core.store.fetch import sha256_file

    files = files.resolve()

    def part(path: Path) -> dict[str, Any]:
        return {"sha256": sha256_file(path), "size": path.stat().st_size,
                "source": {"kind": "path", "path": str(path)}}  # fmt: skip

    table = (
        ManifestCatalog.with_bundled().get(BASE_MODEL).model_dump(mode="json", exclude_none=True)
    )
    model = part(files / "model.safetensors")
    table.update(
        name=name,
        description=f"{BASE_MODEL} fine-tuned on home-intents train.jsonl",
        sha256=model["sha256"], size=model["size"], source=model["source"],
        files=[{"name": c, **part(files / c)} for c in COMPANIONS],
    )  # fmt: skip
    manifest_dir.mkdir(parents=True, exist_ok=True)
    (manifest_dir / f"{name}.toml").write_text(to_toml(table), encoding="utf-8")


@contextlib.contextmanager
def opened_embedder(
    store_dir: Path, model: str, manifest_dirs: Sequence[Path], variant: str | None = None
) -> Iterator[tuple[Embedder, ModelStore]]:
    """Ridgeline's Embedder for ``model`` (pulled and built into ``store_dir`` first), the
    int8 variant unless ``variant`` says otherwise; closed on leaving."""
    from edge_agent.knowledge.embeddings import Embedder
    from edge_agent.settings import EmbeddingSettings
    from ridgeline_core.store import ManifestCatalog, ModelStore
    from ridgeline_core.store.build import build_model

    catalog = ManifestCatalog.with_bundled(manifest_dirs)
    store = ModelStore(store_dir)
    build_model(store, catalog.get(model))
    settings = EmbeddingSettings(model=model, variant=variant, threads=THREADS)  # type: ignore[arg-type]
    embedder = Embedder(settings, catalog, store)
    try:
        yield embedder, store
    finally:
        embedder.close()


def _few_shot(examples: Sequence[Example], shots: int, seed: int) -> list[Example]:
    """``shots`` examples of each label, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    picked: list[Example] = []
    for label in sorted({e.label for e in examples}):
        mine = [e for e in examples if e.label == label]
        picked += [mine[i] for i in rng.permutation(len(mine))[:shots]]
    return picked


def _log_loss(specialist: Specialist, examples: Sequence[Example]) -> float:
    """Mean negative log probability the specialist gives each example's own label."""
    losses = []
    for e in examples:
        probability = dict(specialist.predict(e.text, top=len(specialist.labels)).top)
        losses.append(-np.log(max(probability[e.label], 1e-12)))
    return float(np.mean(losses))


def intent_figures(
    store_dir: Path, model: str, manifest_dirs: Sequence[Path], *, shots: int = 5, draws: int = 3
) -> dict[str, float]:
    """Home-intents specialists on ``model``'s embeddings, trained on train.jsonl and
    scored on heldout.jsonl: ``accuracy`` and ``log_loss`` of the head trained on all of
    train.jsonl, and ``few_shot``: the mean held-out accuracy of heads trained on ``shots``
    examples per label (``draws`` seeded draws; 0 skips it)."""
    from edge_agent.knowledge.specialists import (
        SpecialistRegistry,
        load_examples,
        train_specialist,
    )

    train, heldout = (load_examples(INTENTS / f) for f in ("train.jsonl", "heldout.jsonl"))
    with (
        opened_embedder(store_dir, model, manifest_dirs) as (embedder, store),
        tempfile.TemporaryDirectory() as records,
    ):
        record = train_specialist("intents", train, embedder, store, Path(records),
                                  heldout=heldout)  # fmt: skip
        registry = SpecialistRegistry(Path(records), store, embedder)
        try:
            log_loss = _log_loss(registry.get("intents"), heldout)
        finally:
            registry.close()
        few = [
            train_specialist("few", _few_shot(train, shots, seed), embedder, store,
                             Path(records), heldout=heldout).metrics["heldout"]["accuracy"]
            for seed in range(draws)
        ]  # fmt: skip
    accuracy = float(record.metrics["heldout"]["accuracy"])
    return {"accuracy": accuracy, "log_loss": log_loss,
            "few_shot": float(np.mean(few)) if few else float("nan")}  # fmt: skip


def intent_accuracy(store_dir: Path, model: str, manifest_dirs: list[Path]) -> float:
    """Held-out accuracy of a home-intents specialist trained on ``model``'s embeddings."""
    return intent_figures(store_dir, model, manifest_dirs, draws=0)["accuracy"]


def _knowledge_benchmark() -> Any:
    """benchmarks/knowledge.py as a module (it imports its neighbours by plain name)."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("knowledge")


def retrieval_recall(
    store_dir: Path, model: str, manifest_dirs: list[Path], k: int = 5, *, split: str = "test"
) -> float:
    """Recall@k on the knowledge-v1 questions of ``split`` with ``model``'s embeddings: the share
    of questions with a passage of their source file holding an accepted answer among the
    first k chunks of all collections (as benchmarks/knowledge.py counts it)."""
    from edge_agent.evaluation.dataset import load_dataset
    from edge_agent.knowledge.library import AUTO, Library, retrieve
    from edge_agent.settings import KnowledgeSettings

    bench = _knowledge_benchmark()
    questions = KNOWLEDGE / f"{split}.jsonl"
    items = bench._with_sources(load_dataset(questions), questions)
    with (
        opened_embedder(store_dir, model, manifest_dirs) as (embedder, _),
        tempfile.TemporaryDirectory() as root,
    ):
        library = Library(KnowledgeSettings(), Path(root), embedder)
        try:
            for directory in sorted((KNOWLEDGE / "collections").iterdir()):
                library.add(directory.name, [directory])
            vectors = embedder.embed([item.prompt for item in items])
            found = 0
            for item, vector in zip(items, vectors, strict=True):
                pooled = retrieve(library, vector, [AUTO], experts=16, passages=k,
                                  min_similarity=-1)  # fmt: skip
                found += any(bench.holds_answer(p, item) for p in pooled.passages[:k])
        finally:
            library.close()
    return found / len(items)


# -- smoke run --------------------------------------------------------------------------


def base_files(store: ModelStore, dest: Path, copy_from: Path | None = None) -> Path:
    """The base encoder's three files in ``dest`` under their own names, pulled into
    ``store`` first (from the blobs of the store ``copy_from`` when given: only read)."""
    from ridgeline_core.store import ManifestCatalog

    manifest = ManifestCatalog.with_bundled().get(BASE_MODEL)
    if copy_from is not None:
        for part in manifest.parts():
            if not store.blob_path(part.sha256).is_file():
                store.add_file(copy_from / "blobs" / "sha256" / part.sha256)
    store.pull(manifest)
    dest.mkdir(parents=True, exist_ok=True)
    for label, path in store.open_files(manifest).items():
        shutil.copyfile(path, dest / ("model.safetensors" if label == "model" else label))
    return dest


def check_forward(store_dir: Path, model: str, manifest_dirs: list[Path], files: Path) -> float:
    """The smallest cosine between this file's torch forward pass and Ridgeline's fp32
    ONNX embedding of a few sentences (both should be the same function)."""
    texts = ["turn off the kitchen lights", "How many days of annual leave do I get?",
             "Replace the HEPA filter every twelve months, or sooner in a smoky home."]  # fmt: skip
    with opened_embedder(store_dir, model, manifest_dirs, variant="fp32") as (embedder, _):
        onnx = embedder.embed(texts)
    return float(np.min(np.sum(onnx * embed_texts(files, texts), axis=1)))


def _table(store_dir: Path, manifest_dirs: list[Path]) -> None:
    """The base and the fine-tune side by side (intent figures: see intent_figures)."""
    columns = ["intent held-out accuracy", "held-out log loss", "5-shot head, held-out",
               "recall@5 (test)", "recall@5 (train questions)"]  # fmt: skip
    print("\n| model | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name in (BASE_MODEL, FINE_TUNED):
        intents = intent_figures(store_dir, name, manifest_dirs)
        recall = [retrieval_recall(store_dir, name, manifest_dirs, split=s)
                  for s in ("test", "train")]  # fmt: skip
        cells = [intents["accuracy"], intents["log_loss"], intents["few_shot"], *recall]
        print(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="model store (default: fresh, under --work)")
    parser.add_argument("--work", type=Path, help="files and manifests (default: fresh in /tmp)")
    parser.add_argument("--base-blobs", type=Path, help="a store to copy the base's files from")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    from ridgeline_core.store import ModelStore

    work = args.work or Path(tempfile.mkdtemp(prefix="merging-encoder-"))
    store_dir, manifests = args.store or work / "store", work / "manifests"
    base = base_files(ModelStore(store_dir), work / "base", args.base_blobs)
    started = time.perf_counter()
    tuned = fine_tune(base, work / "fine-tuned", seed=args.seed, epochs=args.epochs)
    seconds = time.perf_counter() - started
    register_encoder(manifests, FINE_TUNED, tuned)
    for name, files in ((BASE_MODEL, base), (FINE_TUNED, tuned)):
        cosine = check_forward(store_dir, name, [manifests], files)
        print(f"{name}: torch vs ONNX fp32, smallest cosine {cosine:.6f}")
    _table(store_dir, [manifests])
    print(f"\nfine-tune: {seconds:.0f} s wall ({args.epochs} epochs, seed {args.seed}, "
          f"{THREADS} threads); work dir {work}")  # fmt: skip
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
