"""Messages handed back unrun do not move closer to the dead-letter stream: real dramatiq CLI workers."""

from __future__ import annotations

import pytest

from tests.broker.test_faults import fault_setup, send  # noqa: F401  (fault_setup is a fixture)
from tests.conftest import wait_until


def deliveries_made(broker) -> int:
    """How many deliveries the queue's JetStream consumer has made so far."""

    async def read() -> int:
        topology = broker.topology
        info = await broker._connection.js.consumer_info(topology.task_stream, topology.consumer_name("default"))
        return info.delivered.consumer_seq

    return broker._run(read())

pytestmark = pytest.mark.timeout(120)


def test_tasks_handed_back_on_every_sigterm_still_run(nats_server, fault_setup):  # noqa: F811
    max_deliveries = 2
    # A long ack wait: only hand-backs, never expiries, redeliver here.
    producer, start_worker, marks = fault_setup(nats_server.url, ack_wait_ms=30_000, max_deliveries=max_deliveries)
    shorts = [f"short{n}" for n in range(3)]
    for token in shorts:
        send(producer, "work", token)

    for cycle in range(max_deliveries):
        # Hold the short tasks here while the worker starts on a long one, so
        # that they reach it only as prefetched messages behind the long task.
        holder = producer.consume("default", prefetch=len(shorts), timeout=100)
        held = []
        wait_until(lambda: held.append(next(holder)) or len([m for m in held if m]) == len(shorts), 10,
                   message="the short tasks to be held")
        worker = start_worker(threads=1, prefetch=4)
        send(producer, "work", f"long{cycle}", 1.5)
        wait_until(lambda: marks.count("start", f"long{cycle}"), 10, message="the long task to start")
        delivered = deliveries_made(producer)
        holder.requeue([m for m in held if m])  # a hand-back
        holder.close()
        wait_until(lambda: deliveries_made(producer) == delivered + len(shorts), 10,
                   message="the worker to prefetch the short tasks")
        assert worker.terminate(20) == 0  # SIGTERM: the long task finishes, the short ones are handed back
        assert marks.count("done", f"long{cycle}") == 1
        assert not any(marks.count("start", token) for token in shorts)

    # Each short task was delivered twice per cycle and never ran: it must still run.
    start_worker(threads=1, prefetch=4)
    wait_until(lambda: all(marks.count("done", token) for token in shorts), 20, message="every short task")
    producer.join("default", timeout=10_000)
    assert producer.queue_stats("default").dead_lettered == 0
