"""Settings: read once from ``NATSQ_*`` environment variables, typed and validated.

Every setting can also be given as ``NATSQ_<NAME>_FILE``, the path of a file
holding the value, so Kubernetes Secrets and Vault Agent files work unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

ENV_PREFIX = "NATSQ_"


class _FileValues(PydanticBaseSettingsSource):
    """``NATSQ_<NAME>_FILE`` variables: the value is the file's content."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        import os

        path = os.environ.get(f"{ENV_PREFIX}{field_name.upper()}_FILE")
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as e:
            raise ValueError(f"{ENV_PREFIX}{field_name.upper()}_FILE: cannot read {path}: {e.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    # hide_input_in_errors: a validation error would otherwise print every setting's value,
    # passwords and URLs with credentials included.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True, hide_input_in_errors=True)

    env: Literal["development", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # NATS JetStream
    nats_url: str = "nats://127.0.0.1:4222"
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_token: SecretStr | None = None
    nats_creds_file: str | None = None
    nats_tls_ca_file: str | None = None
    nats_tls_cert_file: str | None = None
    nats_tls_key_file: str | None = None
    #: Whether this process creates the streams and consumers. False for the gateway and workers
    #: under least privilege: `python -m natsq.bootstrap`, as the NATS admin user, declares them.
    nats_declare: bool = True
    #: The NATS user of the admin API and the console (/admin, /ui) alone: the dead-letter operations
    #: need rights the gateway's user lacks (role `console` in k8s/base/nats/natsq-users.conf).
    #: None: they use the gateway's connection.
    console_nats_user: str | None = None
    console_nats_password: SecretStr | None = None
    namespace: str = Field("natsq", pattern=r"^[A-Za-z0-9_-]+$")
    stream_replicas: int = Field(1, ge=1, le=5)
    ack_wait_ms: int = Field(30_000, ge=1_000)
    max_deliveries: int = Field(10, ge=1)
    dead_letter_ttl_ms: int = Field(14 * 24 * 3600 * 1000, ge=60_000)
    publish_timeout_ms: int = Field(5_000, ge=100)
    retry_min_backoff_ms: int = Field(1_000, ge=10)
    retry_max_backoff_ms: int = Field(300_000, ge=10)
    heartbeat_interval_s: float = Field(5.0, gt=0, le=300)

    # Valkey
    valkey_url: str = "redis://127.0.0.1:6379/0"
    #: The Valkey ACL user (k8s/base/valkey/users.acl); none: the default user.
    valkey_user: str | None = None
    valkey_password: SecretStr | None = None
    valkey_sentinels: str | None = None
    valkey_sentinel_master: str = "mymaster"
    valkey_sentinel_password: SecretStr | None = None
    #: TLS towards Valkey and its Sentinels (the URL is then rediss://): CA, client certificate, key.
    valkey_tls_ca_file: str | None = None
    valkey_tls_cert_file: str | None = None
    valkey_tls_key_file: str | None = None
    result_ttl_s: int = Field(86_400, ge=60)

    # Tasks: modules that declare them with @task, and schedules from configuration
    task_modules: str = Field("natsq.tasks", pattern=r"^\s*[\w.]+\s*(,\s*[\w.]+\s*)*$")
    periodic_tasks: str | None = None

    # Gateway
    max_body_bytes: int = Field(1_048_576, ge=1_024)
    #: Per caller (0: no limit): task submissions a minute, and tasks submitted but not yet ended.
    rate_limit_per_minute: int = Field(0, ge=0)
    max_outstanding_tasks: int = Field(0, ge=0)
    auth_enabled: bool | None = None
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    #: A claim that names the caller's tenant: tasks are then owned by (tenant, sub).
    jwt_tenant_claim: str | None = None
    #: Clock skew tolerated on exp, nbf and iat.
    jwt_leeway_s: int = Field(60, ge=0, le=300)
    #: Longest lifetime (exp - iat) a token may have.
    jwt_max_lifetime_s: int = Field(86_400, ge=60)
    #: How long the JWKS document is kept before it is fetched again.
    jwt_jwks_cache_s: int = Field(300, ge=10)
    #: Shortest time between two fetches forced by unknown key ids (tokens cannot hammer the provider).
    jwt_jwks_refetch_cooldown_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _production_uses_tls(self) -> Settings:
        """Production sends tasks, results and passwords over TLS only: a plain-text URL to another
        host stops the process at start. Loopback stays allowed: that traffic never leaves the host."""
        if self.env != "production":
            return self
        for url in self.nats_url.split(","):
            scheme, host = _scheme_and_host(url.strip(), "nats")
            if scheme != "tls" and not _is_local(scheme, host):
                raise ValueError(f"NATSQ_ENV=production requires TLS to NATS: NATSQ_NATS_URL must be tls:// "
                                 f"for {host}, not {scheme}://")
        if self.valkey_sentinel_addresses:
            remote = [host for host, _ in self.valkey_sentinel_addresses if not _is_local("redis", host)]
            if remote and not (self.valkey_tls_ca_file or self.valkey_tls_cert_file):
                raise ValueError("NATSQ_ENV=production requires TLS to Valkey: the Sentinels "
                                 f"({', '.join(remote)}) need NATSQ_VALKEY_TLS_CA_FILE (and the client "
                                 "certificate, NATSQ_VALKEY_TLS_CERT_FILE and NATSQ_VALKEY_TLS_KEY_FILE)")
        else:
            scheme, host = _scheme_and_host(self.valkey_url, "redis")
            if scheme != "rediss" and not _is_local(scheme, host):
                raise ValueError(f"NATSQ_ENV=production requires TLS to Valkey: NATSQ_VALKEY_URL must be "
                                 f"rediss:// for {host}, not {scheme}://")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings):
        return init_settings, env_settings, _FileValues(settings_cls), file_secret_settings

    @property
    def auth(self) -> bool:
        """Whether JWT bearer authentication is required."""
        return self.auth_enabled if self.auth_enabled is not None else self.env != "development"

    @property
    def console(self) -> "Settings":
        """These settings with the console's NATS user, if one is set."""
        if not self.console_nats_user:
            return self
        return self.model_copy(update={"nats_user": self.console_nats_user, "nats_password": self.console_nats_password})

    @property
    def task_module_names(self) -> list[str]:
        return [name.strip() for name in self.task_modules.split(",")]

    @property
    def valkey_sentinel_addresses(self) -> list[tuple[str, int]]:
        addresses = []
        for item in (self.valkey_sentinels or "").split(","):
            if item.strip():
                host, _, port = item.strip().rpartition(":")
                addresses.append((host, int(port)))
        return addresses


def _scheme_and_host(url: str, default_scheme: str) -> tuple[str, str]:
    """A server URL's scheme and host, never its credentials (they may be in the URL)."""
    parts = urlsplit(url if "://" in url else f"{default_scheme}://{url}")
    return parts.scheme, parts.hostname or ""


def _is_local(scheme: str, host: str) -> bool:
    return scheme == "unix" or host == "localhost" or host == "::1" or host.startswith("127.")
