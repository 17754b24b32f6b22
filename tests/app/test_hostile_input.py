"""Hostile or careless input: clear 4xx answers, nothing internal in them, nothing cached."""

from __future__ import annotations

from dataclasses import replace

import pytest
import requests

from natsq import tasks
from tests.app.helpers import submit, wait_for_state
from tests.conftest import free_port


@pytest.mark.parametrize("depth", [33, 5_000, 200_000])
def test_deeply_nested_json_is_a_400(stack, depth):
    body = '{"actor": "wait", "payload": {"seconds": ' + "[" * depth + "]" * depth + "}}"
    response = requests.post(f"{stack.gateway_url}/task", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400, response.text
    assert "nests deeper than 32 levels" in response.json()["error"]["message"]


def test_nesting_within_the_limit_reaches_validation(stack):
    body = '{"actor": "wait", "payload": {"seconds": ' + "[" * 30 + "]" * 30 + "}}"
    response = requests.post(f"{stack.gateway_url}/task", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("value", ["5", False, 5.5], ids=["string", "bool", "float"])
def test_json_types_are_not_coerced(stack, value):
    response = submit(stack.gateway_url, "count_primes", {"limit": value})
    assert response.status_code == 422, response.text
    assert submit(stack.gateway_url, "wait", {"seconds": 0}, delay_ms=False).status_code == 422


def test_results_and_errors_are_never_cached(stack):
    accepted = submit(stack.gateway_url, "count_primes", {"limit": 10})
    assert accepted.headers["Cache-Control"] == "no-store"
    done = wait_for_state(stack.gateway_url, accepted.json()["task_id"], "succeeded")
    read = requests.get(f"{stack.gateway_url}/task/{done['task_id']}", timeout=5)
    assert read.headers["Cache-Control"] == "no-store"
    assert requests.get(f"{stack.gateway_url}/task/nope", timeout=5).headers["Cache-Control"] == "no-store"


def test_queue_errors_do_not_name_servers(make_stack):
    port = free_port()  # nothing listens there
    system = make_stack(f"nats://127.0.0.1:{port}")
    system.start_gateway()
    for _ in range(3):  # the first may time out behind the warm-up's connect; later ones fail to connect
        response = requests.get(f"{system.gateway_url}/stats", timeout=30)
        assert response.status_code == 503, response.text
        assert "127.0.0.1" not in response.text and str(port) not in response.text
    # The operator still finds the address in the log.
    assert f"127.0.0.1:{port}" in system.services[0].output()


def test_a_task_shows_its_exception_text_only_when_it_opts_in():
    spec = tasks.flaky
    error = RuntimeError("password=hunter2 at db.internal:5432")
    assert spec.public_error(error) == "RuntimeError"
    assert replace(spec, public_errors=True).public_error(error) == "RuntimeError: password=hunter2 at db.internal:5432"
