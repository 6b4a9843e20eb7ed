"""The ``[ray]`` table of ``broker.toml``: how the broker runs as a Ray Serve application
(``cloud-broker serve --ray ADDRESS``, or ``serve deploy`` of a config that names
:func:`cloud_broker.on_ray.app.build`).

Each served model becomes a deployment with a fixed number of replicas, or with
autoscaling between ``min_replicas`` and ``max_replicas`` (``[ray.models.NAME]``); the
gRPC front (TLS, device tokens, rate limits, health, metrics) runs as ``fronts``
replicas of its own deployment, at most one per node unless ``fronts_per_node`` says
otherwise. None of this is read by the single-process broker.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from ridgeline_core.config import Section

__all__ = ["ModelReplicaSettings", "RaySettings"]


class ModelReplicaSettings(Section):
    """One served model's deployment: its replicas and what each replica reserves."""

    replicas: int = Field(default=1, ge=1, description="replicas when not autoscaling")
    min_replicas: int | None = Field(
        default=None, ge=1, description="autoscaling: fewest replicas (with max_replicas)"
    )
    max_replicas: int | None = Field(
        default=None, ge=1, description="autoscaling: most replicas (with min_replicas)"
    )
    target_ongoing_requests: float = Field(
        default=1.0, gt=0, description="autoscaling: requests per replica it aims for"
    )
    upscale_delay_s: float = Field(
        default=10.0, ge=0, description="autoscaling: load above target this long adds replicas"
    )
    downscale_delay_s: float = Field(
        default=120.0, ge=0, description="autoscaling: load below target this long removes some"
    )
    metrics_interval_s: float = Field(
        default=10.0, gt=0, description="autoscaling: how often replicas and fronts report load"
    )
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each replica reserves")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs each replica reserves")

    @model_validator(mode="after")
    def _check(self) -> ModelReplicaSettings:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both min_replicas and max_replicas")
        if self.min_replicas is not None and self.max_replicas is not None:
            if self.min_replicas > self.max_replicas:
                raise ValueError("min_replicas is above max_replicas")
            if self.replicas != 1:
                raise ValueError("give either replicas or min_replicas/max_replicas, not both")
        return self

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None

    @property
    def most_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else self.replicas


class RaySettings(Section):
    app_name: str = Field(default="ridgeline-broker", description="the Serve application's name")
    namespace: str = Field(
        default="ridgeline", description="Ray namespace of the shared-limits actor"
    )
    fronts: int = Field(default=1, ge=1, description="replicas of the gRPC front")
    fronts_per_node: int = Field(
        default=1,
        ge=1,
        description=(
            "fronts one node may run; above 1 they share server.listen's port "
            "(SO_REUSEPORT), so give metrics.listen port 0"
        ),
    )
    front_num_cpus: float = Field(default=0.5, ge=0, description="CPUs each front reserves")
    limits_refresh_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often a front fetches the device tokens (revocations reach it then)",
    )
    lease_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "how long a front may spend request credits it took from the shared limit "
            "(a device calling less often than this waits for the keeper each time)"
        ),
    )
    stream_interval_s: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "a replica sends the first piece of an answer at once and the rest at most "
            "this often, what the model made in between together"
        ),
    )
    models: dict[str, ModelReplicaSettings] = Field(
        default_factory=dict, description="per served model: replicas or autoscaling"
    )

    def model(self, name: str) -> ModelReplicaSettings:
        return self.models.get(name) or ModelReplicaSettings()
