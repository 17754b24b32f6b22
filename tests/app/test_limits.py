"""Per-caller limits backed by Valkey: 429 with Retry-After, one caller never starves another."""

from __future__ import annotations

import pytest

from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, token, wait_for_state


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
