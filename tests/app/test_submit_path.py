"""POST /task records the task in Valkey, then publishes it: a refused publish leaves nothing queued.

A stopped NATS refuses the publish after the record was made.
"""

from __future__ import annotations

import uuid

import pytest
import requests
import valkey

from tests.app.helpers import submit, wait_for_state

pytestmark = pytest.mark.timeout(120)


def task_records(valkey_url: str, namespace: str) -> list[dict]:
    client = valkey.Valkey.from_url(valkey_url)
    try:
        return [client.hgetall(key) for key in client.scan_iter(f"{namespace}:task:*")]
    finally:
        client.close()


def test_a_refused_publish_leaves_no_queued_task_and_a_key_to_retry_with(make_stack, start_nats, valkey_server):
    server = start_nats()
    system = make_stack(server.url, NATSQ_PUBLISH_TIMEOUT_MS="1000")
    system.start_gateway()
    system.start_worker()
    server.stop()

    refused = submit(system.gateway_url, "count_primes", {"limit": 100})
    assert refused.status_code == 503, refused.text
    key = f"order-{uuid.uuid4()}"
    refused_once = submit(system.gateway_url, "count_primes", {"limit": 100}, headers={"Idempotency-Key": key})
    assert refused_once.status_code == 503, refused_once.text
    # Neither request left a task anyone is shown as queued.
    assert requests.get(f"{system.gateway_url}/tasks", timeout=10).json()["tasks"] == []
    namespace = system.env["NATSQ_NAMESPACE"]
    assert [r for r in task_records(valkey_server.url, namespace) if b"publish_failed" not in r] == []

    server.start()
    retried = submit(system.gateway_url, "count_primes", {"limit": 100}, headers={"Idempotency-Key": key})
    assert retried.status_code == 202, retried.text  # the key was not used up by the refused request
    task_id = retried.json()["task_id"]
    done = wait_for_state(system.gateway_url, task_id, "succeeded")
    assert done["result"] == {"limit": 100, "primes": 25}
    assert [t["task_id"] for t in requests.get(f"{system.gateway_url}/tasks", timeout=10).json()["tasks"]] == [task_id]
