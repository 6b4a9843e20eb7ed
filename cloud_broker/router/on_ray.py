"""The router's prompt embeddings on Ray Data (issue 21): ``cloud-broker router train --ray``
spreads the encoder's work over an actor pool.

The router file is the serial run's, by construction. A prompt's vector depends on the
batch it is embedded in (the batch's padding, and the int8 build's quantization ranges over
the batch), so the work is cut into exactly the batches the serial run embeds: for each list
of prompts training embeds (:func:`~.train.prompt_lists`), the encoder's own plan
(:meth:`OnnxEncoder.batches`, the one ``embed`` follows). A batch that recurs (the same
prompts in the same order, as when every model was judged on the same prompts) is embedded
once. Each actor opens the encoder from its store once, checks that its ONNX file is the one
this machine's encoder loaded (the digest the router file records), and runs it with this
machine's ONNX Runtime thread count; the vectors come back to the driver pickled and are put
together as ``embed`` puts them together. ``address`` is Ray's: ``local`` starts a Ray for
this run (stopped after it), ``auto`` joins the cluster this machine belongs to,
``ray://host:10001`` a remote one; a Ray already initialised in this process is used as is.
Importing this module imports no Ray.
"""

from __future__ import annotations

import pickle
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ridgeline_core.errors import ConfigError, RidgelineError
from ridgeline_core.on_ray import RayPool, joined_ray, on_actors
from ridgeline_core.progress import NULL_PROGRESS, Progress
from ridgeline_core.runtime.onnx_text import Vectors
from ridgeline_core.store import ModelsSettings

if TYPE_CHECKING:
    from ridgeline_core.runtime.onnx import OnnxEncoder

__all__ = ["EmbeddedPrompts", "RayEmbedding", "embed_on_ray"]

Batch = tuple[str, ...]


RayEmbedding = RayPool  # where the prompts are embedded


@dataclass(frozen=True)
class _Job:
    """What every actor needs, sent to each once."""

    models: ModelsSettings
    encoder: str
    sha256: str  # of the ONNX file this machine's encoder loaded
    threads: int  # ONNX Runtime's intra-op threads, as in the serial run
    batches: tuple[Batch, ...]


class _Embedder:
    """A Ray Data actor: the encoder opened once, then batches embedded, each on its own.
    An encoder it cannot open (not built on its node, another file) is told to the driver
    with each batch it is given, rather than as the death of an actor."""

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.encoder: OnnxEncoder | None = None
        self.error: RidgelineError | None = None
        try:
            self.encoder = _open_checked(job)
        except RidgelineError as exc:
            self.error = type(exc)(f"on the Ray node {socket.gethostname()}: {exc}")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        vectors = []
        for index in batch["index"]:
            texts = list(self.job.batches[int(index)])
            vectors.append(pickle.dumps(self.error or self._embed(int(index), texts)))
        return {"index": list(batch["index"]), "vectors": vectors}

    def _embed(self, index: int, texts: list[str]) -> Vectors:
        assert self.encoder is not None
        if self.encoder.batches(texts) != [list(range(len(texts)))]:  # never, by the plan
            raise RuntimeError(f"batch {index} would not be embedded as planned")
        vectors: Vectors = self.encoder.embed(texts)
        return vectors


def _open_checked(job: _Job) -> OnnxEncoder:
    """The job's encoder from this node's store, with the driver's ONNX file and threads."""
    from ridgeline_core.store.encoders import encoder_sha256, open_encoder

    manifest = job.models.catalog().get(job.encoder)
    store = job.models.store()
    build = "cloud-broker models build"
    encoder = open_encoder(manifest, store, threads=job.threads, build_command=build)
    found = encoder_sha256(manifest, store, None)
    if found != job.sha256:
        encoder.close()
        raise ConfigError(
            f"its {job.encoder} ONNX file has sha256 {found[:12]}..., not the "
            f"{job.sha256[:12]}... of the driver's (build the same file on every node)"
        )
    return encoder


class EmbeddedPrompts:
    """The encoder, for :class:`~.features.Featurizer`, once the planned prompt lists are
    embedded: ``embed`` of such a list puts its batches' vectors together as the encoder's
    ``embed`` does; any other list is a programming error."""

    def __init__(
        self, plans: dict[Batch, list[list[int]]], vectors: dict[Batch, Vectors], dim: int
    ) -> None:
        self.plans, self.vectors, self.dim = plans, vectors, dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        plan = self.plans.get(tuple(texts))
        if plan is None:
            raise RuntimeError(f"{len(texts)} prompts were embedded on Ray but not planned")
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        for rows in plan:
            result[rows] = self.vectors[tuple(texts[i] for i in rows)]
        return result

    def close(self) -> None:
        pass


def plan_batches(encoder: Any, lists: Sequence[Sequence[str]]) -> dict[Batch, list[list[int]]]:
    """Each distinct prompt list's batches, as ``encoder.embed`` would run them."""
    return {tuple(texts): encoder.batches(list(texts)) for texts in lists}


def distinct_batches(plans: dict[Batch, list[list[int]]]) -> list[Batch]:
    """The batches to embed, each once, in a fixed order."""
    found: dict[Batch, None] = {}
    for texts, plan in plans.items():
        for rows in plan:
            found.setdefault(tuple(texts[i] for i in rows))
    return list(found)


def embed_on_ray(
    where: RayEmbedding,
    models: ModelsSettings,
    lists: Sequence[Sequence[str]],
    *,
    encoder: tuple[str, Any, str],
    progress: Progress = NULL_PROGRESS,
) -> EmbeddedPrompts:
    """``lists`` embedded on ``where.actors`` actors, batch for batch as ``encoder`` would
    embed them: ``encoder`` is the store's embedding model opened here, as (its name, the
    encoder, the sha256 of its ONNX file)."""
    name, opened, sha256 = encoder
    with joined_ray(where.address) as ray:
        plans = plan_batches(opened, lists)
        batches = distinct_batches(plans)
        job = _Job(models, name, sha256, int(opened.threads), tuple(batches))
        found = _run(ray, where, job, progress)
    vectors = {batches[index]: found[index] for index in range(len(batches))}
    return EmbeddedPrompts(plans, vectors, int(opened.dim))


def _run(ray: Any, where: RayEmbedding, job: _Job, progress: Progress) -> dict[int, Vectors]:
    embedded = on_actors(ray, len(job.batches), _Embedder, (job,), where.actors)
    prompts = sum(len(batch) for batch in job.batches)
    found: dict[int, Vectors] = {}
    what = f"{len(job.batches)} batches ({prompts} prompts)"
    progress.start(f"embedding {what} on {where.actors} Ray actors", len(job.batches))
    try:
        for row in embedded.iter_rows():
            vectors = pickle.loads(row["vectors"])
            if isinstance(vectors, RidgelineError):
                raise vectors
            found[int(row["index"])] = vectors
            progress.advance(1)
    finally:
        progress.finish()
    return found
