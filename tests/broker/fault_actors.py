"""Actors for fault tests, run by the real ``dramatiq`` CLI in subprocesses.

Each run leaves marker files in $TEST_MARKS so the test can tell which
attempts started and which finished, from outside the killed processes.
"""

import os
import signal
import time
import uuid
from pathlib import Path

import dramatiq

from dramatiq_nats import NatsBroker

broker = NatsBroker(
    os.environ["TEST_NATS_URL"],
    namespace=os.environ["TEST_NAMESPACE"],
    ack_wait_ms=int(os.environ["TEST_ACK_WAIT_MS"]),
    max_deliveries=int(os.environ.get("TEST_MAX_DELIVERIES", "10")),
)
dramatiq.set_broker(broker)
MARKS = Path(os.environ["TEST_MARKS"])


def mark(kind: str, token: str) -> None:
    (MARKS / f"{kind}.{token}.{os.getpid()}.{uuid.uuid4().hex[:6]}").touch()


@dramatiq.actor(max_retries=0)
def work(token: str, seconds: float = 0.0) -> None:
    mark("start", token)
    time.sleep(seconds)
    mark("done", token)


@dramatiq.actor(max_retries=0)
def crash(token: str) -> None:
    """A poison message: it takes its worker process down with it."""
    mark("start", token)
    os.kill(os.getpid(), signal.SIGKILL)
