"""A Dramatiq broker for NATS JetStream.

    from dramatiq_nats import NatsBroker
    dramatiq.set_broker(NatsBroker(url="nats://127.0.0.1:4222"))
"""

from .broker import DEFAULT_URL, NatsBroker, PendingEnqueue, QueueStats
from .connection import MIN_SERVER_VERSION, ServerTooOld
from .consumer import DeadLettered, NatsMessage
from .dead_letters import DeadLetter
from .errors import EnqueueFailed, PublishRejected, StorageFull
from .topology import encode_queue_name

__all__ = [
    "DEFAULT_URL",
    "DeadLetter",
    "DeadLettered",
    "EnqueueFailed",
    "MIN_SERVER_VERSION",
    "NatsBroker",
    "NatsMessage",
    "PendingEnqueue",
    "PublishRejected",
    "QueueStats",
    "ServerTooOld",
    "StorageFull",
    "encode_queue_name",
]
