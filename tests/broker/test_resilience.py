"""The broker through real operations: credential rotation, outages, lost server state, restarts.

Every test runs against a real nats-server; most stop, reload or tamper with it.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import dramatiq
import pytest
from dramatiq.errors import ConnectionClosed

from dramatiq_nats import NatsBroker
from tests.conftest import ROOT, NatsServer, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def run_first_task(broker: NatsBroker, worker) -> tuple[dramatiq.Actor, list[int]]:
    """A recording actor on ``broker``, a worker, and one task seen through: (actor, runs)."""
    dramatiq.set_broker(broker)
    runs: list[int] = []

    @dramatiq.actor
    def record(n):
        runs.append(n)

    worker(on=broker, worker_threads=2)
    record.send(1)
    wait_until(lambda: runs == [1], 10, message="the first task")
    return record, runs


def enqueue_when_possible(send, timeout: float) -> None:
    """Send, retrying while the broker says the connection is not back yet."""

    def attempt() -> bool:
        try:
            send()
            return True
        except ConnectionClosed:
            return False

    wait_until(attempt, timeout, interval=0.2, message="an enqueue to succeed")


def sent_messages(broker: NatsBroker) -> int:
    """Messages this process's NATS client has sent (publishes, pulls, acks, API requests)."""
    return broker._connection.nc.stats["out_msgs"]


# -- a client closed for good ---------------------------------------------------


def write_auth_config(path: Path, password: str) -> None:
    base = (ROOT / "broker" / "nats-server.conf").read_text()
    path.write_text(base + f'\nauthorization {{ users = [ {{ user: natsq, password: "{password}" }} ] }}\n')


def test_a_client_closed_by_a_credential_rotation_is_replaced(tmp_path, make_broker, worker):
    config = tmp_path / "nats-auth.conf"
    write_auth_config(config, "first")
    server = NatsServer(tmp_path, config).start()
    try:
        broker = make_broker(url=server.url, user="natsq", password="first")
        record, runs = run_first_task(broker, worker)

        # The server drops clients whose credentials no longer hold; nats-py
        # then closes its client for good.
        write_auth_config(config, "rotated")
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: not broker.connected, 10, message="the server to drop the client")
        write_auth_config(config, "first")
        server.process.send_signal(signal.SIGHUP)

        enqueue_when_possible(lambda: record.send(2), 15)
        # Dramatiq rebuilds the consumer (after its 3 s restart delay) on the new client.
        wait_until(lambda: 2 in runs, 15, message="the consumer to receive on the new client")
    finally:
        server.kill()


# -- lost server state, repaired without hot loops --------------------------------


def test_a_stream_deleted_by_an_operator_is_declared_again(broker):
    @dramatiq.actor
    def record(n):
        pass

    consumer = broker.consume("default", prefetch=2, timeout=100)
    try:
        assert next(consumer) is None  # idle, its pull request waiting on the server
        before = sent_messages(broker)
        # Deleting the stream deletes its consumers too.
        broker._run(broker._connection.js.delete_stream(broker.topology.task_stream))
        record.send(1)  # the publish finds no stream, declares it again, and is stored
        message = wait_until(lambda: next(consumer), 10, message="the consumer to be declared again")
        assert message.args == (1,)
        consumer.ack(message)
        broker.join("default", timeout=5_000)
        # A publish, a few API requests, a few pulls and an ack: no re-pull storm.
        assert sent_messages(broker) - before < 30
    finally:
        consumer.close()


def test_a_memory_stream_lost_in_a_server_restart_is_declared_again(start_nats, make_broker, worker):
    server = start_nats()
    broker = make_broker(url=server.url, storage="memory")
    record, runs = run_first_task(broker, worker)

    server.restart()  # the memory stream and its consumer are gone
    wait_until(lambda: broker.connected, 10, message="the client to reconnect")
    enqueue_when_possible(lambda: record.send(2), 10)
    wait_until(lambda: 2 in runs, 10, message="the consumer to be declared again")

    # Idle now: one outstanding pull per queue, renewed every few seconds.
    time.sleep(0.5)
    before = sent_messages(broker)
    time.sleep(2)
    assert sent_messages(broker) - before <= 4


def limit_pull_batches(broker: NatsBroker, queue_name: str, max_batch: int) -> None:
    """What an operator might do: edit the consumer so that larger pull requests are refused."""

    async def update() -> None:
        connection, topology = broker._connection, broker.topology
        stream, name = topology.task_stream, topology.consumer_name(queue_name)
        info = await connection.js.consumer_info(stream, name)
        config = {**info.config.as_dict(), "max_batch": max_batch}
        request = json.dumps({"stream_name": stream, "config": config}).encode()
        reply = await connection.nc.request(f"$JS.API.CONSUMER.CREATE.{stream}.{name}", request, timeout=2)
        assert "error" not in json.loads(reply.data), reply.data

    broker._run(update())


def test_refused_pull_requests_back_off(broker):
    @dramatiq.actor
    def record(n):
        pass

    consumer = broker.consume("default", prefetch=4, timeout=100)
    try:
        assert next(consumer) is None
        limit_pull_batches(broker, "default", 1)
        record.send(1)
        record.send(2)
        taken = [wait_until(lambda: next(consumer), 5, message="a message") for _ in range(2)]
        for message in taken:
            consumer.ack(message)  # room for a pull of 2: the server refuses it (409), again and again
        time.sleep(0.5)
        before = sent_messages(broker)
        time.sleep(2)
        assert sent_messages(broker) - before <= 6  # "a few a second" at most, backing off
    finally:
        consumer.close()


# -- leases across short outages --------------------------------------------------


def test_a_running_task_survives_a_server_outage_shorter_than_its_ack_wait(start_nats, make_broker, worker):
    server = start_nats()
    broker = make_broker(url=server.url, ack_wait_ms=6_000)
    dramatiq.set_broker(broker)
    starts = []

    @dramatiq.actor(max_retries=0)
    def long_task():
        starts.append(time.monotonic())
        time.sleep(20)

    worker(on=broker, worker_threads=2)  # a free thread would start a redelivery at once
    long_task.send()
    wait_until(lambda: starts, 10, message="the task to start")
    time.sleep(1)
    server.stop()
    time.sleep(4)
    server.start()
    broker.join("default", timeout=40_000)
    assert len(starts) == 1


# -- per-consumer accounting ---------------------------------------------------


def test_a_message_is_settled_through_the_consumer_that_fetched_it(broker):
    @dramatiq.actor(queue_name="restarted")
    def noop(n):
        pass

    noop.send(0)
    first = broker.consume("restarted", prefetch=2, timeout=100)
    taken = wait_until(lambda: next(first), 5, message="a message")
    # Dramatiq replaces a consumer after a connection error while a worker
    # thread still runs `taken`, then acks it through the new consumer.
    first.close()
    second = broker.consume("restarted", prefetch=2, timeout=100)
    try:
        second.ack(taken)
        broker.enqueue_many(noop.message(n) for n in range(1, 6))
        held = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            message = next(second)
            if message is not None:
                held.append(message)
        assert len(held) == 2
        assert broker.queue_stats("restarted").in_flight == 2  # and `taken` was acknowledged
    finally:
        second.close()


def test_threads_racing_for_the_connection_share_one(nats_server):
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to provoke the race
    try:
        for _ in range(30):
            broker = NatsBroker(nats_server.url, namespace=f"t{uuid.uuid4().hex[:10]}")
            barrier = threading.Barrier(8)
            seen = []

            def grab():
                barrier.wait()
                seen.append(broker._connection)

            threads = [threading.Thread(target=grab) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert len({id(connection) for connection in seen}) == 1
    finally:
        sys.setswitchinterval(interval)


# -- close and start-up ----------------------------------------------------------


def test_a_broker_that_has_not_connected_yet_works(make_broker):
    fresh = make_broker()
    assert fresh.get_declared_queues() == set()
    fresh.flush_all()  # no queue declared yet: only the dead letters to purge

    for operation in (lambda b: b.flush("default"), lambda b: b.join("default", timeout=5_000)):
        fresh = make_broker()
        fresh.declare_queue("default")
        assert fresh.get_declared_queues() == {"default"}
        assert not fresh.connected
        operation(fresh)


def test_a_late_ack_after_close_starts_no_new_loop(broker):
    @dramatiq.actor
    def noop():
        pass

    noop.send()
    consumer = broker.consume("default", prefetch=1, timeout=100)
    message = wait_until(lambda: next(consumer), 5, message="a message")
    loop_thread = broker._loop._thread
    broker.close()
    assert not loop_thread.is_alive()
    consumer.ack(message)  # a worker thread finishing after the broker was closed
    consumer.close()
    assert broker._loop._thread is None


def test_close_never_raises_when_the_loop_cannot_be_joined(broker):
    broker.connect()
    loop_thread = broker._loop._thread
    outcome = []

    def close_from_the_loop_thread():  # its own thread cannot be joined
        try:
            broker.close()
            outcome.append("closed")
        except Exception as e:
            outcome.append(e)

    broker._loop.call_soon(close_from_the_loop_thread)
    wait_until(lambda: outcome, 10, message="close() to return")
    assert outcome == ["closed"]
    loop_thread.join(5)  # the loop stops once the callback returned
    assert not loop_thread.is_alive()


def test_with_nats_down_at_start_up_callers_fail_fast_and_a_background_connect_gets_through(tmp_path, make_broker):
    port = free_port()
    broker = make_broker(url=f"nats://127.0.0.1:{port}", connect_timeout_ms=500)
    broker.declare_queue("default")

    def send() -> None:
        broker.enqueue(dramatiq.Message(queue_name="default", actor_name="a", args=(), kwargs={}, options={}))

    with pytest.raises(ConnectionClosed):
        send()  # waits for the first attempt only

    failures = []

    def caller():
        try:
            send()
        except ConnectionClosed as e:
            failures.append(e)

    started = time.monotonic()
    callers = [threading.Thread(target=caller) for _ in range(8)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    assert len(failures) == 8
    assert time.monotonic() - started < 1.5  # not one connect timeout per caller

    server = NatsServer(tmp_path)
    server.port = port
    server.start()
    try:
        # Nobody calls: the background connect gets through by itself.
        wait_until(lambda: broker.connected, 20, message="the background connect")
        send()
        assert broker.queue_stats("default").pending == 1
    finally:
        server.kill()
