"""The ``natsq`` CLI (``python -m natsq.cli``) against a real stack with authentication on."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.app.conftest import admin_headers, writer_headers
from tests.app.helpers import submit
from tests.app.helpers import SECRET, token
from tests.conftest import ROOT, subprocess_env, wait_until

OPERATOR = token(SECRET, scope="admin tasks:read tasks:write", sub="cli-operator")["Authorization"].removeprefix("Bearer ")
WRITER = writer_headers()


def natsq(stack, *args: str, token_value: str | None = OPERATOR) -> subprocess.CompletedProcess:
    env = subprocess_env(NATSQ_API_URL=stack.gateway_url, **({"NATSQ_API_TOKEN": token_value} if token_value else {}))
    return subprocess.run([sys.executable, "-m", "natsq.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def natsq_json(stack, *args: str):
    done = natsq(stack, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def dead_letter_a_task(stack) -> str:
    task_id = submit(stack.gateway_url, "flaky", {"failures": 50}, headers=WRITER).json()["task_id"]
    wait_until(lambda: natsq_json(stack, "task", "show", task_id)["state"] == "dead-lettered", 30, interval=0.2,
               message="the task to be dead-lettered")
    return task_id


def test_queues_and_workers_print_tables_or_json(admin_stack):
    queues = natsq(admin_stack, "queues")
    assert queues.returncode == 0, queues.stderr
    header, row = queues.stdout.splitlines()[:2]
    assert header.split() == ["NAME", "PENDING", "IN_FLIGHT", "REDELIVERED", "SCHEDULED", "DEAD_LETTERED"]
    assert row.split()[0] == "default"
    assert natsq_json(admin_stack, "queues")["queues"][0]["name"] == "default"

    workers = natsq(admin_stack, "workers")
    assert workers.returncode == 0, workers.stderr
    assert "alive" in workers.stdout and "default" in workers.stdout
    [worker] = natsq_json(admin_stack, "workers")["workers"]
    assert str(worker["pid"]) in workers.stdout


def test_an_operator_lists_shows_and_replays_a_dead_letter(admin_stack):
    task_id = dead_letter_a_task(admin_stack)
    listing = natsq(admin_stack, "dlq", "list", "default")
    assert listing.returncode == 0, listing.stderr
    [line] = [line for line in listing.stdout.splitlines() if task_id in line]
    seq = line.split()[0]
    assert "failed: TransientError" in line

    shown = natsq(admin_stack, "dlq", "show", "default", seq)
    assert shown.returncode == 0, shown.stderr
    assert f"task_id:          {task_id}" in shown.stdout
    assert '"failures": 50' in shown.stdout and "last error:" in shown.stdout

    replayed = natsq_json(admin_stack, "dlq", "replay", "default", seq)
    assert replayed["task_id"] == task_id
    new = natsq_json(admin_stack, "task", "show", replayed["replayed_as"])
    assert new["replay_of"] == task_id
    assert "cli-operator" in natsq(admin_stack, "task", "show", task_id).stdout  # "replayed ... by cli-operator"

    again = natsq(admin_stack, "dlq", "replay", "default", seq)
    assert again.returncode == 1
    assert again.stderr.startswith("natsq: error: no dead letter") and "HTTP 404" in again.stderr


def test_replay_all_and_purge(admin_stack):
    first = dead_letter_a_task(admin_stack)
    replayed = natsq(admin_stack, "dlq", "replay", "default", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert first in replayed.stdout and " replayed, " in replayed.stdout
    assert first not in natsq(admin_stack, "dlq", "list", "default", "--limit", "500").stdout

    deleted, second = dead_letter_a_task(admin_stack), dead_letter_a_task(admin_stack)
    letters = natsq_json(admin_stack, "dlq", "list", "default", "--limit", "500")["dead_letters"]
    [seq] = [letter["seq"] for letter in letters if letter["task_id"] == deleted]
    assert natsq(admin_stack, "dlq", "delete", "default", str(seq)).stdout == f"dead letter {seq} deleted\n"
    assert deleted not in natsq(admin_stack, "dlq", "list", "default", "--limit", "500").stdout

    refused = natsq(admin_stack, "dlq", "purge", "default")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert second in natsq(admin_stack, "dlq", "list", "default", "--limit", "500").stdout
    purged = natsq(admin_stack, "dlq", "purge", "default", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert re.fullmatch(r"[1-9]\d* dead letters of 'default' purged\n", purged.stdout)
    assert second not in natsq(admin_stack, "dlq", "list", "default", "--limit", "500").stdout


def test_task_wait_returns_the_outcome_in_its_exit_code(admin_stack):
    ok = submit(admin_stack.gateway_url, "count_primes", {"limit": 100}, headers=WRITER).json()["task_id"]
    waited = natsq(admin_stack, "task", "wait", ok, "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    assert "state:       succeeded" in waited.stdout and '"primes": 25' in waited.stdout

    failing = submit(admin_stack.gateway_url, "flaky", {"failures": 50}, headers=WRITER).json()["task_id"]
    assert natsq(admin_stack, "task", "wait", failing, "--timeout", "30").returncode == 1  # dead-lettered

    slow = submit(admin_stack.gateway_url, "wait", {"seconds": 2}, headers=WRITER).json()["task_id"]
    timed_out = natsq(admin_stack, "task", "wait", slow, "--timeout", "0.5")
    assert timed_out.returncode == 1 and "after 0.5 s" in timed_out.stderr


def test_errors_are_one_clear_line_with_an_exit_code(admin_stack, tmp_path):
    unauthenticated = natsq(admin_stack, "queues", token_value=None)
    assert unauthenticated.returncode == 1
    assert unauthenticated.stderr == "natsq: error: a bearer token is required (HTTP 401)\n"

    reader = token(SECRET, scope="tasks:read")["Authorization"].removeprefix("Bearer ")
    assert "lacks the scope 'admin'" in natsq(admin_stack, "workers", token_value=reader).stderr

    token_file = tmp_path / "token"
    token_file.write_text(admin_headers()["Authorization"].removeprefix("Bearer ") + "\n")
    assert natsq(admin_stack, "--token-file", str(token_file), "queues", token_value=None).returncode == 0

    unreachable = subprocess.run([sys.executable, "-m", "natsq.cli", "--url", "http://127.0.0.1:9", "queues"],
                                 cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=30)
    assert unreachable.returncode == 3 and "cannot reach the gateway" in unreachable.stderr

    unknown = natsq(admin_stack, "task", "cancel", "4b8a9cd6-1a7e-4a3e-9f3e-0b8d9c3f7a11")
    assert unknown.returncode == 1 and unknown.stderr.startswith("natsq: error: no task ") and "(HTTP 404)" in unknown.stderr


def test_tasks_are_listed_by_state_and_actor_and_a_queued_one_can_be_cancelled(admin_stack):
    later = submit(admin_stack.gateway_url, "count_primes", {"limit": 10}, headers=WRITER, delay_ms=60_000).json()["task_id"]
    listed = natsq(admin_stack, "task", "list", "--state", "queued", "--actor", "count_primes")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split()[:6] == ["TASK_ID", "ACTOR", "STATE", "ATTEMPTS", "CREATED_AT", "ERROR"]
    assert later in listed.stdout

    cancelled = natsq(admin_stack, "task", "cancel", later)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"task {later} cancelled\n"
    assert later not in natsq(admin_stack, "task", "list", "--state", "queued").stdout
    assert [t["task_id"] for t in natsq_json(admin_stack, "task", "list", "--state", "cancelled")["tasks"]] == [later]
