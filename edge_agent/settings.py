"""Edge agent settings: one typed tree, parsed once at the entry point.

Sources, lowest precedence first: defaults, the TOML file
(``--config FILE``, ``$RIDGELINE_EDGE_CONFIG`` or ``<user config dir>/edge.toml``),
environment variables ``RIDGELINE_EDGE_<SECTION>__<KEY>``, command-line flags.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from ridgeline_core.config import Section, settings_loader
from ridgeline_core.runtime import LoadOptions, SamplingParams
from ridgeline_core.store import ModelsSettings

from .confidence import scorer_names

__all__ = ["ENV_PREFIX", "EdgeSettings", "load_edge_settings"]

ENV_PREFIX = "RIDGELINE_EDGE_"


class RuntimeSettings(Section):
    threads: int | None = Field(
        default=None, ge=1, description="decode threads (default: physical cores)"
    )
    threads_batch: int | None = Field(default=None, ge=1, description="prompt threads")
    n_ctx: int = Field(
        default=2048, ge=256, le=1 << 20, description="context length in tokens (llama.cpp: ≥ 256)"
    )
    n_batch: int = Field(default=512, ge=1, description="prompt tokens per forward pass")
    n_gpu_layers: int = Field(
        default=0, ge=-1, description="layers offloaded to a GPU (-1: all; CUDA/Metal builds)"
    )

    def load_options(self) -> LoadOptions:
        return LoadOptions(
            n_ctx=self.n_ctx,
            n_threads=self.threads,
            n_threads_batch=self.threads_batch,
            n_batch=self.n_batch,
            n_gpu_layers=self.n_gpu_layers,
        )


class GenerationSettings(Section):
    max_tokens: int = Field(default=256, ge=1, le=32768, description="answer length limit")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0, description="0 is greedy")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0, description="0 disables top-k")
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1, description="fixed sampling seed")
    stop: list[str] = Field(default_factory=list, description="extra stop sequences")
    system_prompt: str | None = Field(
        default=None, description="system message (default: the model manifest's)"
    )

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=tuple(self.stop),
        )


class ConfidenceSettings(Section):
    scorer: str = Field(default="margin", description="how token signals become one score")

    @field_validator("scorer")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in scorer_names():
            raise ValueError(f"unknown scorer {value!r} (known: {', '.join(scorer_names())})")
        return value


class EdgeSettings(Section):
    models: ModelsSettings = Field(default_factory=ModelsSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    confidence: ConfidenceSettings = Field(default_factory=ConfidenceSettings)


load_edge_settings = settings_loader(EdgeSettings, env_prefix=ENV_PREFIX, file_name="edge.toml")
