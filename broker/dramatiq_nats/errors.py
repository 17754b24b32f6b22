"""Errors of the broker beyond Dramatiq's own."""

from __future__ import annotations

from dramatiq.errors import BrokerError, ConnectionClosed
from dramatiq.message import Message


class PublishRejected(ConnectionClosed):
    """JetStream (or the client) refused a message for good: publishing it again will not help.

    Over the server's max_payload, over the stream's max_msg_size, a full store. A subclass of
    ``ConnectionClosed`` so that callers which treat every failed enqueue alike keep working.
    """


class StorageFull(PublishRejected):
    """JetStream has no room for the message: a limit of the stream or of the account, or the server's store.

    Definite: the message was not stored (JetStream de-duplicates before it checks room, so a
    retried publish of a stored message is acknowledged as a duplicate instead). Publishing it
    again helps once consumers have made room.
    """


class EnqueueFailed(BrokerError):
    """Some messages of a batch were not stored.

    Attributes:
      stored: The messages JetStream stored, as ``enqueue_many`` returns them.
      failed: ``(message, error)`` for each of the others; the error is
        ``ConnectionClosed`` (outcome unknown: enqueueing it again is safe,
        JetStream drops a copy within the duplicate window) or ``PublishRejected``.
    """

    def __init__(self, stored: list[Message], failed: list[tuple[Message, BrokerError]]) -> None:
        # One line per kind of error, however large the batch: a 20,000-message batch that
        # timed out must not print 20,000 reasons (or, through repr, 20,000 messages).
        first_of_kind: dict[str, BrokerError] = {}
        count_of_kind: dict[str, int] = {}
        for _, error in failed:
            kind = type(error).__name__
            first_of_kind.setdefault(kind, error)
            count_of_kind[kind] = count_of_kind.get(kind, 0) + 1
        reasons = "; ".join(f"{count_of_kind[kind]} x {kind}, e.g. {error}" for kind, error in sorted(first_of_kind.items()))
        message = f"{len(failed)} of {len(stored) + len(failed)} messages not stored ({reasons})"
        super().__init__(message)
        self.args = (message,)
        self.stored = stored
        self.failed = failed
