"""The environment variables the natsq app reads: the one list the manifests are checked against.

Derived from the code, so a setting added to or removed from `app/natsq/settings.py` changes what the
manifests may set without touching this file:

- every field of `natsq.settings.Settings` as `NATSQ_<FIELD>`, and as `NATSQ_<FIELD>_FILE` (the
  settings class reads every field from a file named by that variable, see `_FileValues`);
- the variables read outside the settings class (`grep -rn "environ\\|getenv" app/`):
  gunicorn's config, prometheus-client's multiprocess directory, and Dramatiq's own variables
  for its Prometheus middleware and the worker's prefetch.
"""

import sys

from k8s_manifests import REPO

# Read outside natsq.settings.Settings.
_OTHER_VARIABLES = (
    # app/natsq/gunicorn_conf.py
    "NATSQ_BIND",
    "WEB_CONCURRENCY",
    "NATSQ_GATEWAY_THREADS",
    # app/natsq/metrics.py, app/natsq/gunicorn_conf.py (prometheus-client multiprocess mode)
    "PROMETHEUS_MULTIPROC_DIR",
    # dramatiq.middleware.prometheus (the worker's metrics exporter)
    "dramatiq_prom_port",
    "dramatiq_prom_host",
    "dramatiq_prom_db",
    # dramatiq.worker
    "dramatiq_queue_prefetch",
    "dramatiq_delay_queue_prefetch",
)


def _settings_class():
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from natsq.settings import ENV_PREFIX, Settings

    return ENV_PREFIX, Settings


def known_app_env_vars() -> frozenset[str]:
    """Every environment variable name the natsq gateway and workers read."""
    prefix, settings = _settings_class()
    names = {f"{prefix}{field.upper()}" for field in settings.model_fields}
    return frozenset(names | {f"{name}_FILE" for name in names} | set(_OTHER_VARIABLES))
