"""The worker: run with the stock CLI, ``dramatiq app.worker --processes 2 --threads 8``.

Importing this module builds the broker with Dramatiq's default middleware,
its Prometheus exporter (port ``dramatiq_prom_port``, default 9191) and the
task-state middleware, then declares one actor per task in ``app.tasks``.
"""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware
from dramatiq.middleware.prometheus import Prometheus
from dramatiq.results import Results
from valkey.exceptions import ValkeyError

from .dispatch import build_broker
from .logs import configure_logging, current_task_id
from .results import TaskStoreResults
from .settings import Settings
from .store import TaskStore, connect_valkey, is_unavailable
from .tasks import TASKS, TaskSpec

logger = logging.getLogger("natsq.worker")


#: How long a state update keeps retrying while Valkey is unavailable:
#: longer than a Sentinel failover, so one does not cost a task its state.
VALKEY_OUTAGE_BUDGET_S = 45.0


class TaskState(Middleware):
    """Keeps each task's state, attempts, result and error in Valkey.

    Recording is best effort: a Valkey outage that outlasts the client's
    retries is logged, and the task itself still runs and is acknowledged.
    A success and its result are recorded by the Results middleware
    (``TaskStoreResults``), through ``record``.
    """

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def record(self, update, *args) -> None:
        deadline = time.monotonic() + VALKEY_OUTAGE_BUDGET_S
        backoff = 0.1
        while True:
            try:
                update(*args)
                return
            except ValkeyError as e:
                if not is_unavailable(e) or time.monotonic() + backoff > deadline:
                    logger.error("Could not record the task's state: %s", e, extra={"update": update.__name__})
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def before_process_message(self, broker, message):
        current_task_id.set(message.message_id)
        attempt = message.options.get("retries", 0) + 1
        logger.info("Task started.", extra={"actor": message.actor_name, "queue": message.queue_name, "attempt": attempt})
        self.record(self.store.mark_running, message.message_id, message.actor_name, attempt)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        try:
            if exception is None:
                logger.info("Task succeeded.", extra={"actor": message.actor_name})
                return
            error = f"{type(exception).__name__}: {exception}"
            if message.failed:
                self.record(self.store.mark_failed, message.message_id, error)
                logger.warning("Task failed for good.", extra={"actor": message.actor_name, "error": error})
            else:
                # Retries ran first and counted this attempt in "retries" already.
                self.record(self.store.mark_retrying, message.message_id, message.options.get("retries", 1), error)
                logger.info("Task will be retried.", extra={"actor": message.actor_name, "error": error})
        finally:
            current_task_id.set(None)

    def after_skip_message(self, broker, message):
        self.record(self.store.mark_failed, message.message_id, "skipped: older than its max_age")
        current_task_id.set(None)

    def after_nack(self, broker, message):
        self.record(self.store.mark_dead_lettered, message.message_id)
        logger.warning("Task dead-lettered.", extra={"actor": message.actor_name, "task_id": message.message_id})


def declare_actor(broker: dramatiq.Broker, spec: TaskSpec, settings: Settings) -> dramatiq.Actor:
    return dramatiq.actor(
        spec.fn,
        actor_name=spec.name,
        queue_name=spec.queue,
        broker=broker,
        max_retries=spec.max_retries,
        time_limit=spec.time_limit_ms,
        min_backoff=settings.retry_min_backoff_ms,
        max_backoff=settings.retry_max_backoff_ms,
    )


settings = Settings()
configure_logging(settings.log_level)
store = TaskStore(connect_valkey(settings), settings.namespace, settings.result_ttl_s)
task_state = TaskState(store)
broker = build_broker(
    settings,
    # Dramatiq runs "after" hooks in reverse order: TaskState comes first so
    # that it sees the message after Retries has decided about it.
    middleware=[task_state, Results(backend=TaskStoreResults(store, task_state.record), store_results=True)]
    + [m() for m in default_middleware]
    + [Prometheus(), CurrentMessage()],
)
dramatiq.set_broker(broker)
actors = {name: declare_actor(broker, spec, settings) for name, spec in TASKS.items()}
