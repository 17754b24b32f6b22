"""Nothing is lost when processes die: real dramatiq CLI workers, real nats-server."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from dramatiq_nats import NatsBroker
from tests.conftest import VENV_BIN, Service, subprocess_env, wait_until

pytestmark = pytest.mark.timeout(120)


class Marks:
    def __init__(self, path: Path) -> None:
        self.path = path

    def count(self, kind: str, token: str) -> int:
        return len(list(self.path.glob(f"{kind}.{token}.*")))

    def tokens(self, kind: str) -> set[str]:
        return {p.name.split(".")[1] for p in self.path.glob(f"{kind}.*")}


@pytest.fixture
def fault_setup(tmp_path, namespace):
    marks_dir = tmp_path / "marks"
    marks_dir.mkdir()
    workers: list[Service] = []
    brokers: list[NatsBroker] = []

    def setup(nats_url: str, ack_wait_ms: int = 2_000, max_deliveries: int = 10):
        env = subprocess_env(
            TEST_NATS_URL=nats_url, TEST_NAMESPACE=namespace, TEST_ACK_WAIT_MS=str(ack_wait_ms),
            TEST_MAX_DELIVERIES=str(max_deliveries), TEST_MARKS=str(marks_dir),
        )
        producer = NatsBroker(nats_url, namespace=namespace, ack_wait_ms=ack_wait_ms, max_deliveries=max_deliveries)
        producer.declare_queue("default")
        brokers.append(producer)

        def start_worker(threads: int = 2, prefetch: int = 0) -> Service:
            """``dramatiq tests.broker.fault_actors``; prefetch 0 keeps Dramatiq's default."""
            worker_env = {**env, "dramatiq_queue_prefetch": str(prefetch)} if prefetch else env
            worker = Service(
                "worker",
                # A short fork timeout: a poison may kill the worker process before it tells the
                # main process it booted, which then waits this long before noticing the death.
                [str(VENV_BIN / "dramatiq"), "tests.broker.fault_actors", "--processes", "1",
                 "--threads", str(threads), "--worker-shutdown-timeout", "20000", "--worker-fork-timeout", "2000"],
                worker_env,
                tmp_path,
            )
            workers.append(worker)
            # A poison message may kill it before it says so.
            wait_until(lambda: "ready for action" in worker.output() or not worker.alive(), 30,
                       message="the worker to boot")
            return worker

        return producer, start_worker, Marks(marks_dir)

    yield setup
    for worker in workers:
        worker.kill()
    for broker in brokers:
        broker.close()


def send(broker: NatsBroker, actor: str, *args, delay: int | None = None) -> None:
    import dramatiq

    broker.enqueue(dramatiq.Message(queue_name="default", actor_name=actor, args=args, kwargs={}, options={}), delay=delay)


def test_worker_killed_mid_task_loses_nothing(nats_server, fault_setup):
    producer, start_worker, marks = fault_setup(nats_server.url, ack_wait_ms=2_000)
    first = start_worker()
    send(producer, "work", "t1", 2.0)
    wait_until(lambda: marks.count("start", "t1"), 10, message="the task to start")
    first.kill()  # SIGKILL to every process of the worker, as when its node dies
    assert marks.count("done", "t1") == 0

    start_worker()
    wait_until(lambda: marks.count("done", "t1"), 20, message="the task to be redelivered and finish")
    producer.join("default", timeout=10_000)
    assert marks.count("start", "t1") == 2


def test_poison_message_ends_in_dead_letters_after_max_deliveries(nats_server, fault_setup):
    producer, start_worker, marks = fault_setup(nats_server.url, ack_wait_ms=1_000, max_deliveries=2)
    send(producer, "crash", "p1")
    send(producer, "work", "ok1")
    # Like a Deployment, restart the worker whenever the poison message kills it.
    deadline = time.monotonic() + 60
    while producer.queue_stats("default").dead_lettered == 0:
        assert time.monotonic() < deadline, "the poison message never reached the dead-letter stream"
        # Prefetch 1: a crash also counts a delivery of every message the
        # process held, so only the poison message may be held here.
        worker = start_worker(threads=1, prefetch=1)
        while worker.alive() and producer.queue_stats("default").dead_lettered == 0:
            time.sleep(0.1)
    assert marks.count("start", "p1") == 2  # max_deliveries runs, then dead-lettered unrun
    wait_until(lambda: marks.count("done", "ok1"), 20, message="the healthy message")


def test_a_message_that_kills_its_worker_takes_no_other_message_to_the_dead_letters(nats_server, fault_setup):
    producer, start_worker, marks = fault_setup(nats_server.url, ack_wait_ms=1_000, max_deliveries=3)
    healthy = [f"ok{n}" for n in range(6)]
    # Sent before the worker starts: it takes them all in one pull and starts them in order, so the
    # poison kills the healthy ones running beside it; then all seven come back together.
    for token in healthy:
        send(producer, "work", token, 1.0)
    send(producer, "crash", "p1")
    deadline = time.monotonic() + 90
    while producer.queue_stats("default").dead_lettered == 0:
        assert time.monotonic() < deadline, "the poison message never reached the dead-letter stream"
        worker = start_worker(threads=8)  # restarted whenever the poison kills it, as by a Deployment
        while worker.alive() and producer.queue_stats("default").dead_lettered == 0:
            time.sleep(0.1)
    wait_until(lambda: all(marks.count("done", t) for t in healthy) or producer.queue_stats("default").dead_lettered > 1,
               30, message="the healthy messages to finish")
    assert producer.queue_stats("default").dead_lettered == 1  # the poison alone
    assert marks.count("start", "p1") == 3  # max_deliveries runs
    assert all(marks.count("done", t) == 1 for t in healthy)


def test_sigterm_finishes_the_running_task_and_hands_back_the_rest(nats_server, fault_setup):
    # A long ack wait: only an explicit hand-back (nak) lets another worker
    # take the prefetched messages within the test's time.
    producer, start_worker, marks = fault_setup(nats_server.url, ack_wait_ms=60_000)
    first = start_worker(threads=1)
    send(producer, "work", "long", 2.0)
    wait_until(lambda: marks.count("start", "long"), 10, message="the long task to start")
    for n in range(4):
        send(producer, "work", f"short{n}")
    assert first.terminate(20) == 0  # SIGTERM, as Kubernetes stops a container
    start_worker()
    assert marks.count("done", "long") == 1
    wait_until(lambda: all(marks.count("done", f"short{n}") for n in range(4)), 15, message="the handed-back tasks")
    producer.join("default", timeout=10_000)


def test_nats_server_killed_under_load_loses_no_acknowledged_message(start_nats, fault_setup):
    server = start_nats()
    producer, start_worker, marks = fault_setup(server.url, ack_wait_ms=2_000)
    start_worker(threads=4)
    sent: list[str] = []
    errors: list[Exception] = []

    def produce():
        for n in range(600):
            token = f"m{n}"
            try:
                send(producer, "work", token)
                sent.append(token)
            except Exception as e:  # refused while the server is down: never acknowledged
                errors.append(e)
            time.sleep(0.002)

    thread = threading.Thread(target=produce)
    thread.start()
    wait_until(lambda: len(sent) > 150, 20, message="load to build up")
    server.kill()
    time.sleep(0.5)
    server.start()
    thread.join(60)
    assert len(sent) > 300
    wait_until(lambda: set(sent) <= marks.tokens("done"), 60, message="every acknowledged message to run")
    producer.join("default", timeout=20_000)


def test_delayed_messages_survive_restarts_of_every_process(start_nats, fault_setup):
    server = start_nats()
    producer, start_worker, marks = fault_setup(server.url)
    worker = start_worker()
    send(producer, "work", "later", delay=2_500)
    worker.kill()
    server.restart()
    start_worker()
    assert marks.count("done", "later") == 0
    wait_until(lambda: marks.count("done", "later"), 20, message="the delayed message")

