"""A task the broker dead-letters itself shows as dead-lettered, not running until its record expires."""

from __future__ import annotations

import pytest

from tests.app.helpers import submit, wait_for_state

pytestmark = pytest.mark.timeout(120)


def test_a_task_whose_worker_keeps_dying_shows_dead_lettered(make_stack, nats_server):
    system = make_stack(nats_server.url, NATSQ_ACK_WAIT_MS="2000", NATSQ_MAX_DELIVERIES="1")
    system.start_gateway()
    worker = system.start_worker(threads=1)
    task_id = submit(system.gateway_url, "wait", {"seconds": 30}).json()["task_id"]
    wait_for_state(system.gateway_url, task_id, "running")
    worker.kill()  # SIGKILL mid-run: the one run it was allowed never finished
    system.start_worker(threads=1)
    # Redelivered after the ack wait for a second run: dead-lettered unrun, and the state says so.
    record = wait_for_state(system.gateway_url, task_id, "dead-lettered", timeout=20)
    assert record["attempts"] == 1
