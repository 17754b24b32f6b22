"""One NATS connection per process: connect, publish with retries, keep leases alive."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import json
import logging
import ssl
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from dramatiq.errors import ConnectionClosed, ConnectionFailed
from nats.aio.msg import Msg

from ._loop import EventLoopThread
from .topology import Topology

logger = logging.getLogger(__name__)

#: Oldest nats-server with message schedules (ADR-51), which delays rely on.
MIN_SERVER_VERSION = (2, 12)

#: Publish errors after which the outcome is unknown or the server is briefly
#: unavailable (reconnect, leader election): retried with the same Nats-Msg-Id,
#: so a publish that did land is de-duplicated rather than stored twice.
_RETRYABLE_PUBLISH_ERRORS = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


class ServerTooOld(ConnectionFailed):
    """The connected nats-server lacks a feature the broker needs."""


class Connection:
    """The NATS connection of one process, and the deliveries it holds.

    Every delivery this process holds (prefetched or running) is a *lease*:
    a heartbeat renews them all with ``+WPI`` well inside the ack wait, so a
    task that outlives the ack wait still runs once, while a process that dies
    stops renewing and its messages are redelivered after one ack wait.
    """

    def __init__(
        self,
        loop: EventLoopThread,
        topology: Topology,
        connect_options: dict[str, Any],
    ) -> None:
        self.loop = loop
        self.topology = topology
        self._connect_options = connect_options
        self.nc: nats.NATS | None = None
        self.js: Any = None
        self.leases: dict[str, Msg] = {}
        self._ensured_consumers: set[str] = set()
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._opening: asyncio.Lock | None = None
        self._reply_prefix: str | None = None
        self._reply_tokens = itertools.count()
        self._pub_acks: dict[str, asyncio.Future[bytes | None]] = {}
        self._outbox: collections.deque[tuple[str, bytes, dict[str, str], float, concurrent.futures.Future[Any]]] = (
            collections.deque()
        )
        self._outbox_scheduled = False

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        """Connect (once) and declare the streams."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self.nc is not None and not self.nc.is_closed:
                return
            try:
                # nats-py retries a failed first connection as often as it
                # reconnects (forever here): bound it by the connect timeout.
                nc = await asyncio.wait_for(
                    nats.connect(
                        **self._connect_options,
                        reconnected_cb=self._on_reconnected,
                        disconnected_cb=self._on_disconnected,
                        error_cb=self._on_error,
                    ),
                    self._connect_options["connect_timeout"] * len(self._connect_options["servers"]) + 0.5,
                )
            except Exception as e:  # nats-py raises many unrelated types here
                raise ConnectionFailed(f"cannot connect to NATS at {self._connect_options['servers']}: {e}") from None
            version = nc.connected_server_version
            if (version.major, version.minor) < MIN_SERVER_VERSION:
                await nc.close()
                needed = ".".join(map(str, MIN_SERVER_VERSION))
                raise ServerTooOld(
                    f"nats-server {version} is too old: delayed messages need message schedules, "
                    f"available from nats-server {needed}"
                )
            self.nc, self.js = nc, nc.jetstream()
            self._reply_prefix = None
            self._ensured_consumers.clear()
            try:
                await self._declare_stream(self.topology.task_stream_config())
                await self._declare_stream(self.topology.dead_letter_stream_config())
            except nats.errors.Error as e:
                await nc.close()
                self.nc = None
                raise ConnectionFailed(f"cannot declare JetStream streams: {e}") from None
            self._heartbeat = asyncio.get_running_loop().create_task(self._renew_leases())

    async def _declare_stream(self, config: Any) -> None:
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError:
            # It exists with other settings: bring the editable ones in line.
            await self.js.update_stream(config)

    async def ensure_consumer(self, queue_name: str) -> None:
        """Create or update the durable consumer of a queue (once per connection)."""
        await self.open()
        if queue_name in self._ensured_consumers:
            return
        await self.js.add_consumer(self.topology.task_stream, self.topology.consumer_config(queue_name))
        self._ensured_consumers.add(queue_name)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def forget_consumer(self, queue_name: str) -> None:
        """Declare the queue's consumer again on next use (it was deleted)."""
        self._ensured_consumers.discard(queue_name)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.flush(timeout=2)  # acks are fire-and-forget: send them before leaving
            except Exception:
                logger.warning("Could not flush pending acks before closing.", exc_info=True)
            await nc.close()

    def add_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect_listeners.append(listener)

    def remove_reconnect_listener(self, listener: Callable[[], None]) -> None:
        self._reconnect_listeners.remove(listener)

    async def _on_reconnected(self) -> None:
        logger.info("Reconnected to NATS at %s.", self.nc.connected_url.netloc if self.nc else "?")
        for listener in list(self._reconnect_listeners):
            listener()

    async def _on_disconnected(self) -> None:
        if self.nc is None:  # closing on purpose
            return
        logger.warning("Disconnected from NATS; reconnecting.")

    async def _on_error(self, error: Exception) -> None:
        logger.warning("NATS connection error: %s", error)

    # -- operations --------------------------------------------------------

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> dict[str, Any]:
        """Publish until JetStream acknowledges it, or ``timeout`` seconds pass.

        Returns the PubAck (``stream``, ``seq``, ``duplicate``).
        """
        await self.open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        backoff = 0.05
        while True:
            remaining = deadline - loop.time()
            try:
                return await self._publish_once(subject, payload, headers, max(min(remaining, 2.0), 0.01))
            except _RETRYABLE_PUBLISH_ERRORS as e:
                if self.nc is None or self.nc.is_closed:
                    raise ConnectionClosed(e) from None
                if loop.time() + backoff >= deadline:
                    raise ConnectionClosed(
                        f"JetStream did not acknowledge a publish to {subject} within {timeout} s: {e!r}"
                    ) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            except nats.errors.Error as e:
                raise ConnectionClosed(e) from None

    def publish_threadsafe(
        self, subject: str, payload: bytes, headers: dict[str, str], timeout: float
    ) -> concurrent.futures.Future[dict[str, Any]]:
        """``publish`` for callers outside the loop thread.

        Publishes from many threads are queued and handed to the loop in
        batches: one wake-up of the loop thread serves them all, which is
        what makes enqueueing from many threads scale.
        """
        result: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        self._outbox.append((subject, payload, headers, timeout, result))
        if not self._outbox_scheduled:
            self._outbox_scheduled = True
            self.loop.call_soon(self._drain_outbox)
        return result

    def _drain_outbox(self) -> None:
        # Reset before draining: an append that sees True is drained below.
        self._outbox_scheduled = False
        batch = []
        while self._outbox:
            item = self._outbox.popleft()
            if item[-1].set_running_or_notify_cancel():
                batch.append(item)
        if batch:
            asyncio.get_running_loop().create_task(self._publish_batch(batch))

    async def _publish_batch(self, batch: list[tuple[str, bytes, dict[str, str], float, concurrent.futures.Future[Any]]]) -> None:
        """Write a batch of publishes; each PubAck settles its caller's future.

        The first attempt costs no task per message; a publish whose first
        attempt times out or finds JetStream unavailable is retried by
        ``publish`` (same Nats-Msg-Id) until its own deadline.
        """
        loop = asyncio.get_running_loop()
        try:
            await self.open()
            await self._subscribe_pub_acks()
        except Exception as e:
            for *_, result in batch:
                result.set_exception(e)
            return
        for item in batch:
            subject, payload, headers, timeout, result = item
            token = str(next(self._reply_tokens))
            future: asyncio.Future[bytes | None] = loop.create_future()
            self._pub_acks[token] = future
            try:
                await self.nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
            except Exception:
                self._pub_acks.pop(token, None)
                self._retry_publish(item, loop.time() + timeout)
                continue
            timer = loop.call_later(min(timeout, 2.0), future.cancel)
            future.add_done_callback(
                functools.partial(self._on_first_attempt, item, token, timer, loop.time() + timeout)
            )

    def _on_first_attempt(self, item: tuple, token: str, timer: asyncio.TimerHandle, deadline: float, future: asyncio.Future) -> None:
        timer.cancel()
        self._pub_acks.pop(token, None)
        result = item[-1]
        if not future.cancelled() and future.result() is not None:
            ack = json.loads(future.result())
            error = ack.get("error")
            if not error:
                result.set_result(ack)
                return
            if error.get("code") != 503:
                result.set_exception(ConnectionClosed(f"JetStream rejected the message: {error.get('description', error)}"))
                return
        self._retry_publish(item, deadline)

    def _retry_publish(self, item: tuple, deadline: float) -> None:
        subject, payload, headers, _, result = item
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.01)
        task = asyncio.get_running_loop().create_task(self.publish(subject, payload, headers, remaining))
        task.add_done_callback(functools.partial(_copy_outcome, result))

    async def _subscribe_pub_acks(self) -> None:
        if self._reply_prefix is None:
            self._reply_prefix = self.nc.new_inbox() + "."
            await self.nc.subscribe(self._reply_prefix + "*", cb=self._on_pub_ack)

    async def _publish_once(self, subject: str, payload: bytes, headers: dict[str, str], timeout: float) -> dict[str, Any]:
        # js.publish() costs a task per call (asyncio.wait_for) and a new
        # reply future map entry in nats-py; one wildcard reply subscription
        # with plain futures is markedly cheaper on the hot path.
        await self._subscribe_pub_acks()
        token = str(next(self._reply_tokens))
        future = asyncio.get_running_loop().create_future()
        self._pub_acks[token] = future
        try:
            await self.nc.publish(subject, payload, reply=self._reply_prefix + token, headers=headers)
            async with asyncio.timeout(timeout):
                response = await future
        finally:
            self._pub_acks.pop(token, None)
        if response is None:  # "503 No Responders": no stream (leader) is listening
            raise nats.js.errors.NoStreamResponseError
        ack = json.loads(response)
        error = ack.get("error")
        if error:
            raise nats.js.errors.APIError.from_error(error)
        return ack

    async def _on_pub_ack(self, msg: Msg) -> None:
        future = self._pub_acks.get(msg.subject[len(self._reply_prefix or "") :])
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            future.set_result(None)
        else:
            future.set_result(msg.data)

    async def _renew_leases(self) -> None:
        interval = max(self.topology.ack_wait_ms / 3000, 0.05)
        while True:
            await asyncio.sleep(interval)
            if self.nc is None or not self.nc.is_connected:
                continue
            for msg in list(self.leases.values()):
                try:
                    await msg.in_progress()
                except Exception:
                    logger.debug("Could not renew a lease.", exc_info=True)


def _copy_outcome(target: concurrent.futures.Future[Any], source: asyncio.Future[Any]) -> None:
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())
    else:
        target.set_result(source.result())


def build_connect_options(
    servers: list[str],
    *,
    name: str,
    connect_timeout_ms: int,
    tls_ca_file: str | None,
    tls_cert_file: str | None,
    tls_key_file: str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """nats.connect() arguments: reconnect forever, notice dead peers quickly."""
    connect_options: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": connect_timeout_ms / 1000,
        "allow_reconnect": True,
        # The default (60 attempts) closes the client for good after a long
        # outage; a worker must outlive any outage.
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "ping_interval": 5,
        "max_outstanding_pings": 3,
    }
    if tls_ca_file or tls_cert_file:
        context = ssl.create_default_context(cafile=tls_ca_file)
        if tls_cert_file:
            context.load_cert_chain(tls_cert_file, tls_key_file)
        connect_options["tls"] = context
    connect_options.update(options)
    return connect_options
