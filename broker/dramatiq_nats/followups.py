"""Which delivery a worker thread is finishing, so its follow-up messages are not lost.

Dramatiq's middleware enqueues new messages while a delivery is finished:
Retries its retry copy, Pipelines the next step, Callbacks and group
completion their callbacks, ``on_retry_exhausted`` its handler. Dramatiq logs
an exception raised there and acknowledges the delivery anyway, which would
lose the follow-up. The broker therefore notes a failed enqueue on the
delivery being finished in this thread, and its consumer settles the delivery
accordingly instead of acknowledging it blindly.
"""

from __future__ import annotations

import threading

from dramatiq.broker import Broker
from dramatiq.message import Message
from dramatiq.middleware import Middleware

_local = threading.local()


class FollowUps(Middleware):
    """Marks the stretch in which other middleware finishes a delivery.

    The broker keeps it last in its middleware list: Dramatiq runs "after"
    hooks in reverse order, so its ``after_process_message`` runs before
    every other middleware's, while the actor's own enqueues (errors the
    actor sees and handles itself) come before it.
    """

    def before_process_message(self, broker: Broker, message: Message) -> None:
        _local.message = None

    def after_process_message(self, broker: Broker, message: Message, *, result=None, exception=None) -> None:
        _local.message = message

    def after_skip_message(self, broker: Broker, message: Message) -> None:
        _local.message = message


def finishing() -> Message | None:
    """The delivery this thread is finishing, if any."""
    return getattr(_local, "message", None)


def finished() -> None:
    """The delivery was settled: later enqueues of this thread are not its follow-ups."""
    _local.message = None
