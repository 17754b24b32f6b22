"""NATS least privilege: the shipped users (k8s/base/nats/natsq-users.conf) on a real nats-server.

The whole system runs with each role's user; then each role is shown what it is denied.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
import requests

from tests.app.helpers import nats_errors_as, submit, wait_for_state
from tests.conftest import ROOT, VENV_BIN, free_port, http_ready, subprocess_env, wait_until

USERS_CONF = ROOT / "k8s" / "base" / "nats" / "natsq-users.conf"
PASSWORDS = {"gateway": "gateway-pw", "worker": "worker-pw", "admin": "admin-pw", "console": "console-pw"}
NAMESPACE = "roles"


@pytest.fixture(scope="module")
def nats_with_roles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nats-roles")
    port, monitor = free_port(), free_port()
    # Side by side, as a ConfigMap mounts them (nats-server resolves includes from the config's directory).
    (tmp / USERS_CONF.name).write_text(USERS_CONF.read_text())
    (tmp / "nats.conf").write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{ store_dir: {tmp / 'store'} }}\n"
        f"accounts {{\n  NATSQ {{\n    jetstream: enabled\n    include {USERS_CONF.name}\n  }}\n}}\n"
    )
    env = {"PATH": "/usr/bin:/bin", **{f"NATSQ_{role.upper()}_NATS_PASSWORD": pw for role, pw in PASSWORDS.items()}}
    server = subprocess.Popen([str(VENV_BIN / "nats-server"), "-c", str(tmp / "nats.conf")], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "nats.log", "w"))
    try:
        wait_until(lambda: http_ready(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"), 15,
                   message="nats-server with the roles (see nats.log)")
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def role_env(role: str) -> dict[str, str]:
    return {"NATSQ_NATS_USER": role, "NATSQ_NATS_PASSWORD": PASSWORDS[role]}


@pytest.fixture(scope="module")
def system(tmp_path_factory, nats_with_roles, valkey_server):
    from tests.conftest import Stack

    bootstrap = subprocess.run(
        [sys.executable, "-m", "natsq.bootstrap"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=subprocess_env(NATSQ_ENV="development", NATSQ_NAMESPACE=NAMESPACE, NATSQ_NATS_URL=nats_with_roles,
                           **role_env("admin")),
    )
    assert bootstrap.returncode == 0, bootstrap.stdout + bootstrap.stderr
    stack = Stack(tmp_path_factory.mktemp("roles"), nats_with_roles, valkey_server.url,
                  NATSQ_NAMESPACE=NAMESPACE, NATSQ_NATS_DECLARE="false")
    stack.start_worker(**role_env("worker"))
    stack.start_gateway(**role_env("gateway"), NATSQ_CONSOLE_NATS_USER="console",
                        NATSQ_CONSOLE_NATS_PASSWORD=PASSWORDS["console"])
    yield stack
    stack.stop()


def test_the_system_runs_with_each_role_doing_only_its_part(system):
    url = system.gateway_url
    done = submit(url, "count_primes", {"limit": 100}).json()["task_id"]
    retried = submit(url, "flaky", {"failures": 1}).json()["task_id"]  # the worker publishes a retry
    dead = submit(url, "flaky", {"failures": 50}).json()["task_id"]  # ... and a dead letter
    delayed = submit(url, "wait", {"seconds": 0}, delay_ms=200).json()["task_id"]  # the gateway schedules
    assert wait_for_state(url, done, "succeeded")["result"] == {"limit": 100, "primes": 25}
    assert wait_for_state(url, retried, "succeeded")["attempts"] == 2
    assert wait_for_state(url, dead, "dead-lettered", timeout=30)
    assert wait_for_state(url, delayed, "succeeded")
    stats = requests.get(f"{url}/stats", timeout=10)
    assert stats.status_code == 200 and stats.json()["queues"]["default"]["dead_lettered"] >= 1
    logs = system.services[0].output() + system.services[1].output()
    assert "Permissions Violation" not in logs and "permissions violation" not in logs.lower(), logs[-3000:]


TASKS, DEAD = f"{NAMESPACE}-tasks", f"{NAMESPACE}-dead"
DENIED = {
    "gateway": {
        "delete-stream": lambda nc, js: js.delete_stream(TASKS),
        "purge-stream": lambda nc, js: js.purge_stream(TASKS),
        "create-stream": lambda nc, js: js.add_stream(name="rogue", subjects=["rogue.>"]),
        "pull-tasks": lambda nc, js: nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{TASKS}.default", b"1", timeout=1),
        "publish-dead-letter": lambda nc, js: js.publish(f"{NAMESPACE}.dead.default", b"forged"),
        "read-worker-inbox": lambda nc, js: nc.subscribe("_INBOX_worker.>"),
        "read-task-subjects": lambda nc, js: nc.subscribe(f"{NAMESPACE}.queue.*"),
    },
    "console": {
        "delete-stream": lambda nc, js: js.delete_stream(DEAD),
        "create-stream": lambda nc, js: js.add_stream(name="rogue", subjects=["rogue.>"]),
        "delete-consumer": lambda nc, js: js.delete_consumer(TASKS, "default"),
        "pull-tasks": lambda nc, js: nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{TASKS}.default", b"1", timeout=1),
        "publish-dead-letter": lambda nc, js: js.publish(f"{NAMESPACE}.dead.default", b"forged"),
        "read-gateway-inbox": lambda nc, js: nc.subscribe("_INBOX_gateway.>"),
    },
    "worker": {
        "delete-stream": lambda nc, js: js.delete_stream(DEAD),
        "purge-stream": lambda nc, js: js.purge_stream(TASKS),
        "delete-consumer": lambda nc, js: js.delete_consumer(TASKS, "default"),
        "create-consumer": lambda nc, js: js.add_consumer(TASKS, durable_name="rogue", filter_subject=f"{NAMESPACE}.queue.x"),
        "read-gateway-inbox": lambda nc, js: nc.subscribe("_INBOX_gateway.>"),
    },
}


@pytest.mark.parametrize("role, action", [(r, a) for r, actions in DENIED.items() for a in actions])
def test_each_role_is_denied_what_it_does_not_do(system, nats_with_roles, role, action):
    errors = asyncio.run(nats_errors_as(nats_with_roles, role, PASSWORDS[role], DENIED[role][action]))
    assert any("permissions violation" in e.lower() for e in errors), f"{role} was allowed to {action}: {errors}"


def test_admin_may_manage_streams(system, nats_with_roles):
    async def manage(nc, js):
        await js.add_stream(name="admin-check", subjects=["admin-check.>"])
        await js.delete_stream("admin-check")

    assert asyncio.run(nats_errors_as(nats_with_roles, "admin", PASSWORDS["admin"], manage)) == []


def test_the_console_runs_dead_letter_operations_with_its_own_user(system):
    """List, read, replay, delete and purge dead letters: the gateway's user may not, the console's may."""
    url, letters = system.gateway_url, f"{system.gateway_url}/admin/queues/default/dead-letters"
    dead = [submit(url, "flaky", {"failures": 50}).json()["task_id"] for _ in range(3)]
    for task_id in dead:
        wait_for_state(url, task_id, "dead-lettered", timeout=30)
    listed = requests.get(letters, params={"limit": 500}, timeout=10)
    assert listed.status_code == 200, listed.text
    seqs = {letter["task_id"]: letter["seq"] for letter in listed.json()["dead_letters"]}
    assert set(dead) <= set(seqs)
    assert requests.get(f"{letters}/{seqs[dead[0]]}", timeout=10).json()["task_id"] == dead[0]
    replayed = requests.post(f"{letters}/{seqs[dead[0]]}/replay", timeout=10)
    assert replayed.status_code == 200, replayed.text
    assert wait_for_state(url, replayed.json()["replayed_as"], "running", "retrying", "succeeded", "failed",
                          "dead-lettered", timeout=30)  # a worker took the replayed task
    deleted = requests.delete(f"{letters}/{seqs[dead[1]]}", timeout=10)
    assert deleted.status_code == 200, deleted.text
    purged = requests.delete(letters, timeout=10)
    assert purged.status_code == 200 and purged.json()["purged"] >= 1, purged.text
    logs = system.services[1].output()
    assert "permissions violation" not in logs.lower(), logs[-3000:]
