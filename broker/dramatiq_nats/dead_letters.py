"""The dead-letter stream of each queue: read, replay as a new message, delete, purge.

The consumer writes a dead letter as the message's body, with the queue, the
reason and the delivery count in ``Natsq-*`` headers (see ``NatsConsumer``).
Each dead letter is addressed by its sequence in the dead-letter stream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import nats.js.errors
from dramatiq.common import current_millis
from dramatiq.errors import DecodeError, QueueNotFound
from dramatiq.message import Message
from nats.js.api import RawStreamMsg

if TYPE_CHECKING:
    from .broker import NatsBroker

#: Options of a dead message that describe its failed run, not the task:
#: a replay starts without them.
_RUN_OPTIONS = ("retries", "traceback", "requeue_timestamp", "eta")

#: UUID namespace of replay ids (see ``DeadLetters.replay``).
_REPLAY_NAMESPACE = uuid.UUID("6f1d0c52-3b0e-4c4e-9a55-2f7d1e0b8c11")


@dataclass(frozen=True)
class DeadLetter:
    """One message in the dead-letter stream.

    seq: its sequence in the dead-letter stream (its address).
    stream: the dead-letter stream.
    message: the Dramatiq message, or None if its body cannot be decoded.
    reason: why it was dead-lettered (``failed: <exception>``, too many deliveries, ...).
    deliveries: JetStream deliveries of the last copy.
    dead_lettered_at: when it was written to the stream.
    body: the raw body, for messages that cannot be decoded.
    """

    seq: int
    stream: str
    queue_name: str
    message: Message | None
    reason: str
    deliveries: int
    dead_lettered_at: datetime | None
    body: bytes

    @property
    def message_id(self) -> str | None:
        return self.message.message_id if self.message else None

    @property
    def attempts(self) -> int:
        """Runs of the task that started, as far as the dead letter tells.

        A failure counted every run in Dramatiq's ``retries``. A message
        dead-lettered on delivery (too many deliveries, undecodable) adds the
        earlier deliveries of its last copy: each started a run that never finished.
        """
        retries = self.message.options.get("retries", 0) if self.message else 0
        if self.reason.startswith("failed"):
            return max(retries, 1)
        return retries + max(self.deliveries - 1, 0)

    def replacement(self) -> Message:
        """The new message that replays this dead letter.

        It keeps actor, arguments and options, drops the failed run's options
        (retries, traceback), and names the dead message in
        ``options["replay_of"]``. Its id derives from the dead letter, so
        replaying the same dead letter twice (a retry after a lost answer)
        enqueues one message: JetStream drops the duplicate.

        Raises:
          DecodeError: The dead letter is not a Dramatiq message.
        """
        old = self.message
        if old is None:
            raise DecodeError(f"dead letter {self.seq} of queue {self.queue_name!r} is not a Dramatiq message", self.body, None)
        options = {k: v for k, v in old.options.items() if k not in _RUN_OPTIONS}
        options["replay_of"] = old.message_id
        return Message(
            queue_name=old.queue_name,
            actor_name=old.actor_name,
            args=old.args,
            kwargs=old.kwargs,
            options=options,
            message_id=str(uuid.uuid5(_REPLAY_NAMESPACE, f"{self.stream}/{self.seq}/{old.message_id}")),
            message_timestamp=current_millis(),
        )

    @property
    def traceback(self) -> str | None:
        """The traceback of the last failed run, as Dramatiq's Retries middleware kept it."""
        return self.message.options.get("traceback") if self.message else None


class DeadLetters:
    """Dead-letter operations of a NatsBroker (``dramatiq_nats.dead_letters``)."""

    def __init__(self, broker: NatsBroker) -> None:
        self._broker = broker
        self._topology = broker.topology

    def list(self, queue_name: str, *, after: int = 0, limit: int = 50) -> list[DeadLetter]:
        """Up to ``limit`` dead letters of a queue, oldest first, after sequence ``after``."""
        self._check(queue_name)

        async def collect() -> list[DeadLetter]:
            letters: list[DeadLetter] = []
            seq = after
            while len(letters) < limit:
                raw = await self._next(queue_name, seq + 1)
                if raw is None:
                    break
                letters.append(_dead_letter(self._topology.dead_letter_stream, queue_name, raw))
                seq = raw.seq
            return letters

        return self._broker._run(collect())

    def get(self, queue_name: str, seq: int) -> DeadLetter | None:
        """One dead letter of a queue, or None if there is none at ``seq``."""
        self._check(queue_name)

        async def fetch() -> DeadLetter | None:
            raw = await self._next(queue_name, seq)
            return _dead_letter(self._topology.dead_letter_stream, queue_name, raw) if raw is not None and raw.seq == seq else None

        return self._broker._run(fetch())

    def replay(self, letter: DeadLetter) -> Message | None:
        """Enqueue a dead letter again as a new message (``letter.replacement()``), then delete it.

        Returns the new message, or None if the dead letter is no longer in
        the stream (replayed or deleted meanwhile): nothing is enqueued then.

        Raises:
          DecodeError: The dead letter is not a Dramatiq message.
          ConnectionClosed: JetStream did not store the new message.
        """
        new = letter.replacement()
        if self.get(letter.queue_name, letter.seq) is None:
            return None
        self._broker.enqueue(new)
        self.delete(letter.queue_name, letter.seq)
        return new

    def delete(self, queue_name: str, seq: int) -> bool:
        """Delete one dead letter; False if there was none at ``seq``."""
        if self.get(queue_name, seq) is None:  # also checks that it belongs to this queue
            return False

        async def delete() -> bool:
            try:
                return await self._broker._connection.js.delete_msg(self._topology.dead_letter_stream, seq)
            except nats.js.errors.NotFoundError:
                return False

        return self._broker._run(delete())

    def purge(self, queue_name: str) -> int:
        """Delete every dead letter of a queue; returns how many there were."""
        self._check(queue_name)

        async def purge() -> int:
            connection = self._broker._connection
            await connection.open()
            stream, subject = self._topology.dead_letter_stream, self._topology.dead_letter_subject(queue_name)
            info = await connection.js.stream_info(stream, subjects_filter=subject)
            await connection.js.purge_stream(stream, subject=subject)
            return sum((info.state.subjects or {}).values())

        return self._broker._run(purge())

    def _check(self, queue_name: str) -> None:
        if queue_name not in self._broker.queues:
            raise QueueNotFound(queue_name)

    async def _next(self, queue_name: str, seq: int) -> RawStreamMsg | None:
        """The queue's first dead letter at or after ``seq``."""
        connection = self._broker._connection
        await connection.open()
        try:
            return await connection.js.get_msg(
                self._topology.dead_letter_stream,
                seq=max(seq, 1),
                subject=self._topology.dead_letter_subject(queue_name),
                next=True,
            )
        except nats.js.errors.NotFoundError:
            return None


def _dead_letter(stream: str, queue_name: str, raw: RawStreamMsg) -> DeadLetter:
    headers = raw.headers or {}
    body = raw.data or b""
    try:
        message: Message | None = Message.decode(body)
    except DecodeError:
        message = None
    return DeadLetter(
        seq=raw.seq,
        stream=stream,
        queue_name=queue_name,
        message=message,
        reason=headers.get("Natsq-Reason", ""),
        deliveries=int(headers.get("Natsq-Deliveries", "0") or 0),
        dead_lettered_at=raw.time,
        body=body,
    )
