"""How deliveries are settled when publishing around them fails: follow-ups, retries, dead letters.

Real nats-server, Dramatiq's own worker in-process.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import dramatiq
import pytest
from dramatiq.middleware import Middleware

from dramatiq_nats import consumer as consumer_module
from tests.broker.test_delivery import dead_letters
from tests.conftest import ROOT, NatsServer, wait_until

pytestmark = pytest.mark.timeout(90)


def update_stream(broker, stream: str, **changes) -> None:
    """Change a stream's settings as an operator would."""

    async def update():
        await broker._connection.open()
        js = broker._connection.js
        config = (await js.stream_info(stream)).config
        for name, value in changes.items():
            setattr(config, name, value)
        await js.update_stream(config)

    broker._run(update())


def start_worker(broker, threads: int = 1) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=threads)
    worker.start()
    return worker


class RecordNacks(Middleware):
    """Records what ``after_nack`` sees, as the app's TaskState middleware would."""

    def __init__(self) -> None:
        self.nacked: list[tuple[str, str]] = []

    def after_nack(self, broker, message):
        exception = getattr(message, "_exception", None)
        self.nacked.append((message.message_id, str(exception)))


def test_a_pipeline_step_whose_next_step_exceeds_max_payload_is_dead_lettered(broker, worker):
    second_ran = []

    @dramatiq.actor(max_retries=0)
    def produce():
        return "x" * 1_100_000  # the next step's message would exceed the server's 1 MB max_payload

    @dramatiq.actor
    def consume(data):
        second_ran.append(len(data))

    worker(worker_threads=1)
    pipe = produce.message() | consume.message()
    pipe.run()
    # Never both gone: either the next step ran or the first is a dead letter.
    wait_until(lambda: second_ran or broker.queue_stats("default").dead_lettered, 15, message="step 2 or a dead letter")
    broker.join("default", timeout=5_000)
    assert second_ran == []
    [letter] = dead_letters(broker)
    assert dramatiq.Message.decode(letter.data).actor_name == "produce"
    assert "max_payload" in letter.headers["Natsq-Reason"]


def test_a_callback_jetstream_refuses_dead_letters_its_delivery_with_the_reason(make_broker):
    broker = make_broker()
    nacks = RecordNacks()
    broker.add_middleware(nacks)
    dramatiq.set_broker(broker)
    called = []

    @dramatiq.actor
    def on_done(message, result):
        called.append(1)

    @dramatiq.actor
    def big_result():
        return "y" * 5_000

    broker.declare_queue("default")
    big_result.send_with_options(on_success=on_done)  # stored before the stream is limited
    update_stream(broker, broker.topology.task_stream, max_msg_size=2_000)
    worker = start_worker(broker)
    try:
        wait_until(lambda: broker.queue_stats("default").dead_lettered, 15, message="a dead letter")
        [letter] = dead_letters(broker)
        assert "maximum" in letter.headers["Natsq-Reason"]
        wait_until(lambda: nacks.nacked, 5, message="the nack hooks")
        assert called == []
    finally:
        worker.stop(timeout=5_000)


@pytest.fixture
def own_server(start_nats, make_broker):
    """A server of the test's own, which actors stop, and the broker on it (ack wait well past the outage)."""
    server = start_nats()
    broker = make_broker(url=server.url, ack_wait_ms=10_000, publish_timeout_ms=1_000)
    dramatiq.set_broker(broker)
    broker.declare_queue("default")
    return server, broker


def wait_for_failed_follow_up(caplog) -> None:
    wait_until(lambda: "waits for its follow-up messages" in caplog.text, 20, message="an enqueue to fail")


def test_a_follow_up_that_fails_while_nats_is_down_is_stored_later_and_runs_once(own_server, caplog):
    server, broker = own_server
    first, second = [], []

    @dramatiq.actor
    def step_one():
        first.append(1)
        server.stop()  # the next step's enqueue will fail
        return 21

    @dramatiq.actor
    def step_two(value):
        second.append(value)

    (step_one.message() | step_two.message()).run()
    worker = start_worker(broker)
    try:
        wait_for_failed_follow_up(caplog)
        server.start()
        wait_until(lambda: second, 20, message="the next step")
        broker.join("default", timeout=10_000)
        assert (first, second) == ([1], [21])
    finally:
        worker.stop(timeout=5_000)


def test_a_retry_copy_that_fails_while_nats_is_down_keeps_its_backoff(own_server, caplog):
    server, broker = own_server
    attempts: list[float] = []

    @dramatiq.actor(max_retries=3)
    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            server.stop()  # the retry copy's enqueue will fail
            raise dramatiq.Retry(delay=4_000)  # an exact backoff (Retries jitters computed ones)

    flaky.send()
    worker = start_worker(broker)
    try:
        wait_for_failed_follow_up(caplog)
        server.start()
        wait_until(lambda: len(attempts) == 2, 20, message="the retry")
        broker.join("default", timeout=10_000)
        # Neither handed back at once nor run twice: the copy waited out its backoff.
        assert len(attempts) == 2
        assert attempts[1] - attempts[0] >= 4.0 - 0.01  # the schedule's due time has millisecond precision
    finally:
        worker.stop(timeout=5_000)


def test_a_publish_that_raised_is_not_stored_after_the_reconnect(start_nats, make_broker):
    server = start_nats()
    broker = make_broker(url=server.url, publish_timeout_ms=500)
    broker.declare_queue("default")
    broker.connect()
    server.stop()  # the client may not have noticed yet when it publishes
    message = dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={})
    with pytest.raises(dramatiq.errors.ConnectionClosed):
        broker.enqueue(message)
    server.start()
    wait_until(lambda: broker.connected, 15, message="the reconnect")
    stats = broker.queue_stats("default")  # a round trip after nats-py flushed what it buffered
    assert (stats.pending, stats.in_flight) == (0, 0)


def test_a_retry_copy_jetstream_refuses_dead_letters_the_task_with_the_reason(make_broker):
    broker = make_broker()
    dramatiq.set_broker(broker)
    attempts = []

    @dramatiq.actor(max_retries=3, min_backoff=10, max_backoff=20)
    def fails_once():
        attempts.append(1)
        # The retry copy carries a traceback: JetStream will refuse it.
        update_stream(broker, broker.topology.task_stream, max_msg_size=600)
        raise RuntimeError("first attempt fails")

    worker = start_worker(broker)
    try:
        fails_once.send()
        wait_until(lambda: broker.queue_stats("default").dead_lettered, 15, message="a dead letter")
        [letter] = dead_letters(broker)
        assert "maximum" in letter.headers["Natsq-Reason"]
        assert attempts == [1]
    finally:
        worker.stop(timeout=5_000)


def test_max_deliveries_dead_letter_runs_the_nack_hooks(make_broker):
    broker = make_broker(max_deliveries=1, ack_wait_ms=1_000)
    nacks = RecordNacks()
    broker.add_middleware(nacks)
    dramatiq.set_broker(broker)
    ran = []

    @dramatiq.actor
    def task():
        ran.append(1)

    message = task.send()
    # A worker that takes the message and dies: it never settles it.
    doomed = make_broker(max_deliveries=1, ack_wait_ms=1_000)
    doomed.declare_queue("default")
    taker = doomed.consume("default", prefetch=1, timeout=100)
    wait_until(lambda: next(taker), 10, message="the first delivery")
    doomed.close()

    worker = start_worker(broker)
    try:
        wait_until(lambda: nacks.nacked, 15, message="the nack hooks")
        [(message_id, reason)] = nacks.nacked
        assert message_id == message.message_id
        assert "delivered 2 times" in reason
        assert broker.queue_stats("default").dead_lettered == 1
        assert ran == []
    finally:
        worker.stop(timeout=5_000)


def test_a_failing_dead_letter_publish_holds_up_nothing_and_is_tried_again(make_broker, monkeypatch):
    monkeypatch.setattr(consumer_module, "DEAD_LETTER_RETRY_DELAY_S", 0.5)
    broker = make_broker(ack_wait_ms=2_000)
    dramatiq.set_broker(broker)
    ran = threading.Event()

    @dramatiq.actor(max_retries=0)
    def broken():
        raise ValueError("x" * 500)

    @dramatiq.actor
    def healthy():
        ran.set()

    broker.declare_queue("default")
    update_stream(broker, broker.topology.dead_letter_stream, max_msg_size=100)  # every dead letter is refused
    broken.send()
    healthy.send()
    started = time.monotonic()
    worker = start_worker(broker, threads=1)
    try:
        # The one worker thread is not stuck on the dead letter: the next message runs within its ack wait.
        assert ran.wait(2.0), "the message behind the failed dead letter was held up"
        assert time.monotonic() - started < 2.0
        update_stream(broker, broker.topology.dead_letter_stream, max_msg_size=-1)
        wait_until(lambda: broker.queue_stats("default").dead_lettered == 1, 15, message="the dead letter")
        broker.join("default", timeout=5_000)
    finally:
        worker.stop(timeout=5_000)


def test_follow_ups_are_only_those_of_middleware_not_the_actors_own_enqueues(make_broker, caplog):
    broker = make_broker()
    dramatiq.set_broker(broker)
    caplog.set_level(logging.WARNING)
    ran = []

    @dramatiq.actor(max_retries=0)
    def sends_to_nowhere():
        try:
            broker.enqueue(dramatiq.Message(queue_name="undeclared", actor_name="x", args=(), kwargs={}, options={}))
        except dramatiq.errors.QueueNotFound:
            ran.append(1)  # the actor handles its own enqueue error

    worker = start_worker(broker)
    try:
        sends_to_nowhere.send()
        broker.join("default", timeout=5_000)
        assert ran == [1]
        assert broker.queue_stats("default").dead_lettered == 0
    finally:
        worker.stop(timeout=5_000)



def write_config_denying(path: Path, denied_subject: str | None) -> None:
    """The project's config with one user, who may not publish to ``denied_subject``."""
    deny = f', permissions: {{ publish: {{ deny: ["{denied_subject}"] }} }}' if denied_subject else ""
    base = (ROOT / "broker" / "nats-server.conf").read_text()
    path.write_text(base + f'\nauthorization {{ users = [ {{ user: natsq, password: natsq{deny} }} ] }}\n')


def test_a_worker_stopping_while_a_retry_copy_is_unpublished_hands_it_back_with_the_backoff(tmp_path, make_broker, caplog):
    # The retry copy is a delayed message: while the server denies publishing
    # schedules it gets no PubAck (a permissions violation is not a reply, and
    # no redeclaring of streams can undo it), as in an outage of that path.
    config = tmp_path / "nats.conf"
    server = NatsServer(tmp_path, config)
    broker = make_broker(url=server.url, user="natsq", password="natsq", ack_wait_ms=10_000, publish_timeout_ms=1_000)
    write_config_denying(config, broker.topology.schedule_filter("default"))
    server.start()
    dramatiq.set_broker(broker)
    attempts: list[float] = []

    @dramatiq.actor(max_retries=3)
    def flaky():
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise dramatiq.Retry(delay=3_000)

    broker.declare_queue("default")
    try:
        flaky.send()
        worker = start_worker(broker)
        wait_for_failed_follow_up(caplog)
        stopping = time.monotonic()
        worker.stop(timeout=5_000)  # the copy is still unpublished: handed back, with the retry's backoff
        write_config_denying(config, None)
        server.process.send_signal(signal.SIGHUP)
        worker = start_worker(broker)
        try:
            wait_until(lambda: len(attempts) == 2, 15, message="the second attempt")
            assert attempts[1] - stopping >= 3.0
            broker.join("default", timeout=5_000)
            assert len(attempts) == 2
        finally:
            worker.stop(timeout=5_000)
    finally:
        server.kill()
