"""A 202 is never lost: the system under process deaths and server outages."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.app.helpers import submit, task, wait_for_state
from tests.conftest import ValkeyServer, wait_until

pytestmark = pytest.mark.timeout(180)


def task_lines(worker, message: str) -> set[str]:
    """The ids of the tasks a worker logged ``message`` for (its JSON log lines)."""
    ids = set()
    for line in worker.output().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("message") == message and "task_id" in entry:
                ids.add(entry["task_id"])
    return ids


def test_sigterm_lets_the_worker_finish_its_running_task(make_stack, nats_server):
    # An ack wait far longer than the test: only the hand-back at shutdown, not
    # JetStream's redelivery after the ack wait, lets the next worker run the queued tasks.
    system = make_stack(nats_server.url, NATSQ_ACK_WAIT_MS="120000")
    system.start_gateway()
    worker = system.start_worker(threads=1)
    long_id = submit(system.gateway_url, "wait", {"seconds": 2}).json()["task_id"]
    wait_for_state(system.gateway_url, long_id, "running")
    queued = [submit(system.gateway_url, "count_primes", {"limit": 1000}).json()["task_id"] for _ in range(3)]
    assert worker.terminate(30) == 0
    assert task(system.gateway_url, long_id)["state"] == "succeeded"
    assert not task_lines(worker, "Task started.") & set(queued)  # they were held, not run, by the stopped worker
    system.start_worker()
    for task_id in queued:
        wait_for_state(system.gateway_url, task_id, "succeeded", timeout=10)


def test_no_accepted_task_is_lost_when_the_worker_is_killed_under_load(make_stack, nats_server):
    system = make_stack(nats_server.url, NATSQ_ACK_WAIT_MS="2000")
    system.start_gateway()
    worker = system.start_worker(processes=2, threads=4)
    accepted: list[str] = []
    killed = threading.Event()
    accepted_after_kill = 0

    def post(n: int) -> None:
        nonlocal accepted_after_kill
        response = submit(system.gateway_url, "wait", {"seconds": 0.2})
        assert response.status_code == 202, response.text
        accepted.append(response.json()["task_id"])
        accepted_after_kill += killed.is_set()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post, n) for n in range(300)]
        # Kill in the middle of the load, once the worker is busy with tasks.
        wait_until(lambda: len(accepted) >= 100 and task_lines(worker, "Task started."), 30,
                   message="load to build up and the worker to run tasks")
        worker.kill()  # SIGKILL to every process: running and prefetched tasks die with it
        killed.set()
        for future in futures:
            future.result()
    assert len(accepted) == 300
    assert accepted_after_kill >= 50, "the kill came after most of the load"
    cut_short = task_lines(worker, "Task started.") - task_lines(worker, "Task succeeded.")
    assert cut_short, "the kill hit no running task"
    system.start_worker(processes=1, threads=8)
    wait_until(
        lambda: all(task(system.gateway_url, t)["state"] == "succeeded" for t in accepted),
        90, interval=0.5, message="every accepted task to succeed",
    )


def test_gateway_answers_503_while_nats_is_down_and_recovers(make_stack, start_nats):
    server = start_nats()
    system = make_stack(server.url, NATSQ_PUBLISH_TIMEOUT_MS="1000")
    system.start_gateway()
    system.start_worker()
    assert submit(system.gateway_url, "wait", {"seconds": 0}).status_code == 202

    server.stop()
    refused = submit(system.gateway_url, "wait", {"seconds": 0})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "not accepted" in refused.json()["error"]["message"]
    ready = requests.get(f"{system.gateway_url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.json()["checks"]["nats"] is False

    server.start()
    wait_until(lambda: requests.get(f"{system.gateway_url}/readyz", timeout=10).status_code == 200, 30,
               message="the gateway to be ready again")
    accepted = submit(system.gateway_url, "count_primes", {"limit": 100})
    assert accepted.status_code == 202
    # The worker reconnected by itself and carries on.
    wait_for_state(system.gateway_url, accepted.json()["task_id"], "succeeded")


@pytest.fixture
def own_valkey(tmp_path):
    """A valkey-server the test may stop and restart (same port, same data)."""
    data = tmp_path / "valkey"
    data.mkdir()
    server = ValkeyServer(data).start()
    yield server
    server.stop()


def test_gateway_answers_503_while_valkey_is_down(make_stack, nats_server, own_valkey):
    system = make_stack(nats_server.url, NATSQ_VALKEY_URL=own_valkey.url)
    system.start_gateway()
    own_valkey.stop()
    refused = submit(system.gateway_url, "wait", {"seconds": 0})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert refused.json()["error"]["message"] == "task storage is unavailable"
    assert requests.get(f"{system.gateway_url}/readyz", timeout=10).json()["checks"]["valkey"] is False


def test_a_replayed_idempotency_key_publishes_a_lost_first_attempt_with_its_delay(stack, valkey_server):
    """The gateway died between recording a task and publishing it: the client's retry publishes it."""
    import uuid

    import dramatiq

    from natsq.settings import Settings
    from natsq.store import TaskStore, connect_valkey

    settings = Settings(env="development", valkey_url=valkey_server.url, namespace=stack.env["NATSQ_NAMESPACE"])
    store = TaskStore(connect_valkey(settings), settings.namespace, settings.result_ttl_s)
    key = f"lost-{uuid.uuid4()}"
    message = dramatiq.Message(queue_name="default", actor_name="count_primes", args=(), kwargs={"limit": 30}, options={})
    store.create(message.message_id, "count_primes", idempotency_key=key,
                 message=message.encode(), not_before_ms=int(time.time() * 1000) + 1_500)

    replay = submit(stack.gateway_url, "count_primes", {"limit": 30}, headers={"Idempotency-Key": key})
    assert replay.status_code == 202
    assert replay.json()["task_id"] == message.message_id
    time.sleep(0.8)
    assert task(stack.gateway_url, message.message_id)["state"] == "queued"  # still waiting out its delay
    done = wait_for_state(stack.gateway_url, message.message_id, "succeeded")
    assert done["result"] == {"limit": 30, "primes": 10}


def test_workers_ride_out_a_valkey_restart(make_stack, nats_server, own_valkey):
    system = make_stack(nats_server.url, NATSQ_VALKEY_URL=own_valkey.url)
    system.start_gateway()
    worker = system.start_worker()
    task_id = submit(system.gateway_url, "count_primes", {"limit": 1000}, delay_ms=500).json()["task_id"]
    own_valkey.stop()
    # The worker takes the task while Valkey is down and waits for it to record the state.
    wait_until(lambda: task_id in task_lines(worker, "Task started."), 10, message="the task to start during the outage")
    assert not own_valkey.alive()
    own_valkey.start()

    def succeeded():
        # The gateway may still answer 503 for a moment while Valkey loads its data.
        response = requests.get(f"{system.gateway_url}/task/{task_id}", timeout=10)
        return response.status_code == 200 and response.json()["state"] == "succeeded" and response.json()

    done = wait_until(succeeded, 30, interval=0.1, message="the task's state to be recorded")
    assert done["result"] == {"limit": 1000, "primes": 168}
    assert done["attempts"] == 1


def test_gateway_answers_503_when_valkey_refuses_writes_without_replicas(make_stack, nats_server, own_valkey):
    import valkey

    system = make_stack(nats_server.url, NATSQ_VALKEY_URL=own_valkey.url)
    system.start_gateway()
    # The split-brain guard of the Kubernetes setup: no replica, no writes (NOREPLICAS).
    valkey.Valkey.from_url(own_valkey.url).config_set("min-replicas-to-write", 1)
    refused = submit(system.gateway_url, "wait", {"seconds": 0})
    assert refused.status_code == 503
    assert refused.json()["error"]["message"] == "task storage is unavailable"
