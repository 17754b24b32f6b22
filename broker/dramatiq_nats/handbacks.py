"""How often each message was handed back unrun, so hand-backs do not count as deliveries.

JetStream's ``num_delivered`` counts every delivery, including messages a
worker handed back without running them (on SIGTERM, on ``requeue``, when a
consumer closes, when a retry copy could not be published). Only runs that
never finished may bring a message closer to the dead-letter stream, so each
hand-back is recorded in a key-value bucket keyed by the message's stream
sequence. A redelivered message also counts as handed back while it waits in
its consumer for its turn (see ``NatsConsumer._count_runs``), so that a
process dying meanwhile does not count that delivery as a run. The bucket is
used only on hand-backs and redeliveries: the fast path (a first delivery
that runs) costs nothing.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import nats.js.errors

if TYPE_CHECKING:
    from .connection import Connection

logger = logging.getLogger(__name__)


class HandBacks:
    """Hand-back counts of the messages in the task stream, in a KV bucket."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._bucket: Any = None
        self._bucket_of: Any = None  # the client the bucket handle belongs to

    async def _kv(self) -> Any:
        nc = self._connection.nc
        if self._bucket is None or self._bucket_of is not nc:
            js, config = self._connection.js, self._connection.topology.hand_back_bucket_config()
            # Declared with the streams (Connection), by whichever user may declare.
            self._bucket = await js.key_value(config.bucket)
            self._bucket_of = nc
        return self._bucket

    async def record(self, stream_sequence: int) -> int | None:
        """Count one more hand-back; the new count, or None if it could not be written.

        Only the holder of the delivery calls it, so read-then-write is safe.
        Failing to record it (NATS unreachable) only makes the message count
        this hand-back as a delivery: it is logged, never raised.
        """
        return await self._add(stream_sequence, 1, "record a hand-back of")

    async def withdraw(self, stream_sequence: int) -> None:
        """Take back the hand-back recorded last: the delivery runs after all."""
        await self._add(stream_sequence, -1, "withdraw a hand-back of")

    async def _add(self, stream_sequence: int, delta: int, what: str) -> int | None:
        try:
            kv = await self._kv()
            try:
                previous = int((await kv.get(str(stream_sequence))).value or b"0")
            except nats.js.errors.NotFoundError:
                previous = 0
            count = max(previous + delta, 0)
            await kv.put(str(stream_sequence), str(count).encode())
            return count
        except Exception:
            logger.warning("Could not %s message %d.", what, stream_sequence, exc_info=True)
            return None
