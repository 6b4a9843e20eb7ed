"""Broker settings, parsed once at the entry point (same layering as the edge agent).

Sources, lowest precedence first: defaults, the TOML file (``--config FILE``,
``$RIDGELINE_BROKER_CONFIG`` or ``<user config dir>/broker.toml``), environment
variables ``RIDGELINE_BROKER_<SECTION>__<KEY>``, command-line flags.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from ridgeline_core.config import LoadedSettings, load_settings
from ridgeline_core.store import ModelsSettings

__all__ = ["ENV_PREFIX", "BrokerSettings", "load_broker_settings"]

ENV_PREFIX = "RIDGELINE_BROKER_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    listen: str = Field(default="127.0.0.1:50051", description="gRPC address HOST:PORT")


class BrokerModelsSettings(ModelsSettings):
    default: str = Field(default="gemma3-270m", description="model used when none is named")


class BrokerSettings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: BrokerModelsSettings = Field(default_factory=BrokerModelsSettings)


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir("ridgeline")) / "broker.toml"


def load_broker_settings(
    *,
    config_file: Path | None,
    env: Mapping[str, str],
    overrides: Mapping[str, tuple[Any, str]] | None = None,
) -> LoadedSettings[BrokerSettings]:
    return load_settings(
        BrokerSettings,
        config_file=config_file,
        env=env,
        env_prefix=ENV_PREFIX,
        overrides=overrides,
        default_config_file=default_config_file(),
    )
