"""gunicorn settings of the reference gateway: the worker settings of
app/natsq/gunicorn_conf.py (same module values: workers, worker class, threads,
timeouts, keep-alive, logging), only the bind address and the app's hooks differ."""

import os

from natsq.gunicorn_conf import (  # noqa: F401  (gunicorn reads these module attributes)
    accesslog,
    errorlog,
    graceful_timeout,
    keepalive,
    logconfig_dict,
    threads,
    timeout,
    worker_class,
    workers,
)

bind = os.environ["BENCH_BIND"]
