"""Per-caller isolation: a caller sees only their own tasks and idempotency keys."""

from __future__ import annotations

import uuid

import pytest
import requests

from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, token

TENANT_CLAIM = "org"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, nats_server, valkey_server):
    """A gateway with authentication and tenants, and no worker: tasks stay queued."""
    from tests.conftest import Stack

    system = Stack(tmp_path_factory.mktemp("isolation"), nats_server.url, valkey_server.url,
                   NATSQ_ENV="production", NATSQ_JWT_SECRET=SECRET, NATSQ_JWT_ISSUER=ISSUER,
                   NATSQ_JWT_AUDIENCE=AUDIENCE, NATSQ_JWT_TENANT_CLAIM=TENANT_CLAIM)
    system.start_gateway()
    yield system.gateway_url
    system.stop()


def caller(sub: str, org: str = "acme", scope: str = "tasks:write tasks:read") -> dict:
    return token(SECRET, sub=sub, org=org, scope=scope)


def alice() -> dict:
    """Made at use: a token made at import would expire while other modules' tests run."""
    return caller("alice")


def _read(gateway: str, task_id: str, headers: dict) -> requests.Response:
    return requests.get(f"{gateway}/task/{task_id}", headers=headers, timeout=5)


def test_another_callers_task_is_not_found(gateway):
    task_id = submit(gateway, "wait", {"seconds": 0}, headers=alice()).json()["task_id"]
    assert _read(gateway, task_id, alice()).status_code == 200
    unknown = _read(gateway, str(uuid.uuid4()), alice())
    for other in (caller("bob"), caller("alice", org="globex")):
        response = _read(gateway, task_id, other)
        assert response.status_code == 404
        # The same answer as for an id that does not exist: nothing to probe.
        assert response.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"


def test_an_admin_reads_every_callers_task(gateway):
    task_id = submit(gateway, "wait", {"seconds": 0}, headers=alice()).json()["task_id"]
    admin = caller("operator", org="ops", scope="tasks:read admin")
    read = _read(gateway, task_id, admin)
    assert read.status_code == 200
    assert "owner" not in read.json() and "_owner" not in read.json()


def test_idempotency_keys_are_per_caller(gateway):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    alices = submit(gateway, "wait", {"seconds": 0}, headers={**alice(), **key})
    bob = submit(gateway, "wait", {"seconds": 0}, headers={**caller("bob"), **key})
    assert alices.status_code == bob.status_code == 202
    assert alices.json()["task_id"] != bob.json()["task_id"]
    assert "Idempotent-Replayed" not in bob.headers
    again = submit(gateway, "wait", {"seconds": 0}, headers={**alice(), **key})
    assert again.json()["task_id"] == alices.json()["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "changed", [dict(payload={"seconds": 1}), dict(actor="count_primes", payload={"limit": 10}), dict(delay_ms=5)],
    ids=["payload", "actor", "delay"],
)
def test_a_reused_idempotency_key_with_a_different_request_is_refused(gateway, changed):
    key = {"Idempotency-Key": f"order-{uuid.uuid4()}"}
    first = {"actor": "wait", "payload": {"seconds": 0}}
    assert submit(gateway, **first, headers={**alice(), **key}).status_code == 202
    response = submit(gateway, **{**first, **changed}, headers={**alice(), **key})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("claims", [dict(sub=None), dict(org=None), dict(sub="")], ids=["no-sub", "no-tenant", "empty-sub"])
def test_a_token_that_names_no_caller_is_refused(gateway, claims):
    headers = token(SECRET, scope="tasks:write", **{"sub": "alice", "org": "acme", **claims})
    response = submit(gateway, "wait", {"seconds": 0}, headers=headers)
    assert response.status_code == 401, response.text
