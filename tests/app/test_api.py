"""Submitting tasks and reading them back through the real gateway, workers and servers."""

from __future__ import annotations

import time
import uuid

import jsonschema
import pytest
import requests

from tests.app.helpers import submit, task, wait_for_state
from tests.conftest import wait_until


def test_a_task_runs_and_its_result_can_be_read(stack):
    response = submit(stack.gateway_url, "count_primes", {"limit": 100})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["state"] == "queued"
    assert response.headers["Location"] == accepted["status_url"] == f"/task/{accepted['task_id']}"
    done = wait_for_state(stack.gateway_url, accepted["task_id"], "succeeded")
    assert done["result"] == {"limit": 100, "primes": 25}
    assert done["attempts"] == 1
    assert done["actor"] == "count_primes"
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_a_failing_task_is_retried_until_it_succeeds(stack):
    task_id = submit(stack.gateway_url, "flaky", {"failures": 2, "message": "third time"}).json()["task_id"]
    done = wait_for_state(stack.gateway_url, task_id, "succeeded")
    assert done["attempts"] == 3
    assert done["result"] == {"message": "third time", "attempts": 3}


def test_a_task_that_keeps_failing_is_dead_lettered(stack):
    before = _stats(stack)["queues"]["default"]["dead_lettered"]
    task_id = submit(stack.gateway_url, "flaky", {"failures": 50}).json()["task_id"]
    done = wait_for_state(stack.gateway_url, task_id, "dead-lettered", timeout=30)
    assert done["attempts"] == 4  # max_retries = 3
    # Only the type: the exception's text stays in the worker's log (the task does not opt in).
    assert done["error"] == "TransientError"
    assert _stats(stack)["queues"]["default"]["dead_lettered"] == before + 1


def _stats(system) -> dict:
    return requests.get(f"{system.gateway_url}/stats", timeout=10).json()


def test_a_delayed_task_waits(stack):
    sent = time.monotonic()
    task_id = submit(stack.gateway_url, "wait", {"seconds": 0}, delay_ms=1_000).json()["task_id"]
    assert task(stack.gateway_url, task_id)["state"] == "queued"
    wait_for_state(stack.gateway_url, task_id, "succeeded")
    assert time.monotonic() - sent >= 1.0


def test_an_idempotency_key_returns_the_same_task_and_enqueues_nothing_new(make_stack, nats_server):
    system = make_stack(nats_server.url)  # a namespace of its own: exact counts
    system.start_gateway()  # no worker yet: whatever is enqueued stays pending
    key = f"order-{uuid.uuid4()}"
    headers = {"Idempotency-Key": key}
    first = submit(system.gateway_url, "wait", {"seconds": 0.2}, headers=headers)
    second = submit(system.gateway_url, "wait", {"seconds": 0.2}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _stats(system)["queues"]["default"]["pending"] == 1
    system.start_worker()
    done = wait_for_state(system.gateway_url, first.json()["task_id"], "succeeded")
    assert done["attempts"] == 1
    wait_until(lambda: _stats(system)["queues"]["default"]["in_flight"] == 0, 10, message="the ack")
    stats = _stats(system)
    assert stats["workers"]["processed"] == 1
    assert stats["queues"]["default"]["pending"] == 0


def test_stats_report_valkey_queues_and_workers(stack):
    before = _stats(stack)
    task_id = submit(stack.gateway_url, "count_primes", {"limit": 10}).json()["task_id"]
    wait_for_state(stack.gateway_url, task_id, "succeeded")
    stats = _stats(stack)
    assert stats["valkey"]["keys"] > before["valkey"]["keys"]  # the task's record
    assert set(stats["queues"]["default"]) == {"pending", "in_flight", "redelivered", "scheduled", "dead_lettered"}
    assert stats["workers"]["processed"] == before["workers"]["processed"] + 1


BAD_REQUESTS = [
    pytest.param(dict(data="{not json", headers={"Content-Type": "application/json"}), 400, None, id="malformed-json"),
    pytest.param(dict(data="limit=5", headers={"Content-Type": "application/x-www-form-urlencoded"}), 415, None, id="not-json"),
    pytest.param(dict(json={"actor": "mine_bitcoin", "payload": {}}), 422, "actor", id="unknown-actor"),
    pytest.param(dict(json={"actor": "count_primes", "payload": {"limit": "many"}}), 422, "payload.limit", id="wrong-type"),
    pytest.param(dict(json={"actor": "count_primes", "payload": {}}), 422, "payload.limit", id="missing-field"),
    pytest.param(dict(json={"actor": "wait", "payload": {"seconds": 1, "extra": 1}}), 422, "payload.extra", id="extra-field"),
    pytest.param(dict(json={"actor": "wait", "payload": {"seconds": 1}, "delay_ms": -5}), 422, "delay_ms", id="negative-delay"),
    pytest.param(dict(json=["not", "an", "object"]), 422, None, id="array-body"),
    pytest.param(dict(data="x" * (1_048_576 + 10), headers={"Content-Type": "application/json"}), 413, None, id="too-large"),
    pytest.param(dict(json={"actor": "wait", "payload": {"seconds": 1}}, headers={"Idempotency-Key": "x" * 300}), 400, "Idempotency-Key", id="long-key"),
]


@pytest.mark.parametrize("request_kwargs, status, field", BAD_REQUESTS)
def test_bad_input_gets_a_clear_json_error(stack, request_kwargs, status, field):
    response = requests.post(f"{stack.gateway_url}/task", timeout=10, **request_kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and "Traceback" not in response.text
    assert error.get("field") == field


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/task/4b8a9cd6-1a7e-4a3e-9f3e-0b8d9c3f7a11", 404), ("GET", "/task/not-a-uuid", 404),
     ("GET", "/no/such/route", 404), ("DELETE", "/task", 405)],
)
def test_unknown_things_get_json_errors(stack, method, path, status):
    response = requests.request(method, f"{stack.gateway_url}{path}", timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["code"] in {"not_found", "method_not_allowed"}


def test_health_and_readiness(stack):
    assert requests.get(f"{stack.gateway_url}/healthz", timeout=5).json() == {"status": "ok"}
    ready = requests.get(f"{stack.gateway_url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"nats": True, "valkey": True}}


def _counter(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_requests_across_gunicorn_workers(stack):
    before = _counter(requests.get(f"{stack.gateway_url}/metrics", timeout=10).text,
                      "natsq_http_requests_total", route="/healthz", status="200")
    # Fresh connections spread over both gunicorn workers.
    for _ in range(40):
        requests.get(f"{stack.gateway_url}/healthz", timeout=5)
    text = requests.get(f"{stack.gateway_url}/metrics", timeout=10).text
    assert _counter(text, "natsq_http_requests_total", route="/healthz", status="200") - before == 40
    assert 'natsq_queue_messages{queue="default",state="pending"}' in text
    assert "natsq_broker_up 1.0" in text
    assert "natsq_publish_duration_seconds_count" in text


def test_worker_metrics_come_from_dramatiq_prometheus_middleware(stack):
    before = _counter(requests.get(stack.worker_metrics_url, timeout=10).text, "dramatiq_messages_total",
                      actor_name="count_primes")
    task_id = submit(stack.gateway_url, "count_primes", {"limit": 50}).json()["task_id"]
    wait_for_state(stack.gateway_url, task_id, "succeeded")
    text = requests.get(stack.worker_metrics_url, timeout=10).text
    assert _counter(text, "dramatiq_messages_total", actor_name="count_primes") == before + 1


def test_openapi_describes_every_route_and_the_responses_served(stack):
    document = requests.get(f"{stack.gateway_url}/openapi.json", timeout=5).json()
    assert document["openapi"] == "3.1.0"
    public = {path for path in document["paths"] if not path.startswith("/admin/")}  # admin: tests/app/test_admin.py
    assert public == {"/task", "/task/{task_id}", "/tasks", "/periodic", "/stats", "/healthz", "/readyz",
                      "/metrics", "/openapi.json"}

    def check(response: requests.Response, path: str, method: str) -> None:
        spec = document["paths"][path][method]["responses"][str(response.status_code)]
        _validate(document, spec["content"]["application/json"]["schema"], response.json())

    accepted = submit(stack.gateway_url, "count_primes", {"limit": 20})
    check(accepted, "/task", "post")
    done = wait_for_state(stack.gateway_url, accepted.json()["task_id"], "succeeded")
    check(requests.get(f"{stack.gateway_url}/task/{done['task_id']}", timeout=5), "/task/{task_id}", "get")
    check(requests.get(f"{stack.gateway_url}/task/{done['task_id']}?wait=1", timeout=5), "/task/{task_id}", "get")
    check(requests.delete(f"{stack.gateway_url}/task/{done['task_id']}", timeout=5), "/task/{task_id}", "delete")
    later = submit(stack.gateway_url, "wait", {"seconds": 0}, delay_ms=60_000).json()["task_id"]
    check(requests.delete(f"{stack.gateway_url}/task/{later}", timeout=5), "/task/{task_id}", "delete")
    check(requests.get(f"{stack.gateway_url}/tasks?limit=3", timeout=5), "/tasks", "get")
    check(requests.get(f"{stack.gateway_url}/tasks?state=nope", timeout=5), "/tasks", "get")
    check(requests.get(f"{stack.gateway_url}/periodic", timeout=5), "/periodic", "get")
    check(requests.get(f"{stack.gateway_url}/stats", timeout=5), "/stats", "get")
    check(requests.get(f"{stack.gateway_url}/readyz", timeout=5), "/readyz", "get")
    check(requests.get(f"{stack.gateway_url}/healthz", timeout=5), "/healthz", "get")
    check(submit(stack.gateway_url, "nope", {}), "/task", "post")
    check(requests.post(f"{stack.gateway_url}/task", data="{", headers={"Content-Type": "application/json"}, timeout=5), "/task", "post")
    # Every documented request schema accepts what the gateway accepts.
    _validate(document, document["paths"]["/task"]["post"]["requestBody"]["content"]["application/json"]["schema"],
              {"actor": "wait", "payload": {"seconds": 1}, "delay_ms": 5})


def _validate(document: dict, schema: dict, instance: object) -> None:
    from referencing import Registry, Resource

    root = Resource.from_contents({**document, "$schema": "https://json-schema.org/draft/2020-12/schema"})
    registry = Registry().with_resource("urn:openapi", root)
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:openapi#" + _pointer_to(document, schema)} if "$ref" not in schema else
        {"$ref": "urn:openapi" + schema["$ref"]},
        registry=registry,
    )
    validator.validate(instance)


def _pointer_to(document: dict, schema: dict) -> str:
    """JSON pointer to an inline schema of the document (request bodies)."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            if body is schema:
                escaped = path.replace("~", "~0").replace("/", "~1")
                return f"/paths/{escaped}/{method}/requestBody/content/application~1json/schema"
    raise LookupError("schema not found in the document")
