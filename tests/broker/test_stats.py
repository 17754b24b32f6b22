"""Queue stats: read only, and their cost does not grow with the number of scheduled messages."""

from __future__ import annotations

import dramatiq


def consumers_of(broker) -> list[str]:
    async def read():
        infos = await broker._connection.js.consumers_info(broker.topology.task_stream)
        return [info.name for info in infos]

    return broker._run(read())


def bytes_received(broker) -> int:
    return broker._connection.nc.stats["in_bytes"]


def test_reading_stats_creates_no_consumer(broker):
    broker.declare_queue("default")
    broker.enqueue_many(
        dramatiq.Message(queue_name="default", actor_name="a", args=(n,), kwargs={}, options={}) for n in range(3)
    )

    stats = broker.queue_stats("default")
    broker.stats()

    assert (stats.pending, stats.in_flight) == (3, 0)
    assert consumers_of(broker) == []


def test_scheduled_messages_are_counted_with_one_small_reply(broker):
    broker.declare_queue("default")
    scheduled = 1_500
    broker.enqueue_many(
        (dramatiq.Message(queue_name="default", actor_name="a", args=(n,), kwargs={}, options={}) for n in range(scheduled)),
        delay=600_000,
    )

    before = bytes_received(broker)
    stats = broker.queue_stats("default")
    received = bytes_received(broker) - before

    assert stats.scheduled == scheduled
    # Each schedule has a subject of its own; listing them would be about 100 bytes each.
    assert received < 4_000, f"{received} bytes for one queue's stats"
