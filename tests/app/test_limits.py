"""Per-caller limits backed by Valkey: 429 with Retry-After, one caller never starves another."""

from __future__ import annotations

import asyncio

import nats
import pytest
import valkey

from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, token, wait_for_state
from tests.conftest import NatsServer, ValkeyServer


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, nats_server, valkey_server):
    """One worker, and two gateways: one limits requests a minute, the other unfinished tasks."""
    from tests.conftest import Stack

    system = Stack(tmp_path_factory.mktemp("limits"), nats_server.url, valkey_server.url, NATSQ_ENV="production",
                   NATSQ_JWT_SECRET=SECRET, NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE)
    system.start_worker()
    system.start_gateway(NATSQ_RATE_LIMIT_PER_MINUTE="3")
    rate_limited = system.gateway_url
    system.start_gateway(NATSQ_MAX_OUTSTANDING_TASKS="2")
    yield rate_limited, system.gateway_url
    system.stop()


def test_requests_over_the_rate_get_429_with_retry_after(gateways):
    url, _ = gateways
    carol, dave = token(SECRET, sub="carol"), token(SECRET, sub="dave")
    for _ in range(3):
        assert submit(url, "wait", {"seconds": 0}, headers=carol).status_code == 202
    refused = submit(url, "wait", {"seconds": 0}, headers=carol)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert submit(url, "wait", {"seconds": 0}, headers=dave).status_code == 202  # others are not affected


def test_unfinished_tasks_are_capped_until_they_end(gateways):
    _, url = gateways
    erin, frank = token(SECRET, sub="erin"), token(SECRET, sub="frank")
    first = [submit(url, "wait", {"seconds": 0.5}, headers=erin).json()["task_id"] for _ in range(2)]
    refused = submit(url, "wait", {"seconds": 0}, headers=erin)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_tasks" and refused.headers["Retry-After"]
    assert submit(url, "wait", {"seconds": 0}, headers=frank).status_code == 202
    for task_id in first:
        wait_for_state(url, task_id, "succeeded", headers=erin)
    assert submit(url, "wait", {"seconds": 0}, headers=erin).status_code == 202


def test_a_replayed_idempotency_key_takes_no_slot(gateways):
    _, url = gateways
    grace = token(SECRET, sub="grace")
    key = {"Idempotency-Key": "grace-order-1"}
    task_id = submit(url, "wait", {"seconds": 0.3}, headers={**grace, **key}).json()["task_id"]
    for _ in range(3):
        assert submit(url, "wait", {"seconds": 0.3}, headers={**grace, **key}).json()["task_id"] == task_id
    assert submit(url, "wait", {"seconds": 0.3}, headers=grace).status_code == 202  # the second slot is still free


def test_a_full_valkey_refuses_new_tasks_with_a_clear_503(tmp_path, make_stack, nats_server):
    """Valkey as k8s/ configures it (noeviction): full means a clear 503, never a silently evicted record."""
    server = ValkeyServer(tmp_path).start()
    try:
        client = valkey.Valkey(port=server.port)
        client.config_set("maxmemory-policy", "noeviction")
        client.set("earlier-caller-record", "kept", ex=3600)
        client.set("filler", b"x" * 2_000_000)
        client.config_set("maxmemory", "1mb")  # below what is used: Valkey is full
        system = make_stack(nats_server.url, NATSQ_VALKEY_URL=server.url)
        system.start_gateway()
        response = submit(system.gateway_url, "wait", {"seconds": 0})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_full" and response.headers["Retry-After"]
        assert client.get("earlier-caller-record") == b"kept"  # nothing was evicted to make room
    finally:
        server.stop()


def test_a_full_queue_refuses_new_tasks_with_a_clear_503_and_records_nothing(make_stack, start_nats, valkey_server):
    """JetStream's account limit reached (16 KiB here): 503 queue_full, no phantom task, the key still free."""
    server = start_nats(NatsServer.FULL_ACCOUNT_CONFIG)
    system = make_stack(server.url, NATSQ_MAX_OUTSTANDING_TASKS="100000")
    system.start_gateway()  # and no worker: the queue only fills
    namespace = system.env["NATSQ_NAMESPACE"]
    accepted = 0
    while (response := submit(system.gateway_url, "wait", {"seconds": 0})).status_code == 202 and accepted < 1_000:
        accepted += 1
    assert 10 < accepted < 1_000
    key = {"Idempotency-Key": "full-order-1"}
    refused = submit(system.gateway_url, "wait", {"seconds": 0}, headers=key)
    for answer in (response, refused):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == {"code": "queue_full",
                                          "message": "the task queue is full; the task was not accepted, retry later"}
        assert int(answer.headers["Retry-After"]) > 0

    client = valkey.Valkey.from_url(valkey_server.url)
    assert len(list(client.scan_iter(f"{namespace}:task:*"))) == accepted  # no record of a refused task
    assert not list(client.scan_iter(f"{namespace}:idem:*"))  # nor of its key
    [outstanding] = client.scan_iter(f"{namespace}:outstanding:*")
    assert client.zcard(outstanding) == accepted  # nor a caller's slot

    async def make_room():
        nc = await nats.connect(server.url)
        await nc.jetstream().purge_stream(f"{namespace}-tasks")
        await nc.close()

    asyncio.run(make_room())
    retried = submit(system.gateway_url, "wait", {"seconds": 0}, headers=key)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers  # a new task, not a phantom
