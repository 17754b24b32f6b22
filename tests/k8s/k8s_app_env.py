"""The environment variables the natsq app reads: the one list the manifests are checked against.

Today this is the contract's table (CONTRACT.md, "Environment variables the app reads"). When
`app/settings.py` exists, replace the body of `known_app_env_vars` with a read of the settings
class (e.g. the pydantic-settings fields with their env prefix, plus their `*_FILE` variants);
nothing else in tests/k8s needs to change.
"""

# Settings whose value may also come from a file named by `<NAME>_FILE`.
_SECRET_SETTINGS = (
    "NATSQ_NATS_PASSWORD",
    "NATSQ_NATS_TOKEN",
    "NATSQ_VALKEY_PASSWORD",
    "NATSQ_JWT_SECRET",
    "NATSQ_JWT_PUBLIC_KEY",
)

_SETTINGS = (
    "NATSQ_ENV",
    "NATSQ_NATS_URL",
    "NATSQ_NATS_USER",
    "NATSQ_NATS_CREDS_FILE",
    "NATSQ_NATS_TLS_CA_FILE",
    "NATSQ_NATS_TLS_CERT_FILE",
    "NATSQ_NATS_TLS_KEY_FILE",
    "NATSQ_NAMESPACE",
    "NATSQ_STREAM_REPLICAS",
    "NATSQ_ACK_WAIT_MS",
    "NATSQ_MAX_DELIVERIES",
    "NATSQ_DEAD_LETTER_TTL_MS",
    "NATSQ_VALKEY_URL",
    "NATSQ_VALKEY_SENTINELS",
    "NATSQ_VALKEY_SENTINEL_MASTER",
    "NATSQ_RESULT_TTL_S",
    "NATSQ_MAX_BODY_BYTES",
    "NATSQ_AUTH_ENABLED",
    "NATSQ_JWT_JWKS_URL",
    "NATSQ_JWT_ISSUER",
    "NATSQ_JWT_AUDIENCE",
    "NATSQ_LOG_LEVEL",
    # Read by prometheus-client and Dramatiq's Prometheus middleware, not by natsq's settings.
    "PROMETHEUS_MULTIPROC_DIR",
    "dramatiq_prom_port",
    "dramatiq_prom_db",
)


def known_app_env_vars() -> frozenset[str]:
    """Every environment variable name the natsq gateway and workers read."""
    return frozenset(_SETTINGS + _SECRET_SETTINGS + tuple(f"{name}_FILE" for name in _SECRET_SETTINGS))
