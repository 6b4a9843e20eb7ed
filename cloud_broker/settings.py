"""Broker settings, parsed once at the entry point (same layering as the edge agent).

Sources, lowest precedence first: defaults, the TOML file (``--config FILE``,
``$RIDGELINE_BROKER_CONFIG`` or ``<user config dir>/broker.toml``), environment
variables ``RIDGELINE_BROKER_<SECTION>__<KEY>``, command-line flags. The README's
"Broker configuration" section documents every key.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator

from ridgeline_core import transport
from ridgeline_core.config import Section, settings_loader
from ridgeline_core.errors import ConfigError, ManifestError
from ridgeline_core.store import ModelsSettings
from ridgeline_core.store.manifest import check_name
from ridgeline_core.transport import is_loopback, split_host_port

from .ray_settings import RaySettings
from .strategy_settings import PriceSettings, StrategySettings, check_strategies

__all__ = [
    "ENV_PREFIX",
    "AuthSettings",
    "BrokerSettings",
    "DiscoverySettings",
    "LimitsSettings",
    "LlamaCppSettings",
    "MetricsSettings",
    "OpenAIBackendSettings",
    "ServerSettings",
    "TlsSettings",
    "is_loopback",
    "load_broker_settings",
    "split_host_port",
]

ENV_PREFIX = "RIDGELINE_BROKER_"


class ServerSettings(Section):
    listen: str = Field(default="127.0.0.1:50051", description="gRPC address HOST:PORT")
    allow_plaintext: bool = Field(
        default=False,
        description="serve without TLS; refused unless listen is a loopback address",
    )
    reflection: bool = Field(
        default=False,
        description="serve gRPC server reflection (v1 and v1alpha; --dev turns it on)",
    )
    grace_s: float = Field(
        default=10.0, ge=0, description="on SIGTERM, how long running streams may finish"
    )
    max_message_bytes: int = Field(
        default=transport.MAX_MESSAGE_BYTES,
        ge=64 * 1024,
        description="largest gRPC message accepted or sent",
    )
    keepalive_s: float = Field(
        default=transport.SERVER_KEEPALIVE_S, gt=0, description="ping idle clients this often"
    )
    keepalive_timeout_s: float = Field(
        default=transport.KEEPALIVE_TIMEOUT_S, gt=0, description="drop a client that misses a ping"
    )
    min_ping_interval_s: float = Field(
        default=transport.SERVER_MIN_PING_INTERVAL_S,
        gt=0,
        description="shortest client keepalive interval accepted (clients use 30 s)",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        split_host_port(value)
        return value


class TlsSettings(Section):
    cert_file: Path | None = Field(default=None, description="server certificate chain (PEM)")
    key_file: Path | None = Field(default=None, description="server private key (PEM)")
    client_ca_file: Path | None = Field(
        default=None, description="CA bundle for client certificates: turns on mutual TLS"
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be set together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("tls.client_ca_file (mutual TLS) needs tls.cert_file and key_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


def _default_tokens_file() -> Path:
    return Path(platformdirs.user_config_dir("ridgeline")) / "broker-tokens.json"


class AuthSettings(Section):
    enabled: bool = Field(default=True, description="require a device token on every call")
    tokens_file: Path = Field(
        default_factory=_default_tokens_file,
        description="hashed device tokens (cloud-broker tokens add|list|revoke)",
    )

    @field_validator("tokens_file")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()


class LimitsSettings(Section):
    max_messages: int = Field(default=64, ge=1, description="chat messages per request")
    max_prompt_chars: int = Field(
        default=32_000, ge=1, description="characters in all messages of a request together"
    )
    max_tokens: int = Field(
        default=1024, ge=1, description="completion tokens per request (larger asks are clamped)"
    )
    default_max_tokens: int = Field(
        default=256, ge=1, description="completion tokens when a request does not say"
    )
    requests_per_minute: int = Field(default=120, ge=0, description="per device; 0: unlimited")
    tokens_per_minute: int = Field(
        default=60_000, ge=0, description="prompt + completion tokens per device; 0: unlimited"
    )
    write_stall_s: float = Field(
        default=30.0,
        gt=0,
        description=(
            "how long a stream may wait for its client to read; then its generation is "
            "stopped, its slot freed and the call ends DEADLINE_EXCEEDED"
        ),
    )


class MetricsSettings(Section):
    listen: str = Field(
        default="127.0.0.1:9464",
        description="Prometheus /metrics HOST:PORT; empty turns the endpoint off",
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value:
            split_host_port(value)
        return value


class DiscoverySettings(Section):
    enabled: bool = Field(default=False, description="advertise _ridgeline._tcp over mDNS")
    instance: str = Field(default="", description="advertised name; empty: ridgeline-<host>")


class LlamaCppSettings(Section):
    """How models from the store (``models.serve``) run in the broker process."""

    slots: int = Field(default=1, ge=1, le=64, description="parallel generations per model")
    queue: int = Field(default=8, ge=0, description="requests waiting per model beyond slots")
    threads: int = Field(
        default=0, ge=0, description="CPU threads per slot; 0: the physical cores / slots"
    )
    n_ctx: int = Field(default=2048, ge=256, description="context length of each slot")
    n_batch: int | None = Field(
        default=None,
        ge=1,
        description="prompt tokens per decode batch (default: 64 on the CPU, 512 with GPU layers)",
    )
    n_gpu_layers: int = Field(default=0, ge=-1, description="layers on the GPU; -1: all")


class OpenAIBackendSettings(Section):
    """One model served by an OpenAI-compatible HTTP server (``[[openai]]`` tables)."""

    name: str = Field(description="model name clients ask the broker for")
    base_url: str = Field(description="API root, e.g. https://api.openai.com/v1")
    model: str = Field(default="", description="model name upstream; empty: same as name")
    api_key: SecretStr = Field(
        default=SecretStr(""), description="API key (never printed); prefer api_key_env"
    )
    api_key_env: str = Field(default="", description="environment variable holding the API key")
    timeout_s: float = Field(default=120.0, gt=0, description="whole request, upstream")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP + TLS connect")
    max_connections: int = Field(default=128, ge=1, description="pooled HTTP connections")
    slots: int = Field(default=64, ge=1, description="requests in flight upstream")
    queue: int = Field(default=256, ge=0, description="requests waiting beyond slots")
    context_length: int = Field(default=0, ge=0, description="advertised in ListModels")
    choices: Literal["json_schema", "grammar", "off"] = Field(
        default="json_schema",
        description=(
            "how an answer limited to choices is asked for upstream: json_schema "
            "(response_format with an enum; OpenAI, vLLM, llama-server, Ollama), grammar "
            "(a GBNF `grammar` field; llama-server, llama-cpp-python's server), or off "
            "(the upstream cannot: such requests are refused UNIMPLEMENTED)"
        ),
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        try:
            return check_name(value)
        except ManifestError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return value.rstrip("/")


class BrokerModelsSettings(ModelsSettings):
    pull_command: ClassVar[str] = "cloud-broker models pull"
    default: str = Field(default="gemma3-270m", description="model used when none is named")
    serve: list[str] = Field(
        default_factory=lambda: ["gemma3-270m", "smollm2-135m-instruct"],
        description="models from the store served with llama.cpp",
    )


class BrokerSettings(Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    tls: TlsSettings = Field(default_factory=TlsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    models: BrokerModelsSettings = Field(default_factory=BrokerModelsSettings)
    llama_cpp: LlamaCppSettings = Field(default_factory=LlamaCppSettings)
    openai: list[OpenAIBackendSettings] = Field(
        default_factory=list, description="models behind OpenAI-compatible servers"
    )
    prices: dict[str, PriceSettings] = Field(
        default_factory=dict, description="per model: price per 1000 prompt/completion tokens"
    )
    strategies: list[StrategySettings] = Field(
        default_factory=list, description="named strategies over the served models"
    )
    ray: RaySettings = Field(
        default_factory=RaySettings, description="cloud-broker serve --ray: replicas and fronts"
    )

    @model_validator(mode="after")
    def _check(self) -> BrokerSettings:
        names = [*self.models.serve, *(backend.name for backend in self.openai)]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"model {name!r} is served twice")
            seen.add(name)
        if names and self.models.default not in seen:
            raise ValueError(
                f"models.default {self.models.default!r} is not served (served: {', '.join(names)})"
            )
        if self.limits.default_max_tokens > self.limits.max_tokens:
            raise ValueError("limits.default_max_tokens is above limits.max_tokens")
        check_strategies(self.strategies, self.prices, seen)
        for name in self.ray.models:
            if name not in seen:
                raise ValueError(f"ray.models.{name}: {name!r} is not served")
        return self

    def check_transport(self) -> None:
        """Refuse plaintext or no auth off loopback, and a server with neither TLS nor
        plaintext allowed."""
        host, _ = split_host_port(self.server.listen)
        if not self.auth.enabled and not is_loopback(host):
            raise ConfigError(
                f"auth.enabled = false on {self.server.listen}: a broker without device "
                "tokens is only served on a loopback address"
            )
        if self.tls.enabled:
            return
        if not self.server.allow_plaintext:
            raise ConfigError(
                "no TLS configured: set tls.cert_file and tls.key_file, or "
                "server.allow_plaintext = true to serve plaintext on a loopback address"
            )
        if not is_loopback(host):
            raise ConfigError(
                f"server.listen {self.server.listen!r}: plaintext is only served on a "
                "loopback address (127.0.0.1, ::1); configure TLS to listen on a network"
            )


load_broker_settings = settings_loader(
    BrokerSettings, env_prefix=ENV_PREFIX, file_name="broker.toml"
)
