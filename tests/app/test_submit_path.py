"""POST /task records the task in Valkey while JetStream stores it: what that overlap must keep.

A slow link between the gateway and Valkey lets a worker start and finish a task before the
gateway's record of it lands; a stopped NATS refuses the publish after the record was made.
"""

from __future__ import annotations

import uuid

import pytest
import requests
import valkey

from chaos.fault_proxy import FaultProxy, Faults
from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, task, token, wait_for_state
from tests.conftest import Stack

pytestmark = pytest.mark.timeout(120)

#: One way, gateway <-> Valkey: far longer than publishing a no-op task and running it.
SLOW_VALKEY_MS = 300


@pytest.fixture
def slow_valkey(valkey_server):
    proxy = FaultProxy(valkey_server.port, Faults(latency_ms=SLOW_VALKEY_MS)).start()
    yield f"redis://127.0.0.1:{proxy.port}"
    proxy.stop()


def test_a_task_that_ends_before_the_gateway_records_it_keeps_its_state_owner_and_slot(
        tmp_path, nats_server, valkey_server, slow_valkey):
    system = Stack(tmp_path, nats_server.url, valkey_server.url, NATSQ_ENV="production", NATSQ_JWT_SECRET=SECRET,
                   NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE, NATSQ_MAX_OUTSTANDING_TASKS="1")
    try:
        system.start_worker()  # straight to Valkey
        system.env["NATSQ_VALKEY_URL"] = slow_valkey
        system.start_gateway()
        alice = token(SECRET, sub="alice")
        accepted = submit(system.gateway_url, "count_primes", {"limit": 100}, headers=alice)
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        done = task(system.gateway_url, task_id, headers=alice)  # the caller sees it: the owner was recorded
        assert done["state"] == "succeeded", done
        assert done["result"] == {"limit": 100, "primes": 25}
        listed = requests.get(f"{system.gateway_url}/tasks", headers=alice, timeout=10).json()["tasks"]
        assert [t["task_id"] for t in listed] == [task_id]  # indexed once
        # Its outstanding slot was given back although it ended before its owner was known.
        again = submit(system.gateway_url, "count_primes", {"limit": 10}, headers=alice)
        assert again.status_code == 202, again.text
        wait_for_state(system.gateway_url, again.json()["task_id"], "succeeded", headers=alice)
    finally:
        system.stop()


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
