"""enqueue and enqueue_many: Dramatiq errors only, the caller's message untouched, per-message outcomes."""

from __future__ import annotations

import dataclasses
import time

import dramatiq
import pytest
from dramatiq.common import current_millis
from dramatiq.errors import BrokerError

from dramatiq_nats import EnqueueFailed, PublishRejected, StorageFull
from tests.broker.test_declare import stream_config, update_stream


def limit_message_size(broker, max_msg_size: int) -> None:
    """As an operator would: a size limit on the task stream (kept when brokers connect)."""
    broker.connect()
    config = stream_config(broker, broker.topology.task_stream)
    update_stream(broker, dataclasses.replace(config, max_msg_size=max_msg_size))


def test_enqueue_leaves_the_callers_message_alone_and_returns_the_stored_copy(broker):
    broker.declare_queue("default")
    eta = current_millis() + 60_000
    message = dramatiq.Message(queue_name="default", actor_name="a", args=(1,), kwargs={}, options={"eta": eta})

    stored = broker.enqueue(message)

    assert message.options == {"eta": eta}
    assert stored is not message and "eta" not in stored.options
    assert stored.message_id == message.message_id
    assert broker.queue_stats("default").scheduled == 1  # the eta became a schedule


def test_the_same_message_sent_to_two_queues_is_stored_in_both(broker):
    broker.declare_queue("first")
    broker.declare_queue("second")
    message = dramatiq.Message(queue_name="first", actor_name="a", args=(), kwargs={}, options={})

    broker.enqueue(message)
    broker.enqueue(message.copy(queue_name="second"))  # same message_id, another queue

    assert broker.queue_stats("first").pending == 1
    assert broker.queue_stats("second").pending == 1


def test_a_message_jetstream_refuses_raises_publish_rejected_at_once(broker):
    broker.declare_queue("default")
    limit_message_size(broker, 2_000)
    too_big = dramatiq.Message(queue_name="default", actor_name="a", args=("x" * 5_000,), kwargs={}, options={})

    started = time.monotonic()
    with pytest.raises(PublishRejected) as raised:
        broker.enqueue(too_big)

    assert isinstance(raised.value, BrokerError)
    assert time.monotonic() - started < 1  # not retried until publish_timeout_ms: it can never succeed
    assert broker.queue_stats("default").pending == 0


def test_a_message_over_the_servers_max_payload_raises_publish_rejected(broker):
    broker.declare_queue("default")
    too_big = dramatiq.Message(queue_name="default", actor_name="a", args=("x" * 1_100_000,), kwargs={}, options={})
    with pytest.raises(PublishRejected):
        broker.enqueue(too_big)


def test_a_batch_reports_which_messages_were_stored(broker):
    broker.declare_queue("default")
    limit_message_size(broker, 2_000)
    batch = [
        dramatiq.Message(queue_name="default", actor_name="a", args=(arg,), kwargs={}, options={})
        for arg in ("small", "x" * 5_000, "also small")
    ]

    with pytest.raises(EnqueueFailed) as raised:
        broker.enqueue_many(batch)

    assert [m.message_id for m in raised.value.stored] == [batch[0].message_id, batch[2].message_id]
    [(failed, error)] = raised.value.failed
    assert failed.message_id == batch[1].message_id
    assert isinstance(error, PublishRejected)
    assert broker.queue_stats("default").pending == 2
    assert str(raised.value).startswith("1 of 3 messages not stored (1 x PublishRejected, e.g. ")
    assert "args=" not in repr(raised.value), "repr names the counts, not every message"


def test_a_full_account_raises_storage_full_at_once(make_broker, start_nats):
    """The account's JetStream limit reached: a definite refusal, told apart from an unknown outcome."""
    from tests.conftest import NatsServer

    server = start_nats(NatsServer.FULL_ACCOUNT_CONFIG)
    broker = make_broker(url=server.url)
    broker.declare_queue("default")
    stored = 0
    started = time.monotonic()
    with pytest.raises(StorageFull) as raised:
        while stored < 1_000:  # 16 KiB hold far fewer
            broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=("x" * 200,), kwargs={}, options={}))
            stored += 1
    assert 10 < stored < 1_000
    assert "resource limits exceeded for account" in str(raised.value)
    assert isinstance(raised.value, PublishRejected)
    assert time.monotonic() - started < 5  # the last one was not retried until publish_timeout_ms
    assert broker.queue_stats("default").pending == stored


def test_start_enqueue_keeps_several_in_flight_and_result_returns_each_stored_copy(broker):
    broker.declare_queue("default")
    messages = [dramatiq.Message(queue_name="default", actor_name="a", args=(i,), kwargs={}, options={}) for i in range(3)]

    pending = [broker.start_enqueue(message) for message in messages]  # all three in flight at once

    stored = [p.result() for p in pending]
    assert [m.message_id for m in stored] == [m.message_id for m in messages]
    assert broker.queue_stats("default").pending == 3
    with pytest.raises(dramatiq.errors.QueueNotFound):
        broker.start_enqueue(dramatiq.Message(queue_name="undeclared", actor_name="a", args=(), kwargs={}, options={}))


def test_start_enqueue_result_raises_what_enqueue_raises(broker):
    limit_message_size(broker, 512)
    broker.declare_queue("default")
    pending = broker.start_enqueue(
        dramatiq.Message(queue_name="default", actor_name="a", args=("x" * 2048,), kwargs={}, options={}))
    with pytest.raises(PublishRejected):
        pending.result()
