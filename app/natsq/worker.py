"""The worker: run with the stock CLI, ``dramatiq natsq.worker --processes 2 --threads 8``.

Importing this module imports the task modules (``NATSQ_TASK_MODULES``),
builds the broker with Dramatiq's default middleware, its Prometheus exporter
(port ``dramatiq_prom_port``, default 9191) and the task-state middleware,
then declares one actor per task. Periodic schedules are declared in JetStream
when a worker process boots.
"""

from __future__ import annotations

import logging
import time

import dramatiq
from dramatiq.middleware import CurrentMessage, Middleware, SkipMessage, default_middleware
from dramatiq.results import Results
from pydantic import ValidationError
from valkey.exceptions import ValkeyError

from . import registry, task_context
from .dispatch import build_broker
from .heartbeats import Heartbeat
from .history import HistoryRecorder, TaskHistory
from .logs import configure_logging, current_task_id
from .periodic import PeriodicSchedules
from .results import TaskStoreResults
from .settings import Settings
from .store import TaskStore, connect_valkey, is_unavailable
from .worker_metrics import WorkerMetrics

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

    def __init__(self, store: TaskStore, tasks: dict[str, registry.TaskSpec]) -> None:
        self.store = store
        self.tasks = tasks

    def record(self, update, *args):
        """``update(*args)``, retried through a Valkey outage; None if it never went through."""
        deadline = time.monotonic() + VALKEY_OUTAGE_BUDGET_S
        backoff = 0.1
        while True:
            try:
                return update(*args)
            except ValkeyError as e:
                if not is_unavailable(e) or time.monotonic() + backoff > deadline:
                    logger.error("Could not record the task's state: %s", e, extra={"update": update.__name__})
                    return None
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def before_process_message(self, broker, message):
        current_task_id.set(message.message_id)
        attempt = message.options.get("retries", 0) + 1
        # Logged first: recording waits out a Valkey outage (up to VALKEY_OUTAGE_BUDGET_S).
        logger.info("Task started.", extra={"actor": message.actor_name, "queue": message.queue_name, "attempt": attempt})
        if self.record(self.store.start, message.message_id, message.actor_name, attempt) is False:
            logger.info("Task cancelled before it started.", extra={"actor": message.actor_name})
            raise SkipMessage("cancelled before it started")

    def after_process_message(self, broker, message, *, result=None, exception=None):
        try:
            if exception is None:
                logger.info("Task succeeded.", extra={"actor": message.actor_name})
                return
            error = f"{type(exception).__name__}: {exception}"
            spec = self.tasks.get(message.actor_name)
            if isinstance(exception, InvalidPayload):  # names only what the caller sent wrong
                shown = error
            else:
                shown = spec.public_error(exception) if spec else type(exception).__name__
            if message.failed:
                self.record(self.store.mark_failed, message.message_id, shown)
                logger.warning("Task failed for good.", extra={"actor": message.actor_name, "error": error})
            else:
                # Retries ran first and counted this attempt in "retries" already.
                self.record(self.store.mark_retrying, message.message_id, message.options.get("retries", 1), shown)
                logger.info("Task will be retried.", extra={"actor": message.actor_name, "error": error})
        finally:
            current_task_id.set(None)

    def after_skip_message(self, broker, message):
        # Skipped (cancelled, or too old): no result. Dramatiq's Results middleware, whose
        # after-hooks run next, would otherwise record a None result as a success.
        message.options["store_results"] = False
        if self.record(self.store.cancel_requested, message.message_id):
            self.record(self.store.mark_cancelled, message.message_id)
            logger.info("Task cancelled.", extra={"actor": message.actor_name})
        else:
            self.record(self.store.mark_failed, message.message_id, "skipped: older than its max_age")
        current_task_id.set(None)

    def after_nack(self, broker, message):
        self.record(self.store.mark_dead_lettered, message.message_id)
        logger.warning("Task dead-lettered.", extra={"actor": message.actor_name, "task_id": message.message_id})


class TrustedOptions(Middleware):
    """Drops message options the gateway never sets, before any middleware reads them.

    Dramatiq lets a message override its actor's ``time_limit``,
    ``max_retries``, ``on_success`` callbacks and more; a message forged on
    NATS must not. Kept: what the Retries middleware writes on retry copies,
    and the dead task a replay names (``dramatiq_nats.dead_letters``).
    """

    KEPT = frozenset({"retries", "traceback", "requeue_timestamp", "replay_of"})

    def before_process_message(self, broker, message):
        dropped = sorted(set(message.options) - self.KEPT)
        for option in dropped:
            del message.options[option]
        if dropped:
            logger.warning("Ignored message options.", extra={"actor": message.actor_name, "options": dropped})


class InvalidPayload(Exception):
    """A message whose payload breaks its task's model: it fails for good, never retried."""


def task_function(spec: registry.TaskSpec):
    """The actor's function: the payload checked against the task's model, then the task."""

    def run(*args, **kwargs):
        if args:
            raise InvalidPayload(f"task {spec.name!r} takes its payload as keyword arguments, got {len(args)} positional")
        try:
            payload = spec.validate(kwargs)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(part) for part in first["loc"]) or "payload"
            raise InvalidPayload(f"payload does not match {spec.payload.__name__}: {field}: {first['msg']}") from None
        return spec.run(payload)

    run.__name__ = run.__qualname__ = spec.name
    run.__module__ = spec.fn.__module__
    return run


def declare_actor(broker: dramatiq.Broker, spec: registry.TaskSpec, settings: Settings) -> dramatiq.Actor:
    return dramatiq.actor(
        task_function(spec),
        actor_name=spec.name,
        queue_name=spec.queue,
        broker=broker,
        max_retries=spec.max_retries,
        time_limit=spec.time_limit_ms,
        min_backoff=settings.retry_min_backoff_ms,
        max_backoff=settings.retry_max_backoff_ms,
        throws=(InvalidPayload,),
    )


settings = Settings()
configure_logging(settings.log_level)
tasks = registry.load(settings.task_module_names, settings.periodic_tasks)
store = TaskStore(connect_valkey(settings), settings.namespace, settings.result_ttl_s)
task_context.bind(store)
history = HistoryRecorder(TaskHistory(store.client, settings.namespace, settings.result_ttl_s))
heartbeat = Heartbeat(store.client, settings.namespace, settings.heartbeat_interval_s)
task_state = TaskState(store, tasks.tasks)
broker = build_broker(
    settings,
    # Dramatiq runs "before" hooks in order and "after" hooks in reverse:
    # options are filtered before anything reads them, and TaskState and the
    # history see the message after Retries has decided about it. A success
    # and its result are recorded by the Results middleware (TaskStoreResults).
    # Results comes before TaskState so that TaskState's after-hooks run first (a skipped task
    # tells Results there is no result to store).
    middleware=[TrustedOptions(), Results(backend=TaskStoreResults(store, task_state.record), store_results=True),
                task_state, history]
    + [m() for m in default_middleware]
    + [WorkerMetrics(), CurrentMessage(), PeriodicSchedules(tasks), heartbeat],
    queues=tasks.queues,
)
dramatiq.set_broker(broker)
actors = {name: declare_actor(broker, spec, settings) for name, spec in tasks.tasks.items()}
