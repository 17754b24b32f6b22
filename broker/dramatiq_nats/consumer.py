"""The Dramatiq consumer: a continuous JetStream pull that keeps ``prefetch`` messages at hand."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import time
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.errors import BrokerConnectionError, ConnectionClosed, DecodeError, QueueNotFound
from dramatiq.message import Message
from nats.aio.msg import Msg

from . import followups, repeating
from .connection import Connection
from .errors import PublishRejected
from .handbacks import HandBacks
from .topology import DUE_HEADER, SCHEDULE_LEAD_MS

logger = logging.getLogger(__name__)

#: How long one pull request waits on the server (seconds). Messages arrive
#: the moment they are published, whatever this is; it bounds how long a lost
#: pull request (server restart, leader change) can go unnoticed.
PULL_EXPIRES_S = 5.0

#: Seconds to wait on top of PULL_EXPIRES_S for the server's expiry notice
#: before assuming the outstanding pull requests are gone.
_PULL_GRACE_S = 2.0

#: Seconds a message whose dead-lettering failed waits before it is
#: redelivered (and dead-lettered again).
DEAD_LETTER_RETRY_DELAY_S = 5.0

#: Longest pause (seconds) between attempts to publish a delivery's follow-up
#: messages while NATS is unavailable.
_FOLLOW_UP_MAX_BACKOFF_S = 5.0

#: Seconds before a suspect (see ``NatsConsumer._count_runs``) handed back
#: because the consumer already runs one comes again; doubled with each of
#: its hand-backs, up to the maximum.
SUSPECT_DEFER_MIN_S = 0.5
SUSPECT_DEFER_MAX_S = 5.0

#: Seconds past which nats-server stops serving a pull request whose
#: subscriber is gone (it allows 250 ms for the unsubscribe to propagate).
_RECENT_PULL_GRACE_S = 0.3

#: Back-off before pulling again after the server refused a pull request
#: (seconds, doubled after each refusal in a row, up to the maximum).
PULL_BACKOFF_MIN_S = 0.1
PULL_BACKOFF_MAX_S = 5.0

_STATUS = "Status"
_PENDING_MESSAGES = "Nats-Pending-Messages"


class NatsMessage(MessageProxy):
    """A Dramatiq message together with the JetStream delivery it came from."""

    def __init__(self, message: Message, delivery: Msg, consumer: NatsConsumer) -> None:
        super().__init__(message)
        self._delivery = delivery
        # Settled through the consumer that fetched it, whichever consumer
        # Dramatiq's thread holds by then: its prefetch accounting is the one
        # this delivery counts against.
        self._consumer = consumer
        #: Follow-up publishes (subject, body, headers) that may not be stored.
        self._unpublished: list[tuple[str, bytes, dict[str, str]]] = []
        #: The backoff of its retry copy, should it be handed back instead.
        self._retry_delay_ms = 0
        self._dead_letter_reason: str | None = None

    def follow_ups_failed(
        self,
        message: Message,
        publishes: list[tuple[str, bytes, dict[str, str]]],
        error: Exception,
        delay_ms: int | None,
    ) -> None:
        """An enqueue made while this delivery was being finished failed.

        An error that clears (connection) keeps the publishes to retry under
        their Nats-Msg-Id before the delivery is acknowledged; one that never
        clears (too large, store full, undeclared queue) fails the delivery,
        so that it is dead-lettered with the reason.
        """
        if isinstance(error, (PublishRejected, QueueNotFound)):
            self.fail()
            self._dead_letter_reason = f"a follow-up message could not be published: {error}"
            return
        self._unpublished.extend(publishes)
        if message.message_id == self.message_id:  # Retries' copy of this very message
            self._retry_delay_ms = max(self._retry_delay_ms, delay_ms or 0)


class DeadLettered(Exception):
    """Stuffed into a message the broker dead-letters itself, for ``after_nack`` middleware."""


class NatsConsumer(Consumer):
    """Consumes one queue through its durable pull consumer.

    Pull requests are kept outstanding so that ``prefetch`` messages are held
    at most; a message reaches ``__next__`` as soon as the server delivers it.
    A refused pull request is retried with back-off, and a consumer that went
    missing (deleted, or lost with its stream) is declared again.
    ``ack``/``nack``/``requeue`` arrive from Dramatiq's worker threads and are
    handed to the event loop.
    """

    def __init__(
        self,
        connection: Connection,
        queue_name: str,
        *,
        broker: Broker,
        prefetch: int,
        timeout_ms: int,
        max_deliveries: int,
        operation_timeout_s: float,
    ) -> None:
        self._connection = connection
        self._topology = connection.topology
        self._broker = broker
        self._queue_name = queue_name
        self._prefetch = max(prefetch, 1)
        self._timeout_s = timeout_ms / 1000
        self._max_deliveries = max_deliveries
        self._operation_timeout_s = operation_timeout_s
        self._hand_backs = HandBacks(connection)
        self._ready: queue.SimpleQueue[NatsMessage] = queue.SimpleQueue()
        self._not_due: dict[str, tuple[asyncio.TimerHandle, NatsMessage]] = {}
        self._held = 0  # delivered to this consumer, not yet settled, and holding a prefetch slot
        self._unslotted: set[str] = set()  # held without a slot: being dead-lettered
        self._suspect: str | None = None  # the one suspect this consumer holds, by reply subject
        self._requested = 0  # asked for in pull requests and not yet delivered
        self._pull_timer: asyncio.TimerHandle | None = None
        self._pull_backoff_s = 0.0
        self._pull_retry: asyncio.TimerHandle | None = None  # waiting out the back-off
        self._pull_again_task: asyncio.Task[None] | None = None
        self._repair_needed = False
        self._settlements: collections.deque[Msg] = collections.deque()
        self._settlements_scheduled = False
        self._follow_up_tasks: set[asyncio.Task[None]] = set()
        self._dead_letter_tasks: set[asyncio.Task[None]] = set()
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
        self._connection.add_listener(self)
        self._top_up()

    # -- event loop side ----------------------------------------------------

    def _top_up(self) -> None:
        """Ask the server for as many messages as there is room for."""
        if self._closed or self._pull_retry is not None or self._pull_again_task is not None:
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

    def _pull_again_after(self, delay_s: float) -> None:
        """Pull anew (declaring the consumer again first if needed) after a delay."""
        if self._closed or self._pull_again_task is not None:
            return  # the one in progress pulls when done
        if self._pull_retry is not None:
            if delay_s:
                return
            self._pull_retry.cancel()
        self._pull_retry = asyncio.get_running_loop().call_later(delay_s, self._start_pulling_again)

    def _start_pulling_again(self) -> None:
        self._pull_retry = None
        self._pull_again_task = asyncio.get_running_loop().create_task(self._pull_again())

    async def _pull_again(self) -> None:
        try:
            if self._repair_needed:
                self._connection.forget_consumer(self._queue_name)
                await self._connection.ensure_consumer(self._queue_name)
                self._repair_needed = False
                logger.info("Declared the consumer of queue %r again.", self._queue_name)
        except Exception as e:
            self._pull_again_task = None
            self._pull_again_after(self._next_pull_backoff())
            logger.warning("Could not declare the consumer of queue %r again: %s", self._queue_name, e)
            return
        self._pull_again_task = None
        self._reset_pulls()

    def _next_pull_backoff(self) -> float:
        self._pull_backoff_s = min(max(self._pull_backoff_s * 2, PULL_BACKOFF_MIN_S), PULL_BACKOFF_MAX_S)
        return self._pull_backoff_s

    # -- connection events (ConnectionListener) --------------------------------

    def client_reconnected(self) -> None:
        # The server may have lost the consumer (a memory stream after a
        # restart) and surely lost the pull requests.
        self._repair_needed = True
        self._pull_again_after(0)

    def client_closed(self, error: ConnectionClosed) -> None:
        # Dramatiq's consumer thread gets the error on its next call, closes
        # this consumer and builds a new one on the new client.
        self._failure = error
        self._closed = True
        self._suspect = None
        for timer in (self._pull_timer, self._pull_retry):
            if timer is not None:
                timer.cancel()
        # Their leases went with the client: no worker may start them now.
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break

    async def _on_delivery(self, msg: Msg) -> None:
        status = msg.headers.get(_STATUS) if msg.headers else None
        if status:
            self._on_status(status, msg)
            return
        self._requested = max(self._requested - 1, 0)
        self._pull_backoff_s = 0.0
        self._held += 1
        self._connection.leases[msg.reply] = msg
        if msg.metadata.num_delivered > 1:
            # Redelivered (rare): count its runs without holding up the deliveries behind it.
            self._spawn(self._dead_letter_tasks, self._count_runs(msg))
            return
        self._accept(msg)

    def _accept(self, msg: Msg) -> None:
        if self._closed:  # answering a pull sent before close(): hand it back
            self._spawn(self._dead_letter_tasks, self._hand_back(msg))
            return
        try:
            message = repeating.one_firing(Message.decode(msg.data), msg)
        except DecodeError as e:
            self._spawn(self._dead_letter_tasks, self._dead_letter(msg, msg.data, f"undecodable message: {e}"))
            return
        wait = _seconds_until_due(msg)
        if wait > 0:  # a delayed message that fired early (SCHEDULE_LEAD_MS): held, and leased, until due
            self._not_due[msg.reply] = (
                asyncio.get_running_loop().call_later(wait, self._release_due, msg.reply),
                NatsMessage(message, msg, self),
            )
            return
        self._ready.put(NatsMessage(message, msg, self))

    def _release_due(self, reply: str) -> None:
        _, message = self._not_due.pop(reply)
        self._ready.put(message)

    async def _count_runs(self, msg: Msg) -> None:
        """Accept a redelivered message, run it alone, or dead-letter it, by its runs.

        Only runs count: deliveries minus the times it was handed back unrun.
        A message on its second run or later is a suspect: an earlier run
        ended with no ack, nack or hand-back, as when a task kills its process.
        A consumer runs one suspect at a time and hands the others back for
        later, so a message that kills its process does not take other
        suspects down with it run after run: only its own runs add up, and it
        is dead-lettered when it arrives for run ``max_deliveries + 1`` (it
        never gets to nack itself).

        While it waits here for its turn it counts as handed back: if the
        process dies meanwhile (a suspect of another queue, a first run that
        crashes), this delivery is no run. The count is withdrawn when it runs.
        """
        meta = msg.metadata
        seq = meta.sequence.stream
        recorded = await self._hand_backs.record(seq)
        # Unrecorded (NATS unreachable): every delivery counts, as if never handed back.
        runs = meta.num_delivered - (recorded - 1 if recorded is not None else 0)
        if runs <= self._max_deliveries:
            if runs > 1:
                if self._suspect is not None:
                    delay_s = min(SUSPECT_DEFER_MIN_S * 2 ** max((recorded or 0) - 1, 0), SUSPECT_DEFER_MAX_S)
                    await self._hand_back(msg, delay_s, recorded=recorded is not None)
                    self._top_up()
                    return
                self._suspect = msg.reply
            if recorded is not None:
                await self._hand_backs.withdraw(seq)
            self._accept(msg)
            return
        reason = f"delivered {runs} times without being acknowledged"
        try:
            message = NatsMessage(Message.decode(msg.data), msg, self)
        except DecodeError:
            await self._dead_letter(msg, msg.data, reason)
            return
        await self._dead_letter_announced(message, reason)

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
        if status == "408":  # the request expired: the normal end of an idle pull
            self._pull_backoff_s = 0.0
            self._top_up()
            return
        # Pulling again at once would spin: 503 (no responders: the consumer
        # or its stream is gone, or JetStream is not up yet) and 409 (consumer
        # deleted, leadership change, a limit) come back immediately.
        description = msg.headers.get("Description", "").split("\n")[0]
        if status == "503" or "Deleted" in description:
            self._repair_needed = True
        delay = self._next_pull_backoff()
        logger.warning(
            "Pull request for queue %r refused (%s %s); pulling again in %.1f s.",
            self._queue_name, status, description, delay,
        )
        self._pull_again_after(delay)

    def _spawn(self, tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _settle(self, delivery: Msg) -> bool:
        """Release a held delivery; False if it was settled already."""
        if self._connection.leases.pop(delivery.reply, None) is None:
            return False
        if delivery.reply == self._suspect:
            self._suspect = None
        if delivery.reply in self._unslotted:
            self._unslotted.discard(delivery.reply)
        else:
            self._held -= 1
        return True

    def _release_slot(self, delivery: Msg) -> None:
        """Let another message take a held delivery's prefetch slot; its lease is still renewed."""
        if delivery.reply in self._connection.leases and delivery.reply not in self._unslotted:
            self._unslotted.add(delivery.reply)
            self._held -= 1
            self._top_up()

    async def _hand_back(self, delivery: Msg, delay_s: float = 0, *, recorded: bool = False) -> None:
        """Give a delivery back unrun; it does not count as one of its runs (``recorded``: counted already)."""
        # No pulling more here: hand-backs happen on the way out, pulling
        # would only fetch messages to a consumer about to close.
        if not self._settle(delivery):
            return
        if self._requested:
            # nats-server still serves a pull request for 250 ms after its
            # subscriber left: handed back at once, the message could go to
            # this closing consumer again, and be stuck until the ack wait.
            delay_s = max(delay_s, _RECENT_PULL_GRACE_S)
        if not recorded:
            await self._hand_backs.record(delivery.metadata.sequence.stream)
        try:
            await delivery.nak(delay=delay_s or None)
        except Exception:
            # Not handed back: JetStream redelivers it after the ack wait.
            logger.warning("Could not hand back a delivery.", exc_info=True)

    def _soon(self, callback: Callable[..., None], *args: Any) -> None:
        """From a worker thread: ``callback(*args)`` on the loop, unless the broker was closed."""
        if self._connection.call_soon(callback, *args):
            return
        for arg in args:
            if asyncio.iscoroutine(arg):
                arg.close()  # never started
        logger.warning(
            "Could not settle a message of queue %r: the broker was closed. "
            "JetStream redelivers it after its ack wait.", self._queue_name,
        )

    def _ack_from_thread(self, delivery: Msg) -> None:
        """Queue an ack for the loop; one wake-up serves a batch."""
        self._settlements.append(delivery)
        if not self._settlements_scheduled:
            self._settlements_scheduled = True
            self._soon(self._drain_settlements)

    def _drain_settlements(self) -> None:
        self._settlements_scheduled = False  # before draining: a later append schedules anew
        batch = []
        while self._settlements:
            delivery = self._settlements.popleft()
            if self._settle(delivery):
                batch.append(delivery)
        if batch:
            asyncio.get_running_loop().create_task(self._send_acks(batch))
            self._top_up()

    @staticmethod
    async def _send_acks(batch: list[Msg]) -> None:
        for delivery in batch:
            try:
                await delivery.ack()
            except Exception:
                # Not acknowledged: JetStream redelivers it after the ack wait.
                logger.warning("Could not acknowledge a delivery.", exc_info=True)

    async def _finish_after_follow_ups(self, message: NatsMessage, nacked_for: str | None = None) -> None:
        """Publish the follow-ups that failed, under their own ids, until stored; then settle.

        Settling means acking, or dead-lettering if the worker nacked it
        (``nacked_for``: the reason) or a follow-up can never be stored. The
        delivery stays leased meanwhile. Closing the consumer hands it back
        after its retry's backoff, so it runs again when its retry copy would
        have.
        """
        backoff = 0.1
        rejected = None
        try:
            for subject, body, headers in message._unpublished:
                while True:
                    try:
                        await self._connection.publisher.publish(subject, body, headers, self._operation_timeout_s)
                        break
                    except PublishRejected as e:
                        rejected = f"a follow-up message could not be published: {e}"
                        break
                    except BrokerConnectionError as e:
                        logger.warning("Follow-up of message %s not stored yet (%s); retrying.", message.message_id, e)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, _FOLLOW_UP_MAX_BACKOFF_S)
        except asyncio.CancelledError:
            await self._hand_back(message._delivery, message._retry_delay_ms / 1000)
            raise
        if nacked_for is not None:  # Dramatiq ran the nack hooks already
            await self._dead_letter(message._delivery, message.encode(), nacked_for)
        elif rejected is not None:
            await self._dead_letter_announced(message, rejected)
        elif self._settle(message._delivery):
            await message._delivery.ack()
            self._top_up()

    async def _dead_letter(self, delivery: Msg, body: bytes, reason: str) -> bool:
        """Publish to the dead-letter stream, then remove the original; True when done.

        Its prefetch slot is released at once. If the publish fails, the
        message is handed back with a delay and dead-lettered when it comes
        again (a message a worker failed runs again first).
        """
        logger.error("Dead-lettering a message of queue %r: %s", self._queue_name, reason)
        self._release_slot(delivery)
        meta = delivery.metadata
        headers = {
            # Re-trying the same dead-lettering must not store it twice.
            "Nats-Msg-Id": f"dead-{meta.sequence.stream}",
            "Natsq-Queue": self._queue_name,
            "Natsq-Reason": reason[:1000],
            "Natsq-Deliveries": str(meta.num_delivered),
        }
        try:
            await self._connection.publisher.publish(
                self._topology.dead_letter_subject(self._queue_name), body, headers, self._operation_timeout_s
            )
        except Exception:
            logger.exception(
                "Could not dead-letter a message of queue %r; it comes back in %s s.",
                self._queue_name,
                DEAD_LETTER_RETRY_DELAY_S,
            )
            if self._settle(delivery):
                try:
                    await delivery.nak(delay=DEAD_LETTER_RETRY_DELAY_S)
                except Exception:
                    logger.warning("Could not hand back a delivery.", exc_info=True)
            return False
        if self._settle(delivery):
            await delivery.term()
        return True

    async def _dead_letter_announced(self, message: NatsMessage, reason: str) -> None:
        """Dead-letter a decodable message the worker never nacked, with Dramatiq's nack hooks.

        Middleware may block (it records state elsewhere): it runs in a thread.
        """
        loop = asyncio.get_running_loop()
        message.stuff_exception(DeadLettered(reason))
        await loop.run_in_executor(None, self._broker.emit_before, "nack", message)
        if await self._dead_letter(message._delivery, message.encode(), reason):
            await loop.run_in_executor(None, self._broker.emit_after, "nack", message)

    async def _close(self) -> None:
        self._closed = True
        for timer in (self._pull_timer, self._pull_retry):
            if timer is not None:
                timer.cancel()
        self._connection.remove_listener(self)
        if self._sub is not None:
            try:
                await self._sub.unsubscribe()
            except Exception:
                logger.debug("Unsubscribe failed.", exc_info=True)
        # Deliveries whose follow-ups are still not stored are handed back.
        for task in self._follow_up_tasks:
            task.cancel()
        # Hand back what no worker has started, so other workers get it now.
        hand_backs = []
        for timer, message in self._not_due.values():
            timer.cancel()
            hand_backs.append(self._hand_back(message._delivery))
        self._not_due.clear()
        while True:
            try:
                hand_backs.append(self._hand_back(self._ready.get_nowait()._delivery))
            except queue.Empty:
                break
        await asyncio.gather(*hand_backs)
        pending = self._follow_up_tasks | self._dead_letter_tasks
        if pending:
            await asyncio.wait(pending, timeout=self._operation_timeout_s / 2)

    # -- Dramatiq's Consumer interface (worker threads) -------------------------

    def ack(self, message: NatsMessage) -> None:
        if message._consumer is not self:  # fetched by a consumer Dramatiq has since replaced
            message._consumer.ack(message)
            return
        followups.finished()
        if message._unpublished:
            logger.warning("Message %s waits for its follow-up messages to be stored.", message.message_id)
            self._soon(self._spawn, self._follow_up_tasks, self._finish_after_follow_ups(message))
            return
        self._ack_from_thread(message._delivery)

    def nack(self, message: NatsMessage) -> None:
        if message._consumer is not self:
            message._consumer.nack(message)
            return
        followups.finished()
        reason = message._dead_letter_reason
        if reason is None:
            exception = getattr(message, "_exception", None)
            reason = "failed" if exception is None else f"failed: {type(exception).__name__}: {exception}"
        if message._unpublished:  # an on_retry_exhausted handler, say: stored before the dead letter
            finish = self._finish_after_follow_ups(message, nacked_for=reason)
            self._soon(self._spawn, self._follow_up_tasks, finish)
            return
        # In a task of its own: a slow or failing dead-letter publish holds up neither this
        # worker thread nor the deliveries behind it.
        self._soon(self._spawn, self._dead_letter_tasks, self._dead_letter(message._delivery, message.encode(), reason))

    def requeue(self, messages: Iterable[NatsMessage]) -> None:
        # Dramatiq requeues only on its way to close(): pull no more, or the
        # server would hand these very messages back to this consumer.
        self._closed = True
        messages = list(messages)

        async def hand_back_all() -> None:
            # Each through the consumer that fetched it (see NatsMessage._consumer).
            await asyncio.gather(*(message._consumer._hand_back(message._delivery) for message in messages))

        self._run(hand_back_all())

    def __next__(self) -> NatsMessage | None:
        if self._failure is not None:
            raise self._failure
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
