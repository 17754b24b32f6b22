"""Time in queue and submitted tasks, measured by the real gateway and worker processes."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.app.helpers import submit, wait_for_state
from tests.conftest import wait_until

#: How long the tasks sit in the queue before a worker exists to take them.
HELD_BACK_S = 1.5
TASKS = 3


def samples(url: str, name: str) -> dict[tuple, float]:
    """Every sample of one metric family as {(sample name, sorted labels): value}; none while
    the exporter is not listening yet (it starts a moment after the worker's first log line)."""
    try:
        text = requests.get(f"{url}/metrics", timeout=10).text
    except requests.ConnectionError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        if family.name == name
        for s in family.samples
    }


def value(found: dict[tuple, float], sample: str, **labels: str) -> float:
    return sum(v for (name, got), v in found.items() if name == sample and labels.items() <= dict(got).items())


def test_queue_wait_measures_time_until_a_worker_starts_the_task(nats_server, make_stack):
    stack = make_stack(nats_server.url)
    stack.start_gateway()
    ids = [submit(stack.gateway_url, "count_primes", {"limit": 1000 + i}).json()["task_id"] for i in range(TASKS)]
    submitted_at = time.monotonic()
    # No worker yet: the tasks wait in JetStream for at least HELD_BACK_S.
    time.sleep(HELD_BACK_S)
    stack.start_worker()
    for task_id in ids:
        wait_for_state(stack.gateway_url, task_id, "succeeded")
    waited_at_most = time.monotonic() - submitted_at

    labels = {"queue_name": "default", "actor_name": "count_primes"}
    found = wait_until(
        lambda: (s := samples(stack.worker_metrics_url, "natsq_task_queue_wait_seconds"))
        and value(s, "natsq_task_queue_wait_seconds_count", **labels) == TASKS
        and s,
        10,
        message="the worker to export natsq_task_queue_wait_seconds",
    )
    total = value(found, "natsq_task_queue_wait_seconds_sum", **labels)
    assert HELD_BACK_S * TASKS <= total <= waited_at_most * TASKS, total
    # No task started within the first second: the buckets up to 1 s are empty.
    assert value(found, "natsq_task_queue_wait_seconds_bucket", le="1.0", **labels) == 0

    submitted = samples(stack.gateway_url, "natsq_tasks_submitted")
    assert value(submitted, "natsq_tasks_submitted_total", **labels) == TASKS


def test_rejected_and_replayed_submissions_are_not_counted(nats_server, make_stack):
    stack = make_stack(nats_server.url)
    stack.start_gateway()
    assert submit(stack.gateway_url, "count_primes", {"limit": "many"}).status_code == 422
    headers = {"Idempotency-Key": "once"}
    first = submit(stack.gateway_url, "count_primes", {"limit": 10}, headers=headers)
    again = submit(stack.gateway_url, "count_primes", {"limit": 10}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers.get("Idempotent-Replayed") == "true"

    submitted = samples(stack.gateway_url, "natsq_tasks_submitted")
    assert value(submitted, "natsq_tasks_submitted_total", actor_name="count_primes") == 1
