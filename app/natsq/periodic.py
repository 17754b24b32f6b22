"""Periodic tasks: their schedules declared in JetStream, which fires them.

nats-server (2.12+) keeps repeating message schedules in the task stream and
publishes each tick once, however many workers run, so no scheduler process
and no leader election are needed. Each worker process declares every
schedule when it boots; an unchanged schedule is left alone.
"""

from __future__ import annotations

import json
import logging
import uuid

import dramatiq
from dramatiq.middleware import Middleware

from dramatiq_nats import NatsBroker

from .registry import PeriodicSpec, Registry

logger = logging.getLogger("natsq.periodic")


def schedule_message(spec: PeriodicSpec, registry: Registry) -> dramatiq.Message:
    """The message a schedule fires: the same bytes for the same declaration."""
    task = registry.tasks[spec.task]
    declaration = json.dumps([spec.name, spec.schedule, spec.task, spec.payload], sort_keys=True)
    return dramatiq.Message(
        queue_name=task.queue,
        actor_name=task.name,
        args=(),
        kwargs=task.validate(spec.payload).model_dump(mode="json"),
        options={},
        message_id=str(uuid.uuid5(uuid.NAMESPACE_URL, "natsq-periodic:" + declaration)),
        message_timestamp=0,  # every firing gets its own id and time
    )


def declare_schedules(broker: NatsBroker, registry: Registry) -> None:
    for spec in registry.periodic.values():
        changed = broker.schedule_repeating(schedule_message(spec, registry), spec.schedule, name=spec.name)
        logger.info("Periodic task %s.", "declared" if changed else "unchanged",
                    extra={"periodic": spec.name, "task": spec.task, "schedule": spec.schedule})


def describe(registry: Registry) -> list[dict]:
    """The periodic tasks as the API lists them."""
    return [
        {"name": spec.name, "task": spec.task, "schedule": spec.schedule, "payload": spec.payload,
         "queue": registry.tasks[spec.task].queue}
        for spec in sorted(registry.periodic.values(), key=lambda s: s.name)
    ]


class PeriodicSchedules(Middleware):
    """Declares the schedules when a worker process boots."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def after_worker_boot(self, broker, worker):
        try:
            declare_schedules(broker, self.registry)
        except Exception:
            # The schedules already stored keep firing; the next boot tries again.
            logger.exception("Could not declare the periodic tasks.")
