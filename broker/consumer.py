"""The Dramatiq consumer: a continuous JetStream pull that keeps ``prefetch`` messages at hand."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import time
from collections.abc import Iterable

from dramatiq.broker import Consumer, MessageProxy
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from nats.aio.msg import Msg

from .connection import Connection
from .topology import DUE_HEADER, SCHEDULE_LEAD_MS

logger = logging.getLogger(__name__)

#: How long one pull request waits on the server (seconds). Messages arrive
#: the moment they are published, whatever this is; it bounds how long a lost
#: pull request (server restart, leader change) can go unnoticed.
PULL_EXPIRES_S = 5.0

#: Seconds to wait on top of PULL_EXPIRES_S for the server's expiry notice
#: before assuming the outstanding pull requests are gone.
_PULL_GRACE_S = 2.0

_STATUS = "Status"
_PENDING_MESSAGES = "Nats-Pending-Messages"


class NatsMessage(MessageProxy):
    """A Dramatiq message together with the JetStream delivery it came from."""

    def __init__(self, message: Message, delivery: Msg) -> None:
        super().__init__(message)
        self._delivery = delivery
        self._copy_unpublished = False

    def copy_not_published(self) -> None:
        """Its retry copy could not be published: it must not be acknowledged.

        Dramatiq's Retries middleware re-enqueues this very message and the
        worker acks it afterwards even when that enqueue failed; acking would
        lose the task, so the ack becomes a hand-back and it runs again.
        """
        self._copy_unpublished = True


class NatsConsumer(Consumer):
    """Consumes one queue through its durable pull consumer.

    Pull requests are kept outstanding so that ``prefetch`` messages are held
    at most; a message reaches ``__next__`` as soon as the server delivers it.
    ``ack``/``nack``/``requeue`` arrive from Dramatiq's worker threads and are
    handed to the event loop.
    """

    def __init__(
        self,
        connection: Connection,
        queue_name: str,
        *,
        prefetch: int,
        timeout_ms: int,
        max_deliveries: int,
        operation_timeout_s: float,
    ) -> None:
        self._connection = connection
        self._topology = connection.topology
        self._queue_name = queue_name
        self._prefetch = max(prefetch, 1)
        self._timeout_s = timeout_ms / 1000
        self._max_deliveries = max_deliveries
        self._operation_timeout_s = operation_timeout_s
        self._ready: queue.SimpleQueue[NatsMessage] = queue.SimpleQueue()
        self._not_due: dict[str, tuple[asyncio.TimerHandle, NatsMessage]] = {}
        self._held = 0  # delivered to this consumer and not yet settled
        self._requested = 0  # asked for in pull requests and not yet delivered
        self._pull_timer: asyncio.TimerHandle | None = None
        self._settlements: collections.deque[tuple[Msg, bool]] = collections.deque()
        self._settlements_scheduled = False
        self._closed = False
        self._failure: Exception | None = None
        self._inbox = ""
        self._sub = None
        self._pull_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self._topology.task_stream}.{self._topology.consumer_name(queue_name)}"
        self._run(self._start())

    def _run(self, coro):
        return self._connection.call(coro, self._operation_timeout_s)

    async def _start(self) -> None:
        await self._connection.ensure_consumer(self._queue_name)
        nc = self._connection.nc
        self._inbox = nc.new_inbox()
        self._sub = await nc.subscribe(self._inbox, cb=self._on_delivery, pending_msgs_limit=-1, pending_bytes_limit=-1)
        self._connection.add_reconnect_listener(self._reset_pulls)
        self._top_up()

    # -- event loop side ----------------------------------------------------

    def _top_up(self) -> None:
        """Ask the server for as many messages as there is room for."""
        if self._closed:
            return
        room = self._prefetch - self._held - self._requested
        # Wait for room for a sizeable batch unless nothing is requested at all.
        if room <= 0 or (self._requested and room < max(1, self._prefetch // 2)):
            return
        self._requested += room
        request = json.dumps({"batch": room, "expires": int(PULL_EXPIRES_S * 1e9)}).encode()
        asyncio.get_running_loop().create_task(self._send_pull(request))
        if self._pull_timer is not None:
            self._pull_timer.cancel()
        self._pull_timer = asyncio.get_running_loop().call_later(PULL_EXPIRES_S + _PULL_GRACE_S, self._reset_pulls)

    async def _send_pull(self, request: bytes) -> None:
        try:
            await self._connection.nc.publish(self._pull_subject, request, reply=self._inbox)
        except Exception:
            logger.warning("Could not send a pull request for queue %r.", self._queue_name, exc_info=True)

    def _reset_pulls(self) -> None:
        """Forget outstanding pull requests (the server lost them) and pull anew."""
        self._requested = 0
        self._top_up()

    async def _on_delivery(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status:
            self._on_status(status, msg)
            return
        self._requested = max(self._requested - 1, 0)
        self._held += 1
        self._connection.leases[msg.reply] = msg
        if self._closed:  # answering a pull sent before close(): hand it back
            self._hand_back(msg)
            return
        deliveries = msg.metadata.num_delivered
        if deliveries > self._max_deliveries:
            # A message that keeps killing its worker never gets to nack itself.
            await self._dead_letter_quietly(msg, msg.data, f"delivered {deliveries} times without being acknowledged")
            return
        try:
            message = Message.decode(msg.data)
        except DecodeError as e:
            await self._dead_letter_quietly(msg, msg.data, f"undecodable message: {e}")
            return
        wait = _seconds_until_due(msg)
        if wait > 0:  # a delayed message that fired early (SCHEDULE_LEAD_MS): held, and leased, until due
            self._not_due[msg.reply] = (
                asyncio.get_running_loop().call_later(wait, self._release_due, msg.reply),
                NatsMessage(message, msg),
            )
            return
        self._ready.put(NatsMessage(message, msg))

    def _release_due(self, reply: str) -> None:
        _, message = self._not_due.pop(reply)
        self._ready.put(message)

    def _on_status(self, status: str, msg: Msg) -> None:
        if status == "100":  # idle heartbeat / flow control
            return
        # 408 (request expired) and 409 (leadership change, max waiting, ...)
        # say how many of the request's messages will never come.
        unfulfilled = msg.headers.get(_PENDING_MESSAGES)
        if unfulfilled is not None:
            self._requested = max(self._requested - int(unfulfilled), 0)
        else:
            self._requested = 0
        if status == "409" and "Deleted" in msg.headers.get("Description", ""):
            self._connection.forget_consumer(self._queue_name)
            self._failure = ConnectionClosed(f"consumer for queue {self._queue_name!r} was deleted")
        self._top_up()

    def _settle(self, delivery: Msg) -> bool:
        """Release a held delivery; False if it was settled already."""
        if self._connection.leases.pop(delivery.reply, None) is None:
            return False
        self._held -= 1
        return True

    def _hand_back(self, delivery: Msg) -> None:
        # Handing back happens on the way out: no pulling more here, that
        # would only fetch messages to a consumer about to close.
        if self._settle(delivery):
            asyncio.get_running_loop().create_task(delivery.nak())

    def _settle_from_thread(self, delivery: Msg, *, ack: bool) -> None:
        """Queue an ack (or hand-back) for the loop; one wake-up serves a batch."""
        self._settlements.append((delivery, ack))
        if not self._settlements_scheduled:
            self._settlements_scheduled = True
            self._connection.loop.call_soon(self._drain_settlements)

    def _drain_settlements(self) -> None:
        self._settlements_scheduled = False  # before draining: a later append schedules anew
        batch = []
        while self._settlements:
            delivery, ack = self._settlements.popleft()
            if self._settle(delivery):
                batch.append((delivery, ack))
        if batch:
            asyncio.get_running_loop().create_task(self._send_settlements(batch))
        if any(ack for _, ack in batch):  # hand-backs come on the way out: pull no more for them
            self._top_up()

    @staticmethod
    async def _send_settlements(batch: list[tuple[Msg, bool]]) -> None:
        for delivery, ack in batch:
            try:
                await (delivery.ack() if ack else delivery.nak())
            except Exception:
                # Not acknowledged: JetStream redelivers it after the ack wait.
                logger.warning("Could not settle a delivery.", exc_info=True)

    async def _dead_letter(self, delivery: Msg, body: bytes, reason: str) -> None:
        """Publish to the dead-letter stream, then remove the original.

        If the publish fails the lease is kept (and renewed), so the caller can
        try again, or the message is redelivered should this process die.
        """
        meta = delivery.metadata
        headers = {
            # Re-trying the same dead-lettering must not store it twice.
            "Nats-Msg-Id": f"dead-{meta.sequence.stream}",
            "Natsq-Queue": self._queue_name,
            "Natsq-Reason": reason[:1000],
            "Natsq-Deliveries": str(meta.num_delivered),
        }
        await self._connection.publisher.publish(
            self._topology.dead_letter_subject(self._queue_name), body, headers, self._operation_timeout_s
        )
        if self._settle(delivery):
            await delivery.term()
            self._top_up()

    async def _dead_letter_quietly(self, delivery: Msg, body: bytes, reason: str) -> None:
        logger.error("Dead-lettering a message of queue %r: %s", self._queue_name, reason)
        try:
            await self._dead_letter(delivery, body, reason)
        except Exception:
            # Kept leased: released at close, then redelivered and tried again.
            logger.exception("Could not dead-letter a message of queue %r.", self._queue_name)

    async def _close(self) -> None:
        self._closed = True
        if self._pull_timer is not None:
            self._pull_timer.cancel()
        self._connection.remove_reconnect_listener(self._reset_pulls)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                logger.debug("Unsubscribe failed.", exc_info=True)
        # Hand back what no worker has started, so other workers get it now.
        for timer, message in self._not_due.values():
            timer.cancel()
            self._hand_back(message._delivery)
        self._not_due.clear()
        while True:
            try:
                self._hand_back(self._ready.get_nowait()._delivery)
            except queue.Empty:
                break

    # -- Dramatiq's Consumer interface (worker threads) -------------------------

    def ack(self, message: NatsMessage) -> None:
        if message._copy_unpublished:
            logger.warning("Handing back message %s: its retry could not be published.", message.message_id)
            self._settle_from_thread(message._delivery, ack=False)
            return
        self._settle_from_thread(message._delivery, ack=True)

    def nack(self, message: NatsMessage) -> None:
        reason = "failed"
        exception = getattr(message, "_exception", None)
        if exception is not None:
            reason = f"failed: {type(exception).__name__}: {exception}"
        self._run(self._dead_letter(message._delivery, message.encode(), reason))

    def requeue(self, messages: Iterable[NatsMessage]) -> None:
        for message in messages:
            self._settle_from_thread(message._delivery, ack=False)

    def __next__(self) -> NatsMessage | None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        try:
            return self._ready.get(timeout=self._timeout_s)
        except queue.Empty:
            return None

    def close(self) -> None:
        try:
            self._run(self._close())
        except Exception:
            logger.warning("Could not close the consumer of queue %r cleanly.", self._queue_name, exc_info=True)


def _seconds_until_due(delivery: Msg) -> float:
    """How long a delivery must wait before it runs (0 if it is due)."""
    due = delivery.headers.get(DUE_HEADER) if delivery.headers else None
    if due is None or not due.isdigit():
        return 0.0
    # Capped: a consumer whose clock is far behind the producer's must not
    # park a message for long; it fired SCHEDULE_LEAD_MS early at most.
    return min(int(due) / 1000 - time.time(), SCHEDULE_LEAD_MS / 1000)
