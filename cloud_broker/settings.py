"""Broker settings, parsed once at the entry point (same layering as the edge agent).

Sources, lowest precedence first: defaults, the TOML file (``--config FILE``,
``$RIDGELINE_BROKER_CONFIG`` or ``<user config dir>/broker.toml``), environment
variables ``RIDGELINE_BROKER_<SECTION>__<KEY>``, command-line flags.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from ridgeline_core.config import Section, settings_loader
from ridgeline_core.store import ModelsSettings

__all__ = ["ENV_PREFIX", "BrokerSettings", "load_broker_settings"]

ENV_PREFIX = "RIDGELINE_BROKER_"


class ServerSettings(Section):
    listen: str = Field(default="127.0.0.1:50051", description="gRPC address HOST:PORT")


class BrokerModelsSettings(ModelsSettings):
    pull_command: ClassVar[str] = "cloud-broker models pull"
    default: str = Field(default="gemma3-270m", description="model used when none is named")


class BrokerSettings(Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: BrokerModelsSettings = Field(default_factory=BrokerModelsSettings)


load_broker_settings = settings_loader(
    BrokerSettings, env_prefix=ENV_PREFIX, file_name="broker.toml"
)
