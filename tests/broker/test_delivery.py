"""Delivery semantics with Dramatiq's own worker and middleware."""

from __future__ import annotations

import threading
import time

import dramatiq
import pytest
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, TimeLimit
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from tests.conftest import wait_until


def dead_letters(broker, queue_name="default"):
    """The dead-letter stream's messages for a queue, with their headers."""

    async def read():
        js = broker._connection.js
        sub = await js.pull_subscribe(
            broker.topology.dead_letter_subject(queue_name), stream=broker.topology.dead_letter_stream
        )
        try:
            return await sub.fetch(100, timeout=0.5)
        except Exception:
            return []
        finally:
            await sub.unsubscribe()

    return broker._run(read())


def test_a_message_is_acknowledged_only_after_its_actor_finished(broker, worker):
    release = threading.Event()

    @dramatiq.actor
    def blocked():
        release.wait(10)

    worker()
    blocked.send()
    wait_until(lambda: broker.queue_stats("default").in_flight == 1, 5, message="the message in flight")
    time.sleep(0.3)
    assert broker.queue_stats("default").in_flight == 1  # running: not acked yet
    release.set()
    broker.join("default", timeout=5_000)


def test_retries_back_off_and_are_not_swallowed_by_deduplication(broker, worker):
    attempts = []

    @dramatiq.actor(max_retries=5, min_backoff=100, max_backoff=1_000)
    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) < 4:
            raise RuntimeError("transient")

    worker()
    flaky.send()
    wait_until(lambda: len(attempts) == 4, 20, message="four attempts")
    broker.join("default", timeout=5_000)
    assert len(attempts) == 4
    assert broker.queue_stats("default").dead_lettered == 0
    # Dramatiq delays the retry after the n-th failure (n = 0, 1, ...) by min_backoff * 2**n
    # times 1 to 2 (at most max_backoff). Each gap must be at least its lower bound.
    gaps_ms = [(b - a) * 1000 for a, b in zip(attempts, attempts[1:])]
    lower_bounds_ms = [100, 200, 400]
    assert all(gap >= bound for gap, bound in zip(gaps_ms, lower_bounds_ms)), gaps_ms


def test_exhausted_retries_end_in_the_dead_letter_stream(broker, worker):
    @dramatiq.actor(max_retries=1, min_backoff=10, max_backoff=20)
    def broken(order):
        raise ValueError(f"cannot process {order}")

    worker()
    broken.send("A-1")
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 20, message="a dead letter")
    broker.join("default", timeout=5_000)
    [letter] = dead_letters(broker)
    body = dramatiq.Message.decode(letter.data)
    assert body.args == ("A-1",)
    assert body.options["retries"] == 2
    assert "ValueError: cannot process A-1" in letter.headers["Natsq-Reason"]


def test_throws_dead_letters_without_retrying(broker, worker):
    calls = []

    @dramatiq.actor(throws=(KeyError,), max_retries=5)
    def strict():
        calls.append(1)
        raise KeyError("missing")

    worker()
    strict.send()
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 10, message="a dead letter")
    assert calls == [1]


def test_retry_when_decides_about_retries(broker, worker):
    calls = []

    @dramatiq.actor(retry_when=lambda retries, exc: retries < 2, min_backoff=10, max_backoff=20)
    def decided():
        calls.append(1)
        raise RuntimeError("again")

    worker()
    decided.send()
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 20, message="a dead letter")
    assert len(calls) == 3


def test_delayed_messages_wait_on_the_server_and_then_run(broker, worker):
    ran_at = []

    @dramatiq.actor
    def later():
        ran_at.append(time.monotonic())

    worker()
    sent_at = time.monotonic()
    later.send_with_options(delay=800)
    stats = broker.queue_stats("default")
    assert (stats.scheduled, stats.pending) == (1, 0)
    wait_until(lambda: ran_at, 10, message="the delayed message")
    assert 0.75 <= ran_at[0] - sent_at < 3
    assert broker.queue_stats("default").scheduled == 0


def test_a_task_longer_than_the_ack_wait_runs_once(make_broker):
    broker = make_broker(ack_wait_ms=1_000)
    dramatiq.set_broker(broker)
    runs = []

    @dramatiq.actor
    def long_task():
        runs.append(1)
        time.sleep(3.5)

    workers = [dramatiq.Worker(broker, worker_timeout=100, worker_threads=2) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        long_task.send()
        broker.join("default", timeout=15_000)
        assert runs == [1]
        assert broker.queue_stats("default").redelivered == 0
    finally:
        for w in workers:
            w.stop(timeout=5_000)


def test_time_limit_fails_the_message(broker, worker):
    @dramatiq.actor(time_limit=200, max_retries=0)
    def slow():
        for _ in range(50):
            time.sleep(0.1)

    assert any(isinstance(m, TimeLimit) for m in broker.middleware)
    broker.emit_after("process_boot")  # the dramatiq CLI does this; it starts TimeLimit's timer
    worker()
    slow.send()
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 10, message="a dead letter")
    assert "TimeLimitExceeded" in dead_letters(broker)[0].headers["Natsq-Reason"]


def test_age_limit_skips_and_dead_letters_old_messages(broker, worker):
    ran = []

    @dramatiq.actor(max_age=1)
    def fresh_only():
        ran.append(1)

    assert any(isinstance(m, AgeLimit) for m in broker.middleware)
    fresh_only.send_with_options(delay=300)
    worker()
    time.sleep(0.2)
    broker.join("default", timeout=5_000)
    assert ran == []
    # Dramatiq's AgeLimit fails an expired message: it is nacked, as with any broker.
    assert broker.queue_stats("default").dead_lettered == 1


def test_callbacks_pipelines_and_groups_with_results(make_broker, valkey_server, namespace):
    broker = make_broker(middleware=None)
    broker.add_middleware(Results(backend=RedisBackend(url=valkey_server.url, namespace=namespace)))
    assert any(isinstance(m, Callbacks) for m in broker.middleware)
    assert any(isinstance(m, Pipelines) for m in broker.middleware)
    assert any(isinstance(m, Retries) for m in broker.middleware)
    dramatiq.set_broker(broker)
    succeeded = []

    @dramatiq.actor(store_results=True)
    def add(x, y):
        return x + y

    @dramatiq.actor
    def on_ok(message, result):
        succeeded.append(result)

    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=4)
    worker.start()
    try:
        pipe = add.message(1, 2) | add.message(10) | add.message(100)
        pipe.run()
        assert pipe.get_result(block=True, timeout=10_000) == 113

        group = dramatiq.group(add.message(i, i) for i in range(5)).run()
        assert sorted(group.get_results(block=True, timeout=10_000)) == [0, 2, 4, 6, 8]

        add.send_with_options(args=(20, 22), on_success=on_ok)
        wait_until(lambda: succeeded, 10, message="the success callback")
        assert succeeded == [42]
    finally:
        worker.stop(timeout=5_000)


def test_unknown_actor_is_dead_lettered(broker, worker):
    @dramatiq.actor
    def known():
        pass

    worker()
    broker.enqueue(dramatiq.Message(queue_name="default", actor_name="ghost", args=(), kwargs={}, options={}))
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 10, message="a dead letter")
    assert "ActorNotFound" in dead_letters(broker)[0].headers["Natsq-Reason"]


@pytest.mark.parametrize("body", [b"not json", b'{"no": "fields"}'])
def test_undecodable_messages_are_dead_lettered(broker, worker, body):
    @dramatiq.actor
    def known():
        pass

    worker()

    async def publish():
        await broker._connection.open()
        await broker._connection.js.publish(broker.topology.queue_subject("default"), body)

    broker._run(publish())
    wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 10, message="a dead letter")
    assert dead_letters(broker)[0].data == body
