"""The broker as a Ray Serve application: one deployment per served model, and the
gRPC front deployment that holds their handles.

``cloud-broker serve --ray ADDRESS`` builds it from the loaded settings
(:func:`broker_app`); a Serve config file for ``serve deploy`` names :func:`build`
with the path of ``broker.toml`` (packaging/ray/serve-config.yaml).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ..server import served_names
from ..settings import BrokerSettings, load_broker_settings
from .front import BrokerFront
from .replica import ModelReplica, slots_of

__all__ = ["FRONT", "broker_app", "build", "deployment_name", "model_options"]

FRONT = "front"
# Serve writes an access-log line per request in every replica it passes: the front's own
# metrics count the calls (and its log says what failed).
QUIET = {"enable_access_log": False}


def deployment_name(model: str) -> str:
    return f"model-{model}"


def model_options(settings: BrokerSettings, name: str) -> dict[str, Any]:
    """The Serve options of a served model's deployment."""
    replica = settings.ray.model(name)
    slots, _ = slots_of(settings, name)  # the queue is the front's (RemoteBackend)
    options: dict[str, Any] = {
        "name": deployment_name(name),
        "max_ongoing_requests": slots,
        "ray_actor_options": {"num_cpus": replica.num_cpus, "num_gpus": replica.num_gpus},
        "graceful_shutdown_timeout_s": settings.server.grace_s,
        "logging_config": QUIET,
    }
    if replica.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": replica.min_replicas,
            "initial_replicas": replica.min_replicas,
            "max_replicas": replica.max_replicas,
            "target_ongoing_requests": replica.target_ongoing_requests,
            "upscale_delay_s": replica.upscale_delay_s,
            "downscale_delay_s": replica.downscale_delay_s,
            # the load averaged over the upscale delay, and over more than one report
            # (Serve wants the window longer than the metrics interval)
            "look_back_period_s": max(replica.upscale_delay_s, 2 * replica.metrics_interval_s),
            "metrics_interval_s": replica.metrics_interval_s,
        }
    else:
        options["num_replicas"] = replica.replicas
    return options


def broker_app(settings: BrokerSettings) -> Any:
    """The bound application: the front, bound to a handle of each model's deployment."""
    from ray import serve

    settings.check_transport()
    deployment: Any = serve.deployment  # typed for decorator use only
    models = deployment(ModelReplica)
    with warnings.catch_warnings():
        # Serve 2.60 deprecates metrics_interval_s for environment variables it does
        # not read yet: the field is still what sets how fast autoscaling sees load
        warnings.filterwarnings("ignore", "The `metrics_interval_s`", DeprecationWarning)
        handles = {
            name: models.options(**model_options(settings, name)).bind(settings, name)
            for name in served_names(settings)
        }
    front = deployment(BrokerFront).options(
        name=FRONT,
        num_replicas=settings.ray.fronts,
        max_replicas_per_node=settings.ray.fronts_per_node,
        ray_actor_options={"num_cpus": settings.ray.front_num_cpus},
        graceful_shutdown_timeout_s=settings.server.grace_s + 5,
        logging_config=QUIET,
    )
    return front.bind(settings, handles)


def build(args: dict[str, Any]) -> Any:
    """The application builder ``serve deploy`` calls: ``args`` has ``config``, the
    path of broker.toml on the cluster (environment variables apply as usual)."""
    config = args.get("config")
    loaded = load_broker_settings(
        config_file=None if config is None else Path(config), env=os.environ
    )
    return broker_app(loaded.settings)
