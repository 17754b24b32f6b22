"""Publishing to JetStream and waiting for its acknowledgement (PubAck), from any thread."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from dramatiq.errors import BrokerError, ConnectionClosed
from nats.aio.msg import Msg

from .errors import PublishRejected, StorageFull

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)

#: Seconds one attempt waits for its PubAck before it is retried.
ATTEMPT_TIMEOUT_S = 2.0

#: First attempts written and not yet acknowledged, at most. The server acks
#: one connection's publishes in order (about 2,000/s with fsync on a slow
#: disk): without a window, the tail of a large batch would time out while
#: merely queued behind its predecessors, and its retries would pile on.
MAX_IN_FLIGHT = 512

#: Publish errors after which the outcome is unknown or the server is briefly
#: unavailable (reconnect, leader election): retried with the same Nats-Msg-Id,
#: so a publish that did land is de-duplicated rather than stored twice.
_RETRYABLE = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)

#: JetStream error codes that no retry can clear: no room (below), or the
#: message is larger than the stream's max_msg_size.
_REJECTED_ERR_CODES = frozenset({10054})
#: JetStream error codes for "no room": the account's JetStream limit is
#: reached (resource limits exceeded for account), the server's storage is
#: exhausted (insufficient resources, storage resources exceeded), or the
#: stream is full (store failed: maximum messages/bytes).
_FULL_ERR_CODES = frozenset({10002, 10023, 10047, 10077})


@dataclass(eq=False)
class _Publish:
    subject: str
    payload: bytes
    headers: dict[str, str]
    timeout: float
    result: concurrent.futures.Future


class _ReplyDispatch:
    """Hands every message of a subscription to ``handler`` from nats-py's reader itself.

    nats-py's ``subscribe(future=...)`` resolves the future inside its read loop, with no
    queue and no task in between; a subscription with ``cb`` instead queues each message for a
    task of its own, two more event-loop iterations per PubAck. This object stands in for that
    future and never completes, so every reply on the wildcard inbox reaches ``handler`` at once.
    ``handler`` runs inside the reader: it must not block, and its errors are logged here, as an
    exception would otherwise end the connection's read loop.
    """

    def __init__(self, handler: Callable[[Msg], None]) -> None:
        self._handler = handler

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        try:
            self._handler(msg)
        except Exception:
            logger.exception("Could not handle a PubAck.")


class Publisher:
    """Publishes over the process's connection; one wildcard inbox receives every PubAck.

    nats-py's ``js.publish`` costs a task and a timer task per message; here
    a first attempt costs a timer handle, publishes from other threads reach the
    loop in batches (one wake-up for all of them), and the PubAck settles the
    caller's future straight from the connection's reader.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._reply_prefix: str | None = None
        self._tokens = itertools.count()
        #: Reply token -> what to call with the reply (None: timed out).
        self._waiting: dict[str, Callable[[Msg | None], None]] = {}
        self._outbox: collections.deque[_Publish] = collections.deque()
        self._outbox_scheduled = False
        self._in_flight = 0

    def reset(self) -> None:
        """Forget the reply subscription (it belonged to a closed connection)."""
        self._reply_prefix = None

    # -- from other threads ----------------------------------------------------

    def submit(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> concurrent.futures.Future:
        """Publish from outside the loop thread; the future gets the PubAck."""
        result: concurrent.futures.Future = concurrent.futures.Future()
        self._outbox.append(_Publish(subject, payload, headers, timeout, result))
        if not self._outbox_scheduled:
            self._outbox_scheduled = True
            self._connection.loop.call_soon(self._drain_outbox)
        return result

    def _drain_outbox(self) -> None:
        # Reset before draining: an append that still saw True is drained below.
        self._outbox_scheduled = False
        batch = []
        while self._outbox and self._in_flight + len(batch) < MAX_IN_FLIGHT:
            item = self._outbox.popleft()
            if item.result.set_running_or_notify_cancel():
                batch.append(item)
        if batch:
            self._in_flight += len(batch)
            asyncio.get_running_loop().create_task(self._first_attempts(batch))

    def _attempt_done(self) -> None:
        """A first attempt left the window: let a waiting publish in."""
        self._in_flight -= 1
        if self._outbox and not self._outbox_scheduled:
            self._outbox_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_outbox)

    async def _first_attempts(self, batch: list[_Publish]) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._ready()
        except Exception as e:
            for item in batch:
                item.result.set_exception(broker_error(e))
                self._attempt_done()
            return
        for item in batch:
            deadline = loop.time() + item.timeout
            attempt = _FirstAttempt(self, item, deadline)
            try:
                attempt.token = await self._send(item.subject, item.payload, item.headers, attempt.settle)
            except PublishRejected as e:
                self._attempt_done()
                item.result.set_exception(e)
                continue
            except Exception:
                self._attempt_done()
                self._retry(item, deadline)
                continue
            attempt.timer = loop.call_later(min(item.timeout, ATTEMPT_TIMEOUT_S), attempt.settle, None)

    def _first_attempt_settled(self, attempt: _FirstAttempt, reply: Msg | None) -> None:
        self._waiting.pop(attempt.token, None)
        if reply is None:  # timed out
            self._withdraw(attempt.token)
        self._attempt_done()
        item = attempt.item
        try:
            item.result.set_result(_pub_ack(reply))
        except _RETRYABLE:
            self._retry(item, attempt.deadline)
        except PublishRejected as e:
            item.result.set_exception(e)
        except nats.errors.Error as e:
            item.result.set_exception(broker_error(e))

    def _retry(self, item: _Publish, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self.publish(item.subject, item.payload, item.headers, max(deadline - loop.time(), 0.01)))
        task.add_done_callback(functools.partial(_copy_outcome, item.result))

    # -- on the loop --------------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> dict[str, Any]:
        """Publish until JetStream acknowledges it, or ``timeout`` seconds pass.

        Returns the PubAck (``stream``, ``seq``, ``duplicate``).

        Raises:
          PublishRejected: It can never be stored (too large; StorageFull: no room).
          ConnectionClosed: JetStream did not acknowledge it in time, or rejected it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = 0.05
        while True:
            try:
                await self._ready()
                waiting: asyncio.Future[Msg | None] = loop.create_future()
                token = await self._send(subject, payload, headers, functools.partial(_settle_once, waiting))
                try:
                    async with asyncio.timeout(max(min(deadline - loop.time(), ATTEMPT_TIMEOUT_S), 0.01)):
                        response = await waiting
                except BaseException:
                    self._withdraw(token)
                    raise
                finally:
                    self._waiting.pop(token, None)
                return _pub_ack(response)
            except _RETRYABLE as e:
                if self._connection.nc is None or self._connection.nc.is_closed:
                    raise ConnectionClosed(e) from None
                if loop.time() + backoff >= deadline:
                    raise ConnectionClosed(
                        f"JetStream did not acknowledge a publish to {subject} within {timeout} s: {e!r}"
                    ) from None
                if isinstance(e, nats.errors.NoRespondersError):
                    # No stream listens: it was deleted, or a restart lost it.
                    await self._declare_streams_quietly()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except nats.errors.Error as e:
                raise broker_error(e) from None

    async def _declare_streams_quietly(self) -> None:
        try:
            await self._connection.declare_streams()
        except Exception:
            pass  # logged where declared; the retry loop tries again

    async def _ready(self) -> None:
        await self._connection.open()
        if self._reply_prefix is None:
            self._reply_prefix = self._connection.nc.new_inbox() + "."
            await self._connection.nc.subscribe(self._reply_prefix + "*", future=_ReplyDispatch(self._on_reply))

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str],
                    on_reply: Callable[[Msg | None], None]) -> str:
        """Publish with a reply token; ``on_reply`` gets the reply. Returns the token."""
        nc = self._connection.nc
        if not nc.is_connected:
            # nats-py would buffer it and send it after the reconnect, maybe
            # long after the caller was told it failed: a publish that raised
            # must not be stored later behind its back.
            raise nats.errors.ConnectionReconnectingError
        # The server counts headers too, and answers a larger message by
        # closing the connection.
        size = len(payload) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 12
        if size > nc.max_payload:
            raise PublishRejected(f"message of {size} bytes exceeds the server's max_payload of {nc.max_payload} bytes")
        token = str(next(self._tokens))
        self._waiting[token] = on_reply
        try:
            await nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
        except Exception:
            self._waiting.pop(token, None)
            raise
        return token

    def _withdraw(self, token: str) -> None:
        """Take an unanswered attempt out of nats-py's reconnect buffer, if it is still there.

        A publish written while the client had not yet noticed a dropped
        connection stays in that buffer and is sent after the reconnect, maybe
        long after its caller was told it failed. Withdrawn, a publish that
        raised is one that was not stored. (nats-py has no API for this: the
        buffer is its private list of protocol commands.)
        """
        nc = self._connection.nc
        pending = getattr(nc, "_pending", None)
        if nc is None or nc.is_connected or not pending:
            return
        reply = (self._reply_prefix or "").encode() + token.encode()
        for command in list(pending):
            words = command.split(b"\r\n", 1)[0].split(b" ")
            if len(words) > 2 and words[0] in (b"PUB", b"HPUB") and words[2] == reply:
                pending.remove(command)
                nc._pending_data_size -= len(command)

    def _on_reply(self, msg: Msg) -> None:
        on_reply = self._waiting.pop(msg.subject[len(self._reply_prefix or "") :], None)
        if on_reply is not None:  # else settled already (timed out)
            on_reply(msg)


class _FirstAttempt:
    """A first attempt in flight: settled once, by its PubAck or by its timer."""

    __slots__ = ("publisher", "item", "deadline", "token", "timer", "settled")

    def __init__(self, publisher: Publisher, item: _Publish, deadline: float) -> None:
        self.publisher, self.item, self.deadline = publisher, item, deadline
        self.token = ""
        self.timer: asyncio.TimerHandle | None = None
        self.settled = False

    def settle(self, reply: Msg | None) -> None:
        if self.settled:
            return
        self.settled = True
        if self.timer is not None:
            self.timer.cancel()
        self.publisher._first_attempt_settled(self, reply)


def _settle_once(waiting: asyncio.Future, reply: Msg | None) -> None:
    if not waiting.done():
        waiting.set_result(reply)


def broker_error(error: Exception) -> BrokerError:
    """The Dramatiq error a failed publish raises: permanent rejections apart from the rest."""
    if isinstance(error, BrokerError):
        return error
    if isinstance(error, nats.errors.MaxPayloadError):
        return PublishRejected(f"the message exceeds the server's max_payload: {error}")
    return ConnectionClosed(error)


def _pub_ack(reply: Msg | None) -> dict[str, Any]:
    """The PubAck in a reply, or the error it stands for."""
    if reply is None:  # timed out
        raise nats.js.errors.NoStreamResponseError
    if reply.headers and reply.headers.get("Status") == "503":  # no stream listens on the subject
        raise nats.errors.NoRespondersError
    ack = json.loads(reply.data)
    error = ack.get("error")
    if error:
        if error.get("err_code") in _FULL_ERR_CODES:
            raise StorageFull(f"JetStream has no room for the message: {error.get('description')}")
        if error.get("err_code") in _REJECTED_ERR_CODES:
            raise PublishRejected(f"JetStream refused the message: {error.get('description')}")
        nats.js.errors.APIError.from_error(error)  # raises the matching nats-py error
    return ack


def _copy_outcome(target: concurrent.futures.Future, source: asyncio.Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
