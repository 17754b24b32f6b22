"""Publishing to JetStream and waiting for its acknowledgement (PubAck), from any thread."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nats.errors
import nats.js.errors
from dramatiq.errors import BrokerError, ConnectionClosed
from nats.aio.msg import Msg

from .errors import PublishRejected

if TYPE_CHECKING:
    from .connection import Connection

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


@dataclass(eq=False)
class _Publish:
    subject: str
    payload: bytes
    headers: dict[str, str]
    timeout: float
    result: concurrent.futures.Future


class Publisher:
    """Publishes over the process's connection; one wildcard inbox receives every PubAck.

    nats-py's ``js.publish`` costs a task and a timer task per message; here
    a first attempt costs a future and a timer handle, and publishes from
    other threads reach the loop in batches, one wake-up for all of them.
    """

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._reply_prefix: str | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Future[bytes | None]] = {}
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
            try:
                token, waiting = await self._send(item.subject, item.payload, item.headers)
            except Exception:
                self._attempt_done()
                self._retry(item, deadline)
                continue
            timer = loop.call_later(min(item.timeout, ATTEMPT_TIMEOUT_S), waiting.cancel)
            waiting.add_done_callback(functools.partial(self._on_first_attempt, item, token, timer, deadline))

    def _on_first_attempt(self, item: _Publish, token: str, timer: asyncio.TimerHandle, deadline: float, waiting: asyncio.Future) -> None:
        timer.cancel()
        self._waiting.pop(token, None)
        self._attempt_done()
        try:
            item.result.set_result(_pub_ack(None if waiting.cancelled() else waiting.result()))
        except _RETRYABLE:
            self._retry(item, deadline)
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
          ConnectionClosed: JetStream did not acknowledge it in time.
          PublishRejected: JetStream refused it for good.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = 0.05
        while True:
            try:
                await self._ready()
                token, waiting = await self._send(subject, payload, headers)
                try:
                    async with asyncio.timeout(max(min(deadline - loop.time(), ATTEMPT_TIMEOUT_S), 0.01)):
                        response = await waiting
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
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except nats.errors.Error as e:
                raise broker_error(e) from None

    async def _ready(self) -> None:
        await self._connection.open()
        if self._reply_prefix is None:
            self._reply_prefix = self._connection.nc.new_inbox() + "."
            await self._connection.nc.subscribe(self._reply_prefix + "*", cb=self._on_reply)

    async def _send(self, subject: str, payload: bytes, headers: dict[str, str]) -> tuple[str, asyncio.Future]:
        token = str(next(self._tokens))
        waiting = asyncio.get_running_loop().create_future()
        self._waiting[token] = waiting
        try:
            await self._connection.nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
        except Exception:
            self._waiting.pop(token, None)
            raise
        return token, waiting

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._waiting.get(msg.subject[len(self._reply_prefix or "") :])
        if waiting is None or waiting.done():
            return
        no_responders = msg.headers and msg.headers.get("Status") == "503"
        waiting.set_result(None if no_responders else msg.data)


def broker_error(error: Exception) -> BrokerError:
    """The Dramatiq error a failed publish raises: permanent rejections apart from the rest."""
    if isinstance(error, BrokerError):
        return error
    if isinstance(error, (nats.js.errors.APIError, nats.errors.MaxPayloadError)):
        return PublishRejected(f"JetStream rejected the message: {error}")
    return ConnectionClosed(error)


def _pub_ack(response: bytes | None) -> dict[str, Any]:
    """The PubAck in a reply, or the error it stands for."""
    if response is None:  # timed out, or "503 No Responders": no stream leader is listening
        raise nats.js.errors.NoStreamResponseError
    ack = json.loads(response)
    error = ack.get("error")
    if error:
        nats.js.errors.APIError.from_error(error)  # raises the matching nats-py error
    return ack


def _copy_outcome(target: concurrent.futures.Future, source: asyncio.Future) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())
