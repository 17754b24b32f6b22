"""The admin API against a real gateway, worker, NATS and Valkey, with authentication on."""

from __future__ import annotations

import json
import time

import pytest
import requests

from tests.app.conftest import admin_headers, writer_headers
from tests.app.helpers import submit
from tests.app.helpers import SECRET, token
from tests.conftest import wait_until

ADMIN = admin_headers()


def get(stack, path: str, **kwargs) -> requests.Response:
    return requests.get(f"{stack.gateway_url}{path}", headers=ADMIN, timeout=10, **kwargs)


def admin_task(stack, task_id: str) -> dict:
    response = get(stack, f"/admin/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


def dead_letter_a_task(stack, **payload) -> str:
    writer = writer_headers()
    task_id = submit(stack.gateway_url, "flaky", {"failures": 50, **payload}, headers=writer).json()["task_id"]
    wait_until(lambda: admin_task(stack, task_id)["state"] == "dead-lettered", 30, interval=0.1,
               message="the task to be dead-lettered")
    return task_id


def find_dead_letter(stack, task_id: str) -> dict:
    letters = get(stack, "/admin/queues/default/dead-letters", params={"limit": 500}).json()["dead_letters"]
    return next(letter for letter in letters if letter["task_id"] == task_id)


def logged(stack, message: str) -> list[dict]:
    gateway = stack.services[0]
    return [entry for line in gateway.output().splitlines() if line.startswith("{")
            and (entry := json.loads(line))["message"] == message]


@pytest.mark.parametrize("headers, status", [({}, 401), (token(SECRET, scope="tasks:read stats:read"), 403)])
def test_the_admin_api_needs_the_admin_scope(admin_stack, headers, status):
    for method, path in [("GET", "/admin/queues"), ("GET", "/admin/workers"),
                         ("DELETE", "/admin/queues/default/dead-letters"),
                         ("POST", "/admin/queues/default/dead-letters/replay")]:
        response = requests.request(method, f"{admin_stack.gateway_url}{path}", headers=headers, timeout=10)
        assert response.status_code == status, (path, response.text)


def test_a_dead_letter_shows_what_failed_and_a_replay_runs_it_again_linked_both_ways(admin_stack):
    task_id = dead_letter_a_task(admin_stack, message="m-1")
    queues = get(admin_stack, "/admin/queues").json()
    assert next(q for q in queues["queues"] if q["name"] == "default")["dead_lettered"] >= 1

    summary = find_dead_letter(admin_stack, task_id)
    assert summary["actor"] == "flaky"
    assert summary["reason"] == "failed: TransientError: attempt 4 of 51 fails on purpose"
    assert summary["attempts"] == 4
    details = get(admin_stack, f"/admin/queues/default/dead-letters/{summary['seq']}").json()
    assert details["message"]["kwargs"] == {"failures": 50, "message": "m-1"}
    assert "TransientError: attempt 4 of 51" in details["traceback"]
    assert "traceback" not in details["message"]["options"]

    response = requests.post(f"{admin_stack.gateway_url}/admin/queues/default/dead-letters/{summary['seq']}/replay",
                             headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    new_id = response.json()["replayed_as"]
    assert new_id != task_id

    original = admin_task(admin_stack, task_id)
    assert original["replayed_as"] == new_id
    events = [entry["event"] for entry in original["history"]]
    assert events == ["started", "retrying"] * 3 + ["started", "failed", "dead-lettered", "replayed"]
    assert original["history"][-1]["by"] == "operator-1"

    # The replay runs from a fresh retry budget (and fails again: flaky fails its first 50 attempts).
    wait_until(lambda: admin_task(admin_stack, new_id)["state"] == "dead-lettered", 30, interval=0.1,
               message="the replay to run out of retries")
    replay = admin_task(admin_stack, new_id)
    assert replay["replay_of"] == task_id and replay["actor"] == "flaky" and replay["attempts"] == 4
    assert replay["history"][0]["event"] == "queued" and replay["history"][0]["replay_of"] == task_id
    assert get(admin_stack, f"/admin/queues/default/dead-letters/{summary['seq']}").status_code == 404
    again = requests.post(f"{admin_stack.gateway_url}/admin/queues/default/dead-letters/{summary['seq']}/replay",
                          headers=ADMIN, timeout=10)
    assert again.status_code == 404
    assert "Ignored message options" not in admin_stack.services[1].output()  # the worker keeps replay_of
    [entry] = [e for e in logged(admin_stack, "Dead letter replayed.") if e["dead_task_id"] == task_id]
    assert entry["caller"] == "operator-1" and entry["replay_task_id"] == new_id


def test_delete_and_purge_remove_dead_letters_and_are_logged_with_the_caller(admin_stack):
    first, second = dead_letter_a_task(admin_stack), dead_letter_a_task(admin_stack)
    seq = find_dead_letter(admin_stack, first)["seq"]
    url = f"{admin_stack.gateway_url}/admin/queues/default/dead-letters"
    deleted = requests.delete(f"{url}/{seq}", headers=admin_headers("operator-2"), timeout=10)
    assert deleted.json() == {"queue": "default", "deleted": seq}
    assert requests.delete(f"{url}/{seq}", headers=ADMIN, timeout=10).status_code == 404
    assert find_dead_letter(admin_stack, second)
    second_seq = find_dead_letter(admin_stack, second)["seq"]
    purged = requests.delete(url, headers=admin_headers("operator-3"), timeout=10).json()
    assert purged["queue"] == "default" and purged["purged"] >= 1
    left = get(admin_stack, "/admin/queues/default/dead-letters", params={"limit": 500}).json()["dead_letters"]
    assert all(letter["seq"] > second_seq for letter in left)  # only letters written since the purge
    assert [e["caller"] for e in logged(admin_stack, "Dead letter deleted.") if e["seq"] == seq] == ["operator-2"]
    assert logged(admin_stack, "Dead letters purged.")[-1]["caller"] == "operator-3"


def test_replay_all_replays_every_dead_letter_of_the_queue(admin_stack):
    dead = {dead_letter_a_task(admin_stack) for _ in range(2)}
    response = requests.post(f"{admin_stack.gateway_url}/admin/queues/default/dead-letters/replay", headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    result = response.json()
    assert dead <= {r["task_id"] for r in result["replayed"]}
    assert result["skipped"] == []
    # Replays that fail again come back as new dead letters; the replayed ones are gone.
    left = get(admin_stack, "/admin/queues/default/dead-letters", params={"limit": 500}).json()["dead_letters"]
    assert not {r["seq"] for r in result["replayed"]} & {letter["seq"] for letter in left}
    assert result["remaining"] <= len(left)  # counted before any replay could fail again
    for replayed in result["replayed"]:
        assert admin_task(admin_stack, replayed["replayed_as"])["replay_of"] == replayed["task_id"]


def test_workers_report_their_queues_threads_and_current_tasks(admin_stack):
    writer = writer_headers()
    task_id = submit(admin_stack.gateway_url, "wait", {"seconds": 3}, headers=writer).json()["task_id"]

    def running_worker():
        workers = get(admin_stack, "/admin/workers").json()["workers"]
        return next((w for w in workers if any(t["task_id"] == task_id for t in w["current_tasks"])), None)

    worker = wait_until(running_worker, 3, interval=0.1, message="a heartbeat naming the running task")
    assert worker["alive"] is True
    assert worker["queues"] == ["default"] and worker["threads"] == 4
    assert worker["pid"] > 0 and worker["host"]
    [current] = [t for t in worker["current_tasks"] if t["task_id"] == task_id]
    assert current["actor"] == "wait" and current["queue"] == "default"


def test_rates_compare_with_an_earlier_reading(admin_stack):
    get(admin_stack, "/admin/queues")  # leaves a sample to compare with
    writer = writer_headers()
    ids = [submit(admin_stack.gateway_url, "count_primes", {"limit": 10}, headers=writer).json()["task_id"] for _ in range(3)]
    for task_id in ids:
        wait_until(lambda: admin_task(admin_stack, task_id)["state"] == "succeeded", 10, interval=0.05, message="done")
    time.sleep(1.0)  # rates need a sample at least a second old
    rates = get(admin_stack, "/admin/queues").json()["rates"]
    assert rates["window_s"] >= 1
    assert round(rates["processed_per_s"] * rates["window_s"]) >= 3
    assert round(rates["enqueued_per_s"] * rates["window_s"]) >= 3


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/admin/queues/nope", 404), ("GET", "/admin/queues/nope/dead-letters", 404),
     ("GET", "/admin/queues/default/dead-letters?limit=many", 400), ("GET", "/admin/queues/default/dead-letters?after=-1", 400),
     ("GET", "/admin/queues/default/dead-letters/999999", 404), ("DELETE", "/admin/queues/default/dead-letters/999999", 404),
     ("POST", "/admin/queues/default/dead-letters/999999/replay", 404), ("GET", "/admin/tasks/not-a-uuid", 404),
     ("POST", "/admin/queues/default/dead-letters/replay?limit=0x10", 400)],
)
def test_bad_admin_requests_get_clear_json_errors(admin_stack, method, path, status):
    response = requests.request(method, f"{admin_stack.gateway_url}{path}", headers=ADMIN, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]


def test_openapi_documents_the_admin_routes(admin_stack):
    document = requests.get(f"{admin_stack.gateway_url}/openapi.json", timeout=5).json()
    admin_paths = {path for path in document["paths"] if path.startswith("/admin/")}
    assert "/admin/queues/{queue_name}/dead-letters/{seq}/replay" in admin_paths
    for path in admin_paths:
        for operation in document["paths"][path].values():
            assert operation["security"] == [{"bearer": ["admin"]}], path


def test_with_authentication_off_the_console_and_admin_api_need_no_token(stack):
    overview = requests.get(f"{stack.gateway_url}/ui/", timeout=10)
    assert overview.status_code == 200 and "<h1>Overview</h1>" in overview.text
    assert "Sign out" not in overview.text
    assert requests.get(f"{stack.gateway_url}/ui/login", timeout=10).url.endswith("/ui/")
    assert requests.get(f"{stack.gateway_url}/admin/workers", timeout=10).status_code == 200
    forged = requests.post(f"{stack.gateway_url}/ui/queues/default/dead-letters/purge", timeout=10,
                           headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403  # no token to steal, but still no cross-site forms
