"""Names and configurations of the JetStream objects the broker uses.

One namespace (default ``natsq``) owns:

- stream ``<ns>-tasks``: work-queue retention; subjects ``<ns>.queue.<queue>`` carry
  runnable messages, ``<ns>.schedule.<queue>.<id>`` hold delayed ones until the
  server fires them onto the queue subject, and ``<ns>.schedule.<queue>.repeat.<name>``
  hold repeating schedules;
- one durable pull consumer per Dramatiq queue, named after the encoded queue and
  filtered to its queue subject (no filter covers the schedule subjects, so the
  server's scheduler, not a consumer, owns them);
- stream ``<ns>-dead``: dead letters on ``<ns>.dead.<queue>``, with an age limit;
- key-value bucket ``<ns>-handbacks``: how often a message was handed back unrun,
  by stream sequence (see ``handbacks.py``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

#: Seconds within which JetStream drops a publish whose Nats-Msg-Id it has
#: stored already. A retried publish of one enqueue (after a timeout or a
#: reconnect) reuses its id, so the window must outlast the longest retry of
#: a publish; two minutes (JetStream's default) is set explicitly so that the
#: streams the broker creates do not depend on a server default.
DUPLICATE_WINDOW_S = 120.0

#: Header with the time (ms since the epoch) a delayed message is due; the
#: consumer holds a message that arrives before it until then.
DUE_HEADER = "Natsq-Due"

#: How much earlier than due a schedule fires. nats-server's scheduler wakes
#: up at most every 250 ms (scheduler.go, resetTimer), so a schedule fires up
#: to 250 ms late; firing this much earlier and holding the message in the
#: consumer until due makes delays punctual (docs/performance.md).
SCHEDULE_LEAD_MS = 400

_NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
_QUEUE_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")


def encode_queue_name(queue_name: str) -> str:
    """Encode a Dramatiq queue name into one subject token / consumer name.

    ``.`` separates subject tokens and is not allowed in consumer names, so it
    is escaped as ``_d``; ``_`` itself becomes ``__`` to keep the encoding
    reversible (``a.b`` -> ``a_db``, ``a_db`` -> ``a__db``).
    """
    if not _QUEUE_PATTERN.match(queue_name):
        raise ValueError(f"queue name {queue_name!r} may only contain letters, digits, '.', '-' and '_'")
    return queue_name.replace("_", "__").replace(".", "_d")


@dataclass(frozen=True)
class Topology:
    namespace: str = "natsq"
    storage: StorageType = StorageType.FILE
    replicas: int = 1
    ack_wait_ms: int = 30_000
    dead_letter_ttl_ms: int = 14 * 24 * 3600 * 1000

    def __post_init__(self) -> None:
        if not _NAMESPACE_PATTERN.match(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} may only contain letters, digits, '-' and '_'")

    @property
    def task_stream(self) -> str:
        return f"{self.namespace}-tasks"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.namespace}-dead"

    def queue_subject(self, queue_name: str) -> str:
        return f"{self.namespace}.queue.{encode_queue_name(queue_name)}"

    def schedule_subject(self, queue_name: str, schedule_id: str) -> str:
        """A delayed message's schedule: one token after the queue."""
        return f"{self.namespace}.schedule.{encode_queue_name(queue_name)}.{schedule_id}"

    def repeating_subject(self, queue_name: str, name: str) -> str:
        """A repeating schedule: two tokens after the queue, so ``delayed_filter`` leaves it out."""
        return f"{self.namespace}.schedule.{encode_queue_name(queue_name)}.repeat.{name}"

    def schedule_filter(self, queue_name: str) -> str:
        """Every schedule of a queue, delayed and repeating."""
        return f"{self.namespace}.schedule.{encode_queue_name(queue_name)}.>"

    def delayed_filter(self, queue_name: str) -> str:
        """The delayed messages of a queue, not its repeating schedules."""
        return f"{self.namespace}.schedule.{encode_queue_name(queue_name)}.*"

    def dead_letter_subject(self, queue_name: str) -> str:
        return f"{self.namespace}.dead.{encode_queue_name(queue_name)}"

    def consumer_name(self, queue_name: str) -> str:
        return encode_queue_name(queue_name)

    def task_stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.task_stream,
            subjects=[f"{self.namespace}.queue.*", f"{self.namespace}.schedule.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=self.storage,
            num_replicas=self.replicas,
            # Schedules are incompatible with discard=new, and with
            # discard=old a work queue over max_bytes or max_msgs silently
            # drops queued messages (measured on nats-server 2.15.1). So the
            # stream has no limits of its own: the account's JetStream limit
            # or a full server store rejects publishes (StorageFull,
            # back-pressure) instead of dropping queued work.
            allow_msg_schedules=True,
            # Direct gets count the scheduled messages of a queue in one
            # request (see NatsBroker.queue_stats).
            allow_direct=True,
            duplicate_window=DUPLICATE_WINDOW_S,
        )

    def dead_letter_stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.dead_letter_stream,
            subjects=[f"{self.namespace}.dead.*"],
            retention=RetentionPolicy.LIMITS,
            storage=self.storage,
            num_replicas=self.replicas,
            max_age=self.dead_letter_ttl_ms / 1000,
            duplicate_window=DUPLICATE_WINDOW_S,
        )

    def hand_back_bucket_config(self) -> KeyValueConfig:
        return KeyValueConfig(
            bucket=f"{self.namespace}-handbacks",
            storage=self.storage,
            replicas=self.replicas,
            # A message still queued after this long counts its old hand-backs as deliveries.
            ttl=self.dead_letter_ttl_ms / 1000,
        )

    def consumer_config(self, queue_name: str) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.consumer_name(queue_name),
            filter_subject=self.queue_subject(queue_name),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_ms / 1000,
            # The broker dead-letters by delivery count itself (it sees
            # num_delivered on every delivery); the server must never stop
            # delivering, or a message would sit in the work queue forever.
            max_deliver=-1,
            max_ack_pending=-1,
            max_waiting=4096,
        )


def missing_requirements(existing: StreamConfig, wanted: StreamConfig) -> StreamConfig | None:
    """``existing`` plus what the broker cannot work without, or None if it has it all.

    Only subjects and feature flags are added; limits, the duplicate window,
    replicas and the like stay as an operator set them.
    """
    changes: dict = {}
    subjects = list(existing.subjects or [])
    if any(subject not in subjects for subject in wanted.subjects or []):
        changes["subjects"] = subjects + [s for s in wanted.subjects or [] if s not in subjects]
    for flag in ("allow_msg_schedules", "allow_direct"):
        if getattr(wanted, flag) and not getattr(existing, flag):
            changes[flag] = True
    return dataclasses.replace(existing, **changes) if changes else None
