from __future__ import annotations

import dramatiq
import pytest
from dramatiq import Worker

from dramatiq_nats import NatsBroker


@pytest.fixture
def make_broker(nats_server, namespace):
    """Brokers on the shared server, in this test's own namespace."""
    brokers: list[NatsBroker] = []

    def make(**options) -> NatsBroker:
        options.setdefault("namespace", namespace)
        options.setdefault("ack_wait_ms", 2_000)
        options.setdefault("publish_timeout_ms", 5_000)
        broker = NatsBroker(options.pop("url", nats_server.url), **options)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def broker(make_broker):
    broker = make_broker()
    dramatiq.set_broker(broker)
    return broker


@pytest.fixture
def worker(broker):
    """An in-process Dramatiq worker, started by the test after declaring actors."""
    workers: list[Worker] = []

    def start(on: NatsBroker | None = None, **options) -> Worker:
        """A worker on ``broker``, or on another broker the test made (``on``)."""
        options.setdefault("worker_timeout", 100)
        options.setdefault("worker_threads", 4)
        w = Worker(on or broker, **options)
        w.start()
        workers.append(w)
        return w

    yield start
    for w in workers:
        w.stop(timeout=5_000)
