"""One NATS connection per process: connect, declare the streams, keep leases alive."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from typing import Any, Protocol

import nats
import nats.errors
import nats.js.errors
from dramatiq.errors import ConnectionClosed, ConnectionFailed
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from ._loop import EventLoopThread
from .publisher import Publisher
from .topology import Topology, missing_requirements

logger = logging.getLogger(__name__)

#: Oldest nats-server with message schedules (ADR-51), which delays rely on.
MIN_SERVER_VERSION = (2, 12)

#: Lease renewals per ack wait. A partition (or server outage) shorter than
#: the ack wait minus one renewal interval minus the reconnect time (about
#: 0.5 s) never makes JetStream redeliver a task that is still running.
LEASE_RENEWALS_PER_ACK_WAIT = 10

#: Back-off between background connect attempts while NATS is unreachable
#: (seconds, doubled after each failure, jittered by +-50%).
CONNECT_BACKOFF_MIN_S = 0.5
CONNECT_BACKOFF_MAX_S = 10.0

class ServerTooOld(ConnectionFailed):
    """The connected nats-server lacks a feature the broker needs."""


class ConnectionListener(Protocol):
    """What a consumer hears about the client it pulls through (on the event loop)."""

    def client_reconnected(self) -> None:
        """nats-py reconnected the client: outstanding pull requests are gone."""

    def client_closed(self, error: ConnectionClosed) -> None:
        """The client is closed for good: its subscriptions and leases are gone."""


class Connection:
    """The NATS connection of one process, and the deliveries it holds.

    Every delivery this process holds (prefetched or running) is a *lease*:
    a heartbeat renews them all with ``+WPI`` ``LEASE_RENEWALS_PER_ACK_WAIT``
    times per ack wait, and once more the moment a lost connection is back,
    so a task that outlives the ack wait (or a short outage) still runs once,
    while a process that dies stops renewing and its messages are
    redelivered after one ack wait.

    nats-py reconnects by itself, except after an error it deems permanent
    (an authorization violation after a credential rotation, an expired
    JWT, any ``-ERR`` from the server): then it closes the client for good.
    Such a client is dropped with its leases, every consumer is told to
    raise ``ConnectionClosed`` (Dramatiq rebuilds it), and a new client
    connects in the background.
    """

    def __init__(
        self,
        loop: EventLoopThread,
        topology: Topology,
        connect_options: dict[str, Any],
        declare: bool = True,
    ) -> None:
        self.loop = loop
        self.topology = topology
        self._connect_options = connect_options
        self.declare = declare
        self.nc: nats.NATS | None = None
        self.js: Any = None
        self.leases: dict[str, Msg] = {}
        self._ensured_consumers: set[str] = set()
        self._listeners: list[ConnectionListener] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._attempt: asyncio.Future[None] | None = None  # the connect attempt in progress
        self._last_error: Exception | None = None
        self._declaring: asyncio.Task[None] | None = None
        self._shut = False
        self.publisher = Publisher(self)

    # -- lifecycle -------------------------------------------------------

    async def open(self) -> None:
        """Return once connected; start connecting in the background if need be.

        Only one connect runs at a time, in the background, retried with
        jittered back-off until it succeeds. A caller waits for the attempt in
        progress, if any, and otherwise fails at once rather than wait out the
        back-off.

        Raises:
          ConnectionClosed: Not connected (or the connection was closed).
          ServerTooOld: The server lacks message schedules.
        """
        if self._shut:
            raise ConnectionClosed("the NATS connection was closed")
        if self.nc is not None:
            if not self.nc.is_closed:
                return
            self._lose_client(self.nc)  # closed, and nats-py has not called back yet
        if self._connector is None:
            self._attempt = asyncio.get_running_loop().create_future()
            self._connector = asyncio.get_running_loop().create_task(self._connect_until_up())
        if self._attempt is not None:
            await asyncio.shield(self._attempt)
            if self.nc is not None:
                return
        if isinstance(self._last_error, ServerTooOld):
            raise self._last_error
        raise ConnectionClosed(f"not connected to NATS ({self._last_error}); connecting in the background")

    async def _connect_until_up(self) -> None:
        backoff = CONNECT_BACKOFF_MIN_S
        try:
            while True:
                try:
                    await self._connect_once()
                    return
                except Exception as e:
                    self._last_error = e
                    logger.warning("Cannot connect to NATS: %s. Trying again in the background.", e)
                finally:
                    if self._attempt is not None:
                        self._attempt.set_result(None)
                        self._attempt = None
                # Jitter: processes that lost the server together must not all
                # come back in the same instant.
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, CONNECT_BACKOFF_MAX_S)
                self._attempt = asyncio.get_running_loop().create_future()
        finally:
            self._connector = None

    async def _connect_once(self) -> None:
        nc = nats.NATS()

        async def closed() -> None:
            self._on_closed(nc)

        servers = self._connect_options["servers"]
        try:
            # nats-py retries a failed first connection as often as it
            # reconnects (forever here): bound it by the connect timeout.
            await asyncio.wait_for(
                nc.connect(
                    **self._connect_options,
                    reconnected_cb=self._on_reconnected,
                    disconnected_cb=self._on_disconnected,
                    error_cb=self._on_error,
                    closed_cb=closed,
                ),
                self._connect_options["connect_timeout"] * len(servers) + 0.5,
            )
        except Exception as e:  # nats-py raises many unrelated types here
            await _close_quietly(nc)
            raise ConnectionFailed(f"cannot connect to NATS at {servers}: {e}") from None
        version = nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            await nc.close()
            needed = ".".join(map(str, MIN_SERVER_VERSION))
            raise ServerTooOld(
                f"nats-server {version} is too old: delayed messages need message schedules, "
                f"available from nats-server {needed}"
            )
        js = nc.jetstream()
        try:
            await self._declare_streams(js)
        except nats.errors.Error as e:
            await nc.close()
            raise ConnectionFailed(f"cannot declare JetStream streams: {e}") from None
        # Usable only now: callers never see a client without its streams.
        self.nc, self.js = nc, js
        self.publisher.reset()
        self._ensured_consumers.clear()
        self._heartbeat = asyncio.get_running_loop().create_task(self._renew_leases())
        logger.info("Connected to NATS at %s.", nc.connected_url.netloc if nc.connected_url else "?")

    async def _declare_streams(self, js: Any) -> None:
        if not self.declare:  # an admin role declares them (least privilege)
            return
        await _declare_stream(js, self.topology.task_stream_config())
        await _declare_stream(js, self.topology.dead_letter_stream_config())
        try:
            await js.create_key_value(self.topology.hand_back_bucket_config())
        except nats.js.errors.BadRequestError:  # it exists (maybe with an operator's settings): keep it
            pass

    async def declare_streams(self) -> None:
        """Declare the streams again (an operator deleted one, or a restart lost it).

        Concurrent callers share one declaration.
        """
        await self.open()
        if self._declaring is None:
            self._declaring = asyncio.get_running_loop().create_task(self._declare_streams(self.js))
            self._declaring.add_done_callback(self._declared)
        await asyncio.shield(self._declaring)

    def _declared(self, task: asyncio.Task[None]) -> None:
        self._declaring = None
        if not task.cancelled() and task.exception() is not None:
            logger.warning("Could not declare the JetStream streams: %s", task.exception())

    async def ensure_consumer(self, queue_name: str) -> None:
        """Create or update the durable consumer of a queue (once per connection)."""
        await self.open()
        if queue_name in self._ensured_consumers:
            return
        if self.declare:
            config = self.topology.consumer_config(queue_name)
            try:
                await self.js.add_consumer(self.topology.task_stream, config)
            except nats.js.errors.NotFoundError:  # the stream itself is gone
                await self.declare_streams()
                await self.js.add_consumer(self.topology.task_stream, config)
        self._ensured_consumers.add(queue_name)

    def call(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the loop from another thread; errors as Dramatiq's."""
        if self._shut:  # a late call after close(): never start a new loop for it
            coro.close()
            raise ConnectionClosed("the NATS connection was closed")
        try:
            return self.loop.run(coro, timeout)
        except (TimeoutError, nats.errors.Error) as e:
            raise ConnectionClosed(e) from None

    def call_soon(self, callback: Callable[..., None], *args: Any) -> bool:
        """Run ``callback(*args)`` on the loop soon; False once the connection was closed."""
        if self._shut:
            return False
        self.loop.call_soon(callback, *args)
        return True

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    def forget_consumer(self, queue_name: str) -> None:
        """Declare the queue's consumer again on next use (it was deleted)."""
        self._ensured_consumers.discard(queue_name)

    def close(self, timeout: float) -> None:
        """Close for good (from another thread): send pending acks, close the client.

        Later calls fail with ConnectionClosed instead of connecting anew.
        """
        self._shut = True
        self.loop.run(self._close(), timeout)

    async def _close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        nc, self.nc = self.nc, None
        if nc is not None and not nc.is_closed:
            try:
                await nc.flush(timeout=2)  # acks are fire-and-forget: send them before leaving
            except Exception:
                logger.warning("Could not flush pending acks before closing.", exc_info=True)
            await nc.close()

    def add_listener(self, listener: ConnectionListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: ConnectionListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _on_closed(self, nc: nats.NATS) -> None:
        if nc is not self.nc:  # closed on purpose, or an old client
            return
        self._lose_client(nc)
        if not self._shut and self._connector is None:
            self._connector = asyncio.get_running_loop().create_task(self._connect_until_up())

    def _lose_client(self, nc: nats.NATS) -> None:
        """Drop a client nats-py closed for good, with everything tied to it."""
        logger.error("NATS closed the connection for good (%s); connecting a new client.", nc.last_error)
        self.nc = self.js = None
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None
        # The deliveries' acks and renewals would go through the dead client.
        self.leases.clear()
        self._ensured_consumers.clear()
        self.publisher.reset()
        error = ConnectionClosed(f"NATS closed the connection for good: {nc.last_error}")
        for listener in list(self._listeners):
            listener.client_closed(error)

    async def _on_reconnected(self) -> None:
        logger.info("Reconnected to NATS at %s.", self.nc.connected_url.netloc if self.nc else "?")
        # nats-py awaits this callback inside its reconnect: do the requests in a task.
        asyncio.get_running_loop().create_task(self._after_reconnect())

    async def _after_reconnect(self) -> None:
        # First the leases: the outage ate into their ack wait.
        await self._renew_all_leases()
        # A server restart may have lost a memory stream, an operator may have
        # deleted a stream or consumer meanwhile: declare them again.
        self._ensured_consumers.clear()
        try:
            await self.declare_streams()
        except Exception:
            pass  # logged by _declared; consumers and publishes repair it on use
        for listener in list(self._listeners):
            listener.client_reconnected()

    async def _on_disconnected(self) -> None:
        if self.nc is None:  # closing on purpose
            return
        logger.warning("Disconnected from NATS; reconnecting.")

    async def _on_error(self, error: Exception) -> None:
        logger.warning("NATS connection error: %s", error)

    async def _renew_leases(self) -> None:
        interval = max(self.topology.ack_wait_ms / 1000 / LEASE_RENEWALS_PER_ACK_WAIT, 0.05)
        while True:
            await asyncio.sleep(interval)
            await self._renew_all_leases()

    async def _renew_all_leases(self) -> None:
        if self.nc is None or not self.nc.is_connected:
            return
        for msg in list(self.leases.values()):
            try:
                await msg.in_progress()
            except Exception:
                logger.debug("Could not renew a lease.", exc_info=True)


async def _declare_stream(js: Any, config: StreamConfig) -> None:
    """Create a stream, or add to an existing one only what the broker needs.

    An existing stream keeps its limits, duplicate window, replicas and
    the like: an operator may have changed them.
    """
    try:
        existing = (await js.stream_info(config.name)).config
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError:  # another process created it meanwhile
            existing = (await js.stream_info(config.name)).config
    update = missing_requirements(existing, config)
    if update is not None:
        logger.warning("Adding what the broker needs to stream %s (subjects, schedules, direct gets).", config.name)
        await js.update_stream(update)


async def _close_quietly(nc: nats.NATS) -> None:
    try:
        await nc.close()
    except Exception:
        logger.debug("Closing a half-open client failed.", exc_info=True)


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
