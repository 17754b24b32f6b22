"""Waiting, cancelling and listing through the gateway; messages forged on NATS, through a real worker."""

from __future__ import annotations

import time

import dramatiq
import pytest
import requests

from natsq.client import Client, TaskDeadLettered
from dramatiq_nats import NatsBroker
from tests.app.helpers import submit, task, wait_for_state
from tests.conftest import wait_until


@pytest.fixture
def forge(stack, nats_server):
    """Publishes messages straight to NATS, past the gateway, as an intruder on the network could."""
    broker = NatsBroker(nats_server.url, namespace=stack.env["NATSQ_NAMESPACE"])
    broker.declare_queue("default")

    def publish(actor: str, kwargs: dict, **options) -> str:
        message = dramatiq.Message(queue_name="default", actor_name=actor, args=(), kwargs=kwargs, options=options)
        broker.enqueue(message)
        return message.message_id

    yield publish
    broker.close()


def forged_task_ends(base_url: str, task_id: str, state: str) -> dict:
    """A forged task has no record until a worker picks it up."""

    def ended():
        response = requests.get(f"{base_url}/task/{task_id}", timeout=5)
        return response.status_code == 200 and response.json()["state"] == state and response.json()

    return wait_until(ended, 20, interval=0.05, message=f"the forged task to be {state}")


def test_a_forged_payload_fails_for_good_with_a_clear_reason(stack, forge):
    task_id = forge("count_primes", {"limit": "all of them"})
    done = forged_task_ends(stack.gateway_url, task_id, "dead-lettered")
    assert done["attempts"] == 1  # not retried
    assert done["error"].startswith("InvalidPayload: payload does not match CountPrimesPayload: limit:")
    with pytest.raises(TaskDeadLettered, match="InvalidPayload"):
        Client(stack.gateway_url).task(task_id).wait(5)


def test_message_options_the_gateway_never_sets_are_ignored(stack, forge):
    # Forged: no retries, and a callback to another actor. Both are dropped:
    # the task is retried as its own declaration says, and nothing else runs.
    task_id = forge("flaky", {"failures": 1, "message": "retried"}, max_retries=0, on_failure="wait")
    done = forged_task_ends(stack.gateway_url, task_id, "succeeded")
    assert done["attempts"] == 2 and done["result"] == {"message": "retried", "attempts": 2}


def test_a_long_poll_answers_when_the_task_ends(stack):
    task_id = submit(stack.gateway_url, "wait", {"seconds": 1}).json()["task_id"]
    started = time.monotonic()
    done = requests.get(f"{stack.gateway_url}/task/{task_id}?wait=10", timeout=15).json()
    assert done["state"] == "succeeded"
    assert 0.5 < time.monotonic() - started < 5


def test_a_long_poll_returns_the_task_as_it_is_after_its_bound(stack):
    task_id = submit(stack.gateway_url, "wait", {"seconds": 5}).json()["task_id"]
    started = time.monotonic()
    still = requests.get(f"{stack.gateway_url}/task/{task_id}?wait=1", timeout=15).json()
    assert still["state"] in {"queued", "running"}
    assert 0.9 < time.monotonic() - started < 3


@pytest.mark.parametrize("wait", ["-1", "21", "soon", "nan"])
def test_a_bad_wait_is_a_clear_error(stack, wait):
    task_id = submit(stack.gateway_url, "wait", {"seconds": 0}).json()["task_id"]
    response = requests.get(f"{stack.gateway_url}/task/{task_id}?wait={wait}", timeout=5)
    assert response.status_code == 422 and response.json()["error"]["field"] == "wait"


def test_cancelling_an_ended_or_unknown_task(stack):
    task_id = submit(stack.gateway_url, "wait", {"seconds": 0}).json()["task_id"]
    wait_for_state(stack.gateway_url, task_id, "succeeded")
    ended = requests.delete(f"{stack.gateway_url}/task/{task_id}", timeout=5)
    assert ended.status_code == 409 and "succeeded" in ended.json()["error"]["message"]
    unknown = requests.delete(f"{stack.gateway_url}/task/4b8a9cd6-1a7e-4a3e-9f3e-0b8d9c3f7a11", timeout=5)
    assert unknown.status_code == 404


def test_a_running_task_that_ignores_the_flag_finishes(stack):
    task_id = submit(stack.gateway_url, "wait", {"seconds": 1}).json()["task_id"]
    wait_for_state(stack.gateway_url, task_id, "running")
    asked = requests.delete(f"{stack.gateway_url}/task/{task_id}", timeout=5)
    assert asked.status_code == 202 and asked.json() == {"task_id": task_id, "state": "running", "cancel_requested": True}
    done = wait_for_state(stack.gateway_url, task_id, "succeeded")
    assert done["cancel_requested"] is True


@pytest.mark.parametrize(
    "query, field",
    [("state=lost", "state"), ("limit=0", "limit"), ("limit=201", "limit"), ("cursor=abc", "cursor"),
     ("created_after=yesterday", "created_after"), ("created_after=2026-01-01T00:00:00", "created_after"),
     ("colour=red", "colour")],
)
def test_bad_listing_queries_are_clear_errors(stack, query, field):
    response = requests.get(f"{stack.gateway_url}/tasks?{query}", timeout=5)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_listing_by_time(stack):
    before = task(stack.gateway_url, submit(stack.gateway_url, "wait", {"seconds": 0}).json()["task_id"])
    time.sleep(0.01)
    after = task(stack.gateway_url, submit(stack.gateway_url, "wait", {"seconds": 0}).json()["task_id"])
    client = Client(stack.gateway_url)
    newer = [t["task_id"] for t in client.tasks(created_after=after["created_at"])]
    older = [t["task_id"] for t in client.tasks(created_before=after["created_at"], page_size=5)]
    assert after["task_id"] in newer and before["task_id"] not in newer
    assert before["task_id"] in older and after["task_id"] not in older
