"""The configuration of ``memctl serve``: flags, then the environment (``MEMORY_SERVICE_*``),
then a TOML file, then the defaults (the checklist's ports).

String values in the file may name environment variables, ``${VAR}`` or
``${VAR:default}``, so one file serves every host of a deployment; a variable that is
unset and has no default is an error naming it, not an empty string.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from memory import InvalidInputError

_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")

EmbedderName = Literal["minilm", "hashing", "none"]


def interpolate(value: Any, environ: dict[str, str] | None = None) -> Any:
    """``value`` with every ``${VAR}`` / ``${VAR:default}`` in its strings replaced."""
    variables = os.environ if environ is None else environ
    if isinstance(value, dict):
        return {key: interpolate(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, environ) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        if default is None:
            raise InvalidInputError(
                f"configuration: ${{{name}}} is not set in the environment and has no default "
                f"(write ${{{name}:default}})"
            )
        return default

    return _VARIABLE.sub(substitute, value)


class _TomlFile(PydanticBaseSettingsSource):
    """The ``[service]`` table of a TOML file, interpolated."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything comes from __call__

    def __call__(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            document = tomllib.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeError, tomllib.TOMLDecodeError) as error:
            raise InvalidInputError(f"configuration: cannot read {self.path}: {error}") from None
        table = document.get("service", {})
        if not isinstance(table, dict):
            raise InvalidInputError(f"configuration: {self.path}: [service] must be a table")
        return dict(interpolate(table))


class ServiceSettings(BaseSettings):
    """Everything ``memctl serve`` can be told."""

    model_config = SettingsConfigDict(env_prefix="MEMORY_SERVICE_", extra="forbid")

    database_url: str | None = Field(None, description="default: $MEMORY_DATABASE_URL")
    host: str = Field("127.0.0.1", description="the address to listen on")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP, /metrics included")
    grpc_port: int = Field(5714, ge=0, le=65535, description="gRPC (0: any free port)")
    # TLS for the gRPC port: a PEM certificate (chain) and its private key, both or neither.
    grpc_tls_certificate: Path | None = Field(None, description="PEM certificate for gRPC")
    grpc_tls_key: Path | None = Field(None, description="PEM private key for gRPC")
    # ZeroMQ ROUTER for the checklist's legacy agents (its port: 5713); None: not served.
    zmq_port: int | None = Field(None, ge=1, le=65535, description="ZeroMQ ROUTER port")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger bodies get 413")
    embedder: EmbedderName = "minilm"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # How long SIGTERM waits for requests under way before closing their connections.
    drain_seconds: int = Field(10, ge=0, le=300)
    # Bulkheads: how many calls of each operation class run at once, how many may wait
    # for a turn, and how long; beyond that the answer is 503 with Retry-After.
    concurrent_reads: int = Field(32, ge=1, le=1024)
    concurrent_writes: int = Field(16, ge=1, le=1024)
    concurrent_searches: int = Field(8, ge=1, le=1024)
    queue_limit: int = Field(64, ge=0, le=100_000)
    queue_seconds: float = Field(5.0, gt=0, le=300)
    # Every request's deadline; a client may ask for less (X-Request-Timeout). Past it the
    # answer is 504 and nothing of the request is written.
    request_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    # Circuit breakers (memory.service.breakers): open after this many failures in a row,
    # try again after this many seconds.
    breaker_failures: int = Field(5, ge=1, le=1000)
    breaker_reset_seconds: float = Field(30.0, gt=0, le=3600)
    # Flags from an Unleash server (its client API, e.g. http://unleash:4242/api) instead
    # of the store's own flag tables; the token goes in its Authorization header.
    unleash_url: str | None = Field(None, pattern=r"^https?://")
    unleash_token: str | None = None

    # Hub-spoke sync (memory.sync): the MEMSHADOW v2 gateway; None: not served.
    sync_port: int | None = Field(None, ge=0, le=65535, description="sync gateway TCP port")
    # The cluster's credential: a node's token is HMAC-SHA256(secret, node id)
    # (memory.sync.node_token); required with sync_port.
    sync_secret: str | None = Field(None, min_length=32, description="sync cluster secret")
    sync_tls_certificate: Path | None = Field(None, description="PEM certificate for sync")
    sync_tls_key: Path | None = Field(None, description="PEM key of sync_tls_certificate")
    sync_max_frame_bytes: int = Field(16 * 1024 * 1024, ge=4096, le=1 << 30)
    # Batches per second a node may send before the hub holds its reads (CRITICAL and
    # EMERGENCY are never held).
    sync_rate_limit: float = Field(200.0, gt=0, le=100_000)
    # How long LOW batches wait to be merged into one before they are relayed.
    sync_low_seconds: float = Field(1.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceSettings:
        if (self.grpc_tls_certificate is None) != (self.grpc_tls_key is None):
            raise ValueError("grpc_tls_certificate and grpc_tls_key go together")
        if self.sync_port is not None and self.sync_secret is None:
            raise ValueError("sync_port is set but sync_secret is not (32+ characters)")
        if (self.sync_tls_certificate is None) != (self.sync_tls_key is None):
            raise ValueError("sync_tls_certificate and sync_tls_key go together")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = getattr(init_settings, "init_kwargs", {}).pop("config_file", None)
        assert isinstance(init_settings, InitSettingsSource)
        return init_settings, env_settings, _TomlFile(settings_cls, path)


def load_settings(config_file: Path | None = None, **given: Any) -> ServiceSettings:
    """The settings from ``given`` (flags; None means not given), the environment and
    ``config_file``."""
    chosen = {key: value for key, value in given.items() if value is not None}
    try:
        return ServiceSettings(config_file=config_file, **chosen)  # type: ignore[call-arg]
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise InvalidInputError(f"configuration: {problems}") from None
