"""Repeating message schedules: JetStream publishes one stored message again and again.

A repeating schedule is a message on ``<ns>.schedule.<queue>.repeat.<name>``
with ``Nats-Schedule: @every 10s`` (or six-field cron). The server keeps only
the latest message of a schedule subject, so declaring it again replaces it,
and it fires once per tick however many processes declared it. Every firing
carries the same body, hence the same Dramatiq message id: consumers give each
firing an id of its own, derived from its stream sequence, so that a
redelivery of one firing keeps its id and two firings never share one.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import nats.js.errors
from dramatiq.message import Message
from nats.aio.msg import Msg

if TYPE_CHECKING:
    from .connection import Connection

#: Header of a repeating schedule, copied by the server onto every firing.
REPEATING_HEADER = "Natsq-Repeating"

def one_firing(message: Message, delivery: Msg) -> Message:
    """The message a delivery stands for: a firing of a repeating schedule gets an id of its own."""
    if not delivery.headers or REPEATING_HEADER not in delivery.headers:
        return message
    meta = delivery.metadata
    firing_id = uuid.uuid5(uuid.NAMESPACE_URL, f"{message.message_id}/{meta.stream}/{meta.sequence.stream}")
    return message.copy(message_id=str(firing_id), message_timestamp=int(meta.timestamp.timestamp() * 1000))


async def declare(connection: Connection, message: Message, schedule: str, name: str, timeout: float) -> bool:
    """Store the schedule unless the same one is in place; whether it was stored."""
    await connection.open()
    topology = connection.topology
    subject = topology.repeating_subject(message.queue_name, name)
    body = message.encode()
    try:
        current = await connection.js.get_last_msg(topology.task_stream, subject)
        if current.data == body and (current.headers or {}).get("Nats-Schedule") == schedule:
            return False  # re-declaring would restart an @every period for nothing
    except nats.js.errors.NotFoundError:
        pass
    headers = {
        "Nats-Schedule": schedule,
        "Nats-Schedule-Target": topology.queue_subject(message.queue_name),
        REPEATING_HEADER: name,
    }
    await connection.publisher.publish(subject, body, headers, timeout)
    return True


async def remove(connection: Connection, queue_name: str, name: str) -> None:
    await connection.open()
    topology = connection.topology
    subject = topology.repeating_subject(queue_name, name)
    await connection.js.purge_stream(topology.task_stream, subject=subject)
