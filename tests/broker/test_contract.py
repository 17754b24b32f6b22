"""The dramatiq.Broker / Consumer contract, as StubBroker defines it."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from dramatiq.errors import ConnectionFailed, QueueJoinTimeout, QueueNotFound
from dramatiq.middleware import Middleware

from dramatiq_nats import NatsBroker, encode_queue_name
from tests.conftest import free_port, wait_until


class RecordingMiddleware(Middleware):
    def __init__(self):
        self.events = []

    def before_declare_queue(self, broker, queue_name):
        self.events.append(("before", queue_name))

    def after_declare_queue(self, broker, queue_name):
        self.events.append(("after", queue_name))


def test_declare_queue_is_idempotent_and_emits_hooks(make_broker):
    recorder = RecordingMiddleware()
    broker = make_broker(middleware=[recorder])
    broker.declare_queue("orders")
    broker.declare_queue("orders")
    assert recorder.events == [("before", "orders"), ("after", "orders")]
    assert broker.get_declared_queues() == {"orders"}
    assert broker.get_declared_delay_queues() == set()


def test_undeclared_queue_raises_queue_not_found(broker):
    message = dramatiq.Message(queue_name="nope", actor_name="a", args=(), kwargs={}, options={})
    with pytest.raises(QueueNotFound):
        broker.consume("nope")
    with pytest.raises(QueueNotFound):
        broker.enqueue(message)
    with pytest.raises(QueueNotFound):
        broker.join("nope")


def test_queue_names_are_encoded_injectively():
    names = ["a.b", "a_db", "a-b", "a__b", "a_b", "a..b"]
    encoded = [encode_queue_name(n) for n in names]
    assert len(set(encoded)) == len(names)
    assert all("." not in e for e in encoded)
    with pytest.raises(ValueError):
        encode_queue_name("has space")


def test_queue_names_with_dots_and_dashes_work_end_to_end(broker, worker):
    done = []

    @dramatiq.actor(queue_name="billing.eu-west")
    def bill(n):
        done.append(n)

    worker()
    bill.send(7)
    broker.join("billing.eu-west", timeout=10_000)
    assert done == [7]


def test_unreachable_server_raises_connection_failed():
    broker = NatsBroker(f"nats://127.0.0.1:{free_port()}", connect_timeout_ms=500)
    broker.declare_queue("default")
    try:
        with pytest.raises(ConnectionFailed):
            broker.connect()
    finally:
        broker.close()


def test_idle_consumer_returns_none_within_its_timeout(broker):
    broker.declare_queue("idle")
    consumer = broker.consume("idle", prefetch=4, timeout=100)
    try:
        started = time.monotonic()
        assert next(consumer) is None
        assert time.monotonic() - started < 0.5
    finally:
        consumer.close()


def test_message_to_idle_queue_arrives_within_milliseconds(broker):
    @dramatiq.actor(queue_name="fast")
    def noop():
        pass

    consumer = broker.consume("fast", prefetch=2, timeout=2_000)
    try:
        next(consumer)  # the consumer is idle and its pull request waiting
        latencies = []
        for _ in range(20):
            sent = time.monotonic()
            noop.send()
            message = next(consumer)
            latencies.append(time.monotonic() - sent)
            assert message is not None
            consumer.ack(message)
        latencies.sort()
        assert latencies[len(latencies) // 2] < 0.05, latencies
    finally:
        consumer.close()


def test_consumer_holds_at_most_prefetch_messages(broker):
    @dramatiq.actor(queue_name="bounded")
    def noop(n):
        pass

    broker.enqueue_many(noop.message(i) for i in range(20))
    consumer = broker.consume("bounded", prefetch=5, timeout=100)
    try:
        held = [m for m in (next(consumer) for _ in range(10)) if m is not None]
        assert len(held) == 5
        assert broker.queue_stats("bounded").in_flight == 5
        consumer.ack(held[0])
        wait_until(lambda: next(consumer), 5, message="a sixth message after one ack")
    finally:
        consumer.close()


def test_close_and_requeue_hand_back_messages_at_once(broker):
    @dramatiq.actor(queue_name="handback")
    def noop(n):
        pass

    broker.enqueue_many(noop.message(i) for i in range(6))
    first = broker.consume("handback", prefetch=6, timeout=100)
    taken = wait_until(lambda: next(first), 5, message="a message")
    first.requeue([taken])
    first.close()  # the five it prefetched but never handed out go back too
    second = broker.consume("handback", prefetch=6, timeout=100)
    try:
        received = set()
        # Well inside the 2 s ack wait: only a nak makes them available this soon.
        deadline = time.monotonic() + 1.0
        while len(received) < 6 and time.monotonic() < deadline:
            message = next(second)
            if message is not None:
                received.add(message.args[0])
                second.ack(message)
        assert received == set(range(6))
    finally:
        second.close()


def test_flush_and_flush_all_drop_messages(broker):
    @dramatiq.actor(queue_name="q1")
    def a():
        pass

    @dramatiq.actor(queue_name="q2")
    def b():
        pass

    a.send()
    a.send_with_options(delay=60_000)
    b.send()
    assert broker.queue_stats("q1").pending == 1
    assert broker.queue_stats("q1").scheduled == 1
    broker.flush("q1")
    assert broker.queue_stats("q1").outstanding == 0
    assert broker.queue_stats("q2").pending == 1
    broker.flush_all()
    assert broker.queue_stats("q2").outstanding == 0


def test_join_times_out_while_work_is_outstanding(broker):
    @dramatiq.actor(queue_name="never")
    def never():
        pass

    never.send()
    with pytest.raises(QueueJoinTimeout):
        broker.join("never", timeout=200)


def test_enqueue_is_safe_from_many_threads(broker, worker):
    seen = []
    lock = threading.Lock()

    @dramatiq.actor
    def record(thread, n):
        with lock:
            seen.append((thread, n))

    def produce(thread):
        for n in range(50):
            record.send(thread, n)

    worker(worker_threads=8)
    threads = [threading.Thread(target=produce, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    broker.join("default", timeout=30_000)
    assert sorted(seen) == [(t, n) for t in range(16) for n in range(50)]


def test_batch_enqueue_stores_every_message_and_repeats_are_deduplicated(broker, worker):
    seen = []

    @dramatiq.actor
    def record(n):
        seen.append(n)

    messages = [record.message(n) for n in range(500)]
    broker.enqueue_many(messages)
    broker.enqueue_many(messages[:100])  # a retried batch: JetStream drops the copies
    assert broker.queue_stats("default").pending == 500
    worker()
    broker.join("default", timeout=30_000)
    assert sorted(seen) == list(range(500))


def test_a_large_batch_is_published_once_without_spurious_retries(start_nats, namespace):
    import json
    import urllib.request

    server = start_nats()  # fsync always: acks arrive at the disk's pace, far behind the writes
    broker = NatsBroker(server.url, namespace=namespace)
    dramatiq.set_broker(broker)

    @dramatiq.actor
    def noop(n):
        pass

    def received() -> int:
        with urllib.request.urlopen(f"{server.monitor_url}/varz", timeout=5) as r:
            return json.load(r)["in_msgs"]

    try:
        broker.enqueue_many([noop.message(0)])  # connect and declare first
        before = received()
        broker.enqueue_many(noop.message(n) for n in range(10_000))
        assert broker.queue_stats("default").pending == 10_001
        # Every message written once (plus a few API requests), none timed out and re-sent.
        assert received() - before < 10_100
    finally:
        broker.close()
