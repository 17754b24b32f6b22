"""One NATS connection per process: connect, declare the streams, keep leases alive."""

from __future__ import annotations

import asyncio
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
from .publisher import Publisher
from .topology import Topology

logger = logging.getLogger(__name__)

#: Oldest nats-server with message schedules (ADR-51), which delays rely on.
MIN_SERVER_VERSION = (2, 12)

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
        self._reconnect_listeners: list[Callable[[], None]] = []
        self._heartbeat: asyncio.Task[None] | None = None
        self._opening: asyncio.Lock | None = None
        self.publisher = Publisher(self)

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
            self.publisher.reset()
            self._ensured_consumers.clear()
            try:
                if self.declare:
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
        if self.declare:
            await self.js.add_consumer(self.topology.task_stream, self.topology.consumer_config(queue_name))
        self._ensured_consumers.add(queue_name)

    def call(self, coro: Any, timeout: float) -> Any:
        """Run ``coro`` on the loop from another thread; errors as Dramatiq's."""
        try:
            return self.loop.run(coro, timeout)
        except (TimeoutError, nats.errors.Error) as e:
            raise ConnectionClosed(e) from None

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
