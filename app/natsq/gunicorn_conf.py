"""gunicorn settings for the gateway; GUNICORN_CMD_ARGS and flags still override them."""

import os
import shutil

from prometheus_client import multiprocess

bind = os.environ.get("NATSQ_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Threads: a request mostly waits on JetStream's acknowledgement, and
# concurrent publishes of one process share one connection and batch.
worker_class = "gthread"
threads = int(os.environ.get("NATSQ_GATEWAY_THREADS", "16"))
timeout = 30
graceful_timeout = 25
keepalive = 5
accesslog = None  # requests are counted in metrics; the app logs what matters as JSON
errorlog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "natsq.logs.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}

# Metrics from all workers are summed through files in this directory.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", "/tmp/natsq-metrics")


def on_starting(server):
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(directory, ignore_errors=True)  # stale files from a previous run would be summed in
    os.makedirs(directory, exist_ok=True)


def post_worker_init(worker):
    from natsq.gateway import warm_up_in_background

    warm_up_in_background(worker.wsgi)


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)
