"""The example project (examples/shop) run as a user runs it: its own task module, the Python client."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from natsq.client import Client, ClientError, TaskCancelled, WaitTimeout
from tests.conftest import ROOT, Stack, wait_until

pytestmark = pytest.mark.timeout(120)

FAST_SWEEP = {"task": "sweep_abandoned_carts", "schedule": "@every 1s", "name": "sweep-every-second",
              "payload": {"older_than_minutes": 5}}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, nats_server, valkey_server):
    """Gateway and two workers (two replicas) running examples/shop, plus a periodic task from configuration."""
    system = Stack(tmp_path_factory.mktemp("shop"), nats_server.url, valkey_server.url,
                   NATSQ_TASK_MODULES="shop.tasks", NATSQ_PERIODIC_TASKS=json.dumps([FAST_SWEEP]),
                   PYTHONPATH=f"{ROOT}:{ROOT / 'examples'}")
    system.start_gateway()
    system.start_worker()
    system.start_worker()
    yield system
    system.stop()


@pytest.fixture
def client(shop):
    return Client(shop.gateway_url)


def test_a_task_of_the_project_runs_and_its_result_is_waited_for(client):
    handle = client.submit("send_receipt", {"order_id": "A-1", "email": "ann@example.com"})
    assert handle.wait(timeout=15) == {"order_id": "A-1", "sent_to": "ann@example.com"}
    assert handle.state()["actor"] == "send_receipt"


def test_the_payload_model_is_the_gateways_schema(client):
    with pytest.raises(ClientError) as refused:
        client.submit("send_receipt", {"order_id": "A-1", "email": "not an address"})
    assert (refused.value.status, refused.value.field) == (422, "payload.email")


def test_private_tasks_cannot_be_submitted(client):
    with pytest.raises(ClientError) as refused:
        client.submit("sweep_abandoned_carts", {})
    assert refused.value.status == 422 and "unknown actor" in refused.value.message
    assert "sweep_abandoned_carts" not in json.dumps(client._request("GET", "/openapi.json")["components"])


def test_progress_shows_while_running_and_a_running_task_stops_when_cancelled(client):
    handle = client.submit("make_thumbnails", {"images": 200, "seconds_each": 0.05})
    reported = wait_until(handle.progress, 15, interval=0.05, message="the first progress report")
    assert 0 < reported["fraction"] < 1 and reported["meta"]["of"] == 200
    assert handle.cancel() == "running"
    with pytest.raises(TaskCancelled) as cancelled:
        handle.wait(timeout=15)
    task = cancelled.value.task
    assert task["cancel_requested"] and task["finished_at"]
    assert task["progress"]["meta"]["done"] < 200  # it stopped before the end


def test_a_scheduled_task_cancelled_before_it_is_due_never_starts(client, shop):
    handle = client.submit("make_thumbnails", {"images": 1, "seconds_each": 0}, delay_ms=1_500)
    assert handle.cancel() == "cancelled"
    with pytest.raises(TaskCancelled):
        handle.wait(timeout=5)
    # Past its due time the message reached a worker, which skipped it.
    wait_until(lambda: shop.services[1].output().count("Task cancelled before it started")
               + shop.services[2].output().count("Task cancelled before it started") >= 1
               and handle.state()["attempts"] == 0, 15, interval=0.1, message="a worker to skip the task")
    assert handle.state()["state"] == "cancelled" and handle.state()["started_at"] is None


def test_wait_gives_up_after_its_timeout(client):
    handle = client.submit("make_thumbnails", {"images": 20, "seconds_each": 0.2})
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        handle.wait(timeout=1)
    assert 0.9 <= time.monotonic() - started < 5
    handle.cancel()


def test_a_periodic_task_fires_once_per_tick_with_two_workers(client):
    assert {p["name"]: p["schedule"] for p in client.periodic()} == {
        "sweep_abandoned_carts": "@every 10m", "sweep-every-second": "@every 1s"}
    window_start = time.time()
    time.sleep(4.5)  # the ticks to count, and nothing to await instead
    runs = [run for run in client.tasks(actor="sweep_abandoned_carts", created_after=_iso(window_start))
            if datetime.fromisoformat(run["created_at"]).timestamp() <= window_start + 4.5]
    # @every 1s: 4 or 5 ticks in 4.5 s (a run per worker and tick would be 8 to 10).
    assert 3 <= len(runs) <= 6, runs
    assert {run["state"] for run in runs} <= {"succeeded", "running"}
    assert len({run["task_id"] for run in runs}) == len(runs)


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat()


def test_tasks_are_listed_newest_first_by_state_and_page(client):
    ids = [client.submit("send_receipt", {"order_id": f"L-{i}", "email": "l@example.com"}).id for i in range(5)]
    for task_id in ids:
        client.task(task_id).wait(15)
    listed = [task["task_id"] for task in client.tasks(actor="send_receipt", state="succeeded", page_size=2)]
    assert listed[:5] == ids[::-1]
    assert len(listed) == len(set(listed))
    assert not set(ids) & {task["task_id"] for task in client.tasks(state="cancelled")}
