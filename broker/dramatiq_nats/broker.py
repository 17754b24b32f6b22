"""NatsBroker: a Dramatiq broker on NATS JetStream with ack-on-success semantics."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from dramatiq.broker import Broker
from dramatiq.common import current_millis
from dramatiq.errors import (
    BrokerConnectionError,
    BrokerError,
    ConnectionClosed,
    ConnectionFailed,
    QueueJoinTimeout,
    QueueNotFound,
)
from dramatiq.message import Message
from dramatiq.middleware import Middleware
from nats.js.api import ConsumerInfo, StorageType
from nats.js.errors import NotFoundError

from . import followups, repeating
from ._loop import EventLoopThread
from .connection import Connection, build_connect_options
from .consumer import NatsConsumer, NatsMessage
from .dead_letters import DeadLetters
from .errors import EnqueueFailed
from .topology import DUE_HEADER, SCHEDULE_LEAD_MS, Topology, encode_queue_name

_NUM_PENDING = "Nats-Num-Pending"

#: Default server list, like RedisBroker's default URL.
DEFAULT_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True)
class QueueStats:
    """Message counts of one queue, as JetStream reports them.

    pending: waiting to be delivered; in_flight: delivered, not yet acknowledged
    (prefetched or running); redelivered: in flight and delivered more than once;
    scheduled: delayed (including retries waiting out their backoff);
    dead_lettered: kept in the dead-letter stream.
    """

    pending: int
    in_flight: int
    redelivered: int
    scheduled: int
    dead_lettered: int

    @property
    def outstanding(self) -> int:
        """Messages that will still run: pending, in flight or scheduled."""
        return self.pending + self.in_flight + self.scheduled


class _Batch:
    """Publishes under way; ``result()`` waits for all of them, as ``enqueue_many`` does."""

    def __init__(self, broker: NatsBroker, copies: list[Message], pending: list[concurrent.futures.Future],
                 delay: Optional[int]) -> None:
        self._broker, self._copies, self._pending, self._delay = broker, copies, pending, delay

    def result(self) -> list[Message]:
        errors = [self._broker._publish_error(future) for future in self._pending]
        stored = [copy for copy, error in zip(self._copies, errors) if error is None]
        for copy in stored:
            self._broker.emit_after("enqueue", copy, self._delay)
        if len(stored) < len(self._copies):
            raise EnqueueFailed(stored, [(copy, error) for copy, error in zip(self._copies, errors) if error is not None])
        return self._copies


class PendingEnqueue:
    """One publish under way (``NatsBroker.start_enqueue``)."""

    def __init__(self, broker: NatsBroker, batch: _Batch, message: Message, delay: Optional[int]) -> None:
        self._broker, self._batch, self._message, self._delay = broker, batch, message, delay

    def result(self) -> Message:
        """The stored copy, once JetStream stored it; raises as ``NatsBroker.enqueue`` does."""
        try:
            return self._batch.result()[0]
        except EnqueueFailed as e:
            [(_, error)] = e.failed
            self._broker._note_follow_up_failure(self._message, self._delay, error)
            raise error from None


class NatsBroker(Broker):
    """A Dramatiq broker for NATS JetStream.

    Messages are acknowledged only after their actor finished (or after their
    retry or dead letter was durably published), so a crash at any point means
    redelivery, never loss: delivery is at-least-once.

    Parameters:
      url: One server URL or several, comma-separated (or a list).
      middleware: Dramatiq middleware, as for any broker.
      namespace: Prefix of the streams and subjects this broker owns.
      ack_wait_ms: How long a delivery may go without an ack or a lease
        renewal before JetStream redelivers it.
      max_deliveries: Deliveries after which a message that never got
        acknowledged (its worker keeps dying) is dead-lettered.
      dead_letter_ttl_ms: How long dead letters are kept.
      storage: ``"file"`` (durable) or ``"memory"``.
      replicas: JetStream replicas of the streams (3 in a cluster).
      publish_timeout_ms: How long ``enqueue`` keeps retrying before it
        raises ``ConnectionClosed``.
      connect_timeout_ms: Timeout of the first connection attempt.
      tls_ca_file, tls_cert_file, tls_key_file: TLS settings.
      declare: Create or update the streams and consumers. False for a NATS
        user allowed only to publish or consume: someone else declared them.
      **options: Passed to ``nats.connect`` (``user``, ``password``,
        ``token``, ``user_credentials``, ``nkeys_seed``, ...).
    """

    def __init__(
        self,
        url: str | list[str] = DEFAULT_URL,
        *,
        middleware: Optional[list[Middleware]] = None,
        namespace: str = "natsq",
        ack_wait_ms: int = 30_000,
        max_deliveries: int = 10,
        dead_letter_ttl_ms: int = 14 * 24 * 3600 * 1000,
        storage: str = "file",
        replicas: int = 1,
        publish_timeout_ms: int = 10_000,
        connect_timeout_ms: int = 5_000,
        tls_ca_file: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        declare: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(middleware=middleware)
        self.add_middleware(followups.FollowUps())
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        servers = [u.strip() for u in url.split(",")] if isinstance(url, str) else list(url)
        self.topology = Topology(
            namespace=namespace,
            storage=StorageType(storage),
            replicas=replicas,
            ack_wait_ms=ack_wait_ms,
            dead_letter_ttl_ms=dead_letter_ttl_ms,
        )
        self.max_deliveries = max_deliveries
        # False: streams and consumers exist already (an admin declared them); this
        # broker's NATS user then needs no permission to create or change them.
        self._declare = declare
        self.publish_timeout_s = publish_timeout_ms / 1000
        # Blocking calls other than publishing (consumer set-up, stats) get
        # the same budget, plus a margin for the first connection.
        self._operation_timeout_s = self.publish_timeout_s + connect_timeout_ms / 1000
        self._connect_options = build_connect_options(
            servers,
            name=f"natsq-{socket.gethostname()}",
            connect_timeout_ms=connect_timeout_ms,
            tls_ca_file=tls_ca_file,
            tls_cert_file=tls_cert_file,
            tls_key_file=tls_key_file,
            options=options,
        )
        self._loop = EventLoopThread("natsq-nats")
        self._connection_lock = threading.Lock()
        self._connection_pid: int | None = None
        self._connection_obj: Connection | None = None

    # -- connection ---------------------------------------------------------

    @property
    def _connection(self) -> Connection:
        """This process's connection (a forked child gets its own)."""
        if self._connection_pid != os.getpid():
            with self._connection_lock:  # threads racing here must share one
                if self._connection_pid != os.getpid():
                    self._connection_obj = Connection(self._loop, self.topology, self._connect_options, self._declare)
                    self._connection_pid = os.getpid()
        assert self._connection_obj is not None
        return self._connection_obj

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return self._connection.call(coro, timeout or self._operation_timeout_s)

    def connect(self) -> None:
        """Connect and declare the streams now rather than on first use.

        Raises:
          ConnectionFailed: NATS is unreachable (the connection keeps being
            tried in the background), or the server is too old.
        """
        try:
            self._run(self._connection.open())
        except ConnectionClosed as e:
            raise ConnectionFailed(str(e)) from None

    @property
    def connected(self) -> bool:
        """Whether this process currently has a live connection to NATS."""
        return self._connection.connected

    def close(self) -> None:
        """Flush pending acks, close this process's connection and its loop.

        Never raises. Consumers of the closed connection stop working: a late
        ack is dropped (the message is redelivered after its ack wait) rather
        than starting a new connection.
        """
        if self._connection_pid == os.getpid() and self._connection_obj is not None:
            try:
                self._connection_obj.close(timeout=5)
            except Exception:
                self.logger.warning("Could not close the NATS connection cleanly.", exc_info=True)
            self._connection_obj = self._connection_pid = None
        self._loop.stop()

    # -- Dramatiq's Broker interface -------------------------------------------

    def add_middleware(self, middleware: Middleware, **options: Any) -> None:
        super().add_middleware(middleware, **options)
        # FollowUps must stay last: see followups.py.
        marker = next((m for m in self.middleware if isinstance(m, followups.FollowUps)), None)
        if marker is not None and self.middleware[-1] is not marker:
            self.middleware.remove(marker)
            self.middleware.append(marker)

    def declare_queue(self, queue_name: str) -> None:
        """Declare a queue; its JetStream consumer is created on first use."""
        if queue_name in self.queues:
            return
        encode_queue_name(queue_name)  # reject names that cannot be encoded now, not later
        self.emit_before("declare_queue", queue_name)
        self.queues[queue_name] = None
        self.emit_after("declare_queue", queue_name)

    def declare_consumers(self) -> None:
        """Create (or update) the JetStream consumer of every declared queue now.

        Consumers are otherwise created on first consume. This is for a bootstrap run by
        a NATS user allowed to create them, where the processes that consume may not
        (``declare=False``).

        Raises:
          ConnectionClosed: NATS did not answer in time.
        """

        async def declare() -> None:
            for queue_name in sorted(self.queues):
                await self._connection.ensure_consumer(queue_name)

        self._run(declare())

    def get_declared_queues(self) -> set[str]:
        return set(self.queues)

    def get_declared_delay_queues(self) -> set[str]:
        """Always empty: delays are JetStream message schedules, not queues."""
        return set()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> NatsConsumer:
        """Consume a declared queue, holding at most ``prefetch`` messages.

        Raises:
          QueueNotFound: If the queue hasn't been declared.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return NatsConsumer(
            self._connection,
            queue_name,
            broker=self,
            prefetch=prefetch,
            timeout_ms=timeout,
            max_deliveries=self.max_deliveries,
            operation_timeout_s=self._operation_timeout_s,
        )

    def enqueue(self, message: Message, *, delay: Optional[int] = None) -> Message:
        """Publish a message and return once JetStream has stored it.

        ``delay`` (ms) turns it into a server-side message schedule: it
        survives restarts of every process, and no worker holds it meanwhile.
        The caller's message is left as it is; the stored copy is returned.

        Raises:
          QueueNotFound: If the queue hasn't been declared.
          ConnectionClosed: If JetStream did not acknowledge it in time.
          PublishRejected: If JetStream refused it for good (too large, store full).
        """
        return self.start_enqueue(message, delay=delay).result()

    def start_enqueue(self, message: Message, *, delay: Optional[int] = None) -> PendingEnqueue:
        """Start publishing a message; ``result()`` of the answer waits for it as ``enqueue`` does.

        For a caller with other work to do while JetStream stores the message. Raises
        what ``enqueue`` raises before anything is published (``QueueNotFound``, or
        ``ConnectionFailed`` when NATS cannot be reached).
        """
        try:
            return PendingEnqueue(self, self._start_batch([message], delay), message, delay)
        except (QueueNotFound, BrokerConnectionError) as e:
            self._note_follow_up_failure(message, delay, e)
            raise

    def _note_follow_up_failure(self, message: Message, delay: Optional[int], error: BrokerError) -> None:
        """Middleware finishing a delivery of this thread enqueues its follow-ups here;
        Dramatiq would log the error and acknowledge the delivery as if they had been stored."""
        finishing = followups.finishing()
        if isinstance(finishing, NatsMessage):
            publishes = [] if isinstance(error, QueueNotFound) else [self._outgoing(*self._stored_copy(message, delay))]
            finishing.follow_ups_failed(message, publishes, error, delay)

    def enqueue_many(self, messages: Iterable[Message], *, delay: Optional[int] = None) -> list[Message]:
        """Publish many messages with their acknowledgements gathered; the stored copies.

        Raises:
          QueueNotFound: If a queue hasn't been declared (nothing is published).
          ConnectionFailed: If NATS cannot be reached (nothing is published).
          EnqueueFailed: Some were not stored; it lists which were and which
            were not. Enqueueing the same messages again is safe: within the
            stream's duplicate window JetStream drops the copies.
        """
        return self._start_batch(list(messages), delay).result()

    def _start_batch(self, messages: list[Message], delay: Optional[int]) -> _Batch:
        for message in messages:
            if message.queue_name not in self.queues:
                raise QueueNotFound(message.queue_name)
        outgoing = [self._stored_copy(message, delay) for message in messages]
        copies = [copy for copy, _ in outgoing]
        for copy in copies:
            self.emit_before("enqueue", copy, delay)
        connection = self._connection
        if not connection.connected:
            self._run(connection.open())
        pending = [
            connection.publisher.submit(*self._outgoing(copy, copy_delay), self.publish_timeout_s)
            for copy, copy_delay in outgoing
        ]
        return _Batch(self, copies, pending, delay)

    def _publish_error(self, future: concurrent.futures.Future) -> BrokerError | None:
        """What went wrong with one publish, or None once JetStream stored it."""
        try:
            future.result(self.publish_timeout_s + 1)
        except concurrent.futures.TimeoutError:
            return ConnectionClosed("JetStream did not acknowledge the message in time")
        except concurrent.futures.CancelledError:
            return ConnectionClosed("the publish was cancelled")
        except BrokerError as e:
            return e
        return None

    @staticmethod
    def _stored_copy(message: Message, delay: Optional[int]) -> tuple[Message, Optional[int]]:
        """The message as it is stored, and its delay; the caller's message stays as it is."""
        options = dict(message.options)
        eta = options.pop("eta", None)
        if eta is not None and delay is None:
            # A message from elsewhere with Dramatiq's eta: schedule it here
            # rather than let a worker hold it in memory.
            delay = max(int(eta) - current_millis(), 0)
        return Message(**{**message.asdict(), "options": options}), delay

    def _outgoing(self, message: Message, delay: Optional[int]) -> tuple[str, bytes, dict[str, str]]:
        """Subject, body and headers of one publish."""
        # Stable across retried publishes of this enqueue, different for each
        # Dramatiq retry (same message_id, more retries) and for each queue the
        # same message goes to: JetStream's de-duplication then drops only
        # true duplicates. Encoded queue names never contain "/".
        attempt = f"{message.message_id}-{message.options.get('retries', 0)}"
        headers = {"Nats-Msg-Id": f"{self.topology.consumer_name(message.queue_name)}/{attempt}"}
        queue_subject = self.topology.queue_subject(message.queue_name)
        if not delay:
            return queue_subject, message.encode(), headers
        due_ms = math.ceil(time.time() * 1000) + delay  # rounded up: never due before the delay is over
        headers[DUE_HEADER] = str(due_ms)
        if delay <= SCHEDULE_LEAD_MS:
            # Due sooner than the server's scheduler could fire it: published
            # at once, and the consumer that receives it holds it until due.
            return queue_subject, message.encode(), headers
        # The server's scheduler fires up to a quarter of a second late, so the
        # schedule fires early and the consumer holds the message until due.
        fire_at = datetime.fromtimestamp((due_ms - SCHEDULE_LEAD_MS) / 1000, timezone.utc)
        headers["Nats-Schedule"] = "@at " + fire_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers["Nats-Schedule-Target"] = queue_subject
        return self.topology.schedule_subject(message.queue_name, attempt), message.encode(), headers

    def schedule_repeating(self, message: Message, schedule: str, *, name: str) -> bool:
        """Have JetStream enqueue ``message`` on a schedule, for ever.

        ``schedule`` is ``@every <duration>`` (``@every 10m``), ``@hourly``
        and the like, or cron with six fields, seconds first. One schedule per
        queue and ``name``: declaring it again replaces it, and does nothing
        when unchanged, so every process may declare it at start-up; it fires
        once per tick however many do. Each firing reaches the workers with a
        message id of its own. Returns whether the schedule was (re)stored.

        Raises:
          QueueNotFound: If the queue hasn't been declared.
          ConnectionClosed: If JetStream did not store it in time.
        """
        if message.queue_name not in self.queues:
            raise QueueNotFound(message.queue_name)
        return self._run(repeating.declare(self._connection, message, schedule, name, self.publish_timeout_s))

    def unschedule_repeating(self, queue_name: str, name: str) -> None:
        """Remove a repeating schedule (nothing happens if there is none)."""
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        self._run(repeating.remove(self._connection, queue_name, name))

    def flush(self, queue_name: str) -> None:
        """Drop every pending and scheduled message of a queue."""
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        self._run(self._purge(queue_name))

    def flush_all(self) -> None:
        """Drop every message of every declared queue, and all dead letters."""

        async def purge_all() -> None:
            await self._connection.open()
            for queue_name in self.queues:
                await self._purge(queue_name)
            await self._connection.js.purge_stream(self.topology.dead_letter_stream)

        self._run(purge_all())

    async def _purge(self, queue_name: str) -> None:
        connection = self._connection
        await connection.open()
        stream = self.topology.task_stream
        await connection.js.purge_stream(stream, subject=self.topology.queue_subject(queue_name))
        await connection.js.purge_stream(stream, subject=self.topology.schedule_filter(queue_name))

    def join(self, queue_name: str, *, timeout: Optional[int] = None) -> None:
        """Wait until a queue has nothing pending, in flight or scheduled.

        Parameters:
          timeout: Milliseconds to wait at most (forever if None).

        Raises:
          QueueJoinTimeout: When the timeout elapses.
          QueueNotFound: If the queue hasn't been declared.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while self.queue_stats(queue_name).outstanding:
            if deadline is not None and time.monotonic() >= deadline:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.02)

    # -- operators ----------------------------------------------------------

    @property
    def dead_letters(self) -> DeadLetters:
        """List, inspect, replay, delete and purge the dead letters of each queue."""
        return DeadLetters(self)

    def queue_stats(self, queue_name: str) -> QueueStats:
        """Counts of one declared queue."""
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        return self._run(self._queue_stats(queue_name))

    def stats(self) -> dict[str, QueueStats]:
        """Counts of every declared queue, by queue name."""

        async def collect() -> dict[str, QueueStats]:
            names = sorted(self.queues)
            results = await asyncio.gather(*(self._queue_stats(name) for name in names))
            return dict(zip(names, results))

        return self._run(collect())

    async def _queue_stats(self, queue_name: str) -> QueueStats:
        # Read only: a producer that reads stats creates no consumer.
        connection = self._connection
        await connection.open()
        js, topology = connection.js, self.topology
        consumer, scheduled, dead = await asyncio.gather(
            self._consumer_info(queue_name),
            self._count_scheduled(queue_name),
            js.stream_info(topology.dead_letter_stream, subjects_filter=topology.dead_letter_subject(queue_name)),
        )
        if consumer is None:  # no worker has consumed the queue yet: nothing is in flight
            queued = await js.stream_info(topology.task_stream, subjects_filter=topology.queue_subject(queue_name))
            pending, in_flight, redelivered = sum((queued.state.subjects or {}).values()), 0, 0
        else:
            pending, in_flight, redelivered = consumer.num_pending, consumer.num_ack_pending, consumer.num_redelivered
        return QueueStats(
            pending=pending or 0,
            in_flight=in_flight or 0,
            redelivered=redelivered or 0,
            scheduled=scheduled,
            dead_lettered=sum((dead.state.subjects or {}).values()),
        )

    async def _consumer_info(self, queue_name: str) -> ConsumerInfo | None:
        try:
            return await self._connection.js.consumer_info(
                self.topology.task_stream, self.topology.consumer_name(queue_name)
            )
        except NotFoundError:
            return None

    async def _count_scheduled(self, queue_name: str) -> int:
        """Scheduled messages of a queue, in one request whatever their number.

        Every schedule has a subject of its own, so a stream info filtered to
        them would list every one (paged at 100,000 by the server). A batched
        direct get of the first one instead carries the number of those after
        it (``Nats-Num-Pending``).
        """
        # Delayed messages only: repeating schedules never run out, they are not work waiting to run.
        request = {"next_by_subj": self.topology.delayed_filter(queue_name), "batch": 1}
        reply = await self._connection.nc.request(
            f"$JS.API.DIRECT.GET.{self.topology.task_stream}", json.dumps(request).encode(), timeout=self.publish_timeout_s
        )
        status = reply.headers.get("Status") if reply.headers else None
        if status == "404":
            return 0
        if status or not reply.headers.get(_NUM_PENDING):
            raise ConnectionClosed(f"cannot count scheduled messages: {reply.headers}")
        return int(reply.headers[_NUM_PENDING]) + 1
