"""Repeating message schedules through the broker's public API, on a real nats-server."""

from __future__ import annotations

import threading

import dramatiq
import pytest
from dramatiq.errors import QueueNotFound

from tests.conftest import wait_until


def test_a_repeating_schedule_fires_each_tick_as_a_message_of_its_own(broker, worker):
    seen: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(queue_name="ticks")
    def tick():
        with lock:
            seen.append(dramatiq.middleware.CurrentMessage.get_current_message().message_id)

    broker.add_middleware(dramatiq.middleware.CurrentMessage())
    message = tick.message()
    assert broker.schedule_repeating(message, "@every 1s", name="tick") is True
    worker()
    wait_until(lambda: len(seen) >= 3, 10, message="three ticks")
    assert len(set(seen)) == len(seen)  # one id per firing
    assert message.message_id not in seen
    # A repeating schedule is not outstanding work: join() does not wait for it.
    assert broker.queue_stats("ticks").scheduled == 0


def test_declaring_the_same_schedule_again_changes_nothing_and_a_new_one_replaces_it(broker):
    @dramatiq.actor(queue_name="ticks")
    def tick():
        pass

    message = tick.message()
    assert broker.schedule_repeating(message, "@every 1h", name="hourly") is True
    assert broker.schedule_repeating(message, "@every 1h", name="hourly") is False  # e.g. a second replica
    assert broker.schedule_repeating(message, "0 0 * * * *", name="hourly") is True
    stored = broker._run(broker._connection.js.stream_info(broker.topology.task_stream, subjects_filter=">"))
    assert sum(stored.state.subjects.values()) == 1  # the server kept only the latest schedule
    broker.unschedule_repeating("ticks", "hourly")
    stored = broker._run(broker._connection.js.stream_info(broker.topology.task_stream, subjects_filter=">"))
    assert not stored.state.subjects


def test_undeclared_queue_raises_queue_not_found(broker):
    with pytest.raises(QueueNotFound):
        broker.schedule_repeating(dramatiq.Message("nowhere", "x", (), {}, {}), "@every 1s", name="x")
