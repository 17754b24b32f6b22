"""``make run`` (app/natsq/run_local.py): least-privileged users, restarts like Kubernetes, a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import nats
import psutil
import pytest
import requests
import valkey

from tests.app.helpers import nats_errors_as, submit, wait_for_state
from tests.conftest import ROOT, VENV_BIN, free_port, subprocess_env, wait_until

pytestmark = pytest.mark.timeout(150)


@pytest.fixture
def local_run(tmp_path):
    ports = {name: free_port() for name in ("NATS", "NATS_MONITOR", "VALKEY", "GATEWAY", "WORKER_METRICS")}
    log = tmp_path / "run_local.log"
    process = subprocess.Popen(
        [str(VENV_BIN / "python"), "-m", "natsq.run_local"], cwd=ROOT,
        env=subprocess_env(RUN_LOCAL_DIR=str(tmp_path / "run"), **{f"RUN_LOCAL_{k}_PORT": str(v) for k, v in ports.items()}),
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )
    process.gateway_url = f"http://127.0.0.1:{ports['GATEWAY']}"
    process.output = lambda: log.read_text(errors="replace")
    process.run_dir = tmp_path / "run"
    process.ports = ports
    try:
        wait_until(lambda: "natsq is running" in process.output() or process.poll() is not None, 60,
                   interval=0.1, message="make run to start")
        assert process.poll() is None, process.output()
        yield process
    finally:
        descendants = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(60)
        for p in descendants:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                p.kill()


def supervised_pid(run: subprocess.Popen, name: str) -> int:
    """The pid of the main process the supervisor runs for ``name``, from its command line."""
    marker = {"worker": "natsq.worker", "gateway": "natsq.gateway:create_app()"}[name]
    for child in psutil.Process(run.pid).children():
        if marker in child.cmdline():
            return child.pid
    raise AssertionError(f"no {name} process")


def credentials(run: subprocess.Popen) -> dict[str, str]:
    lines = (run.run_dir / "credentials.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if not line.startswith("#"))


def client_ports(pid: int, server_port: int) -> set[int]:
    """Local ports of the connections a process and its children hold to a server on ``server_port``."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.port for p in processes for c in p.net_connections("tcp")
            if c.raddr and c.raddr.port == server_port and c.status == psutil.CONN_ESTABLISHED}


def nats_users(run: subprocess.Popen) -> dict[int, str]:
    """The NATS user of each client connection, by the client's port (nats-server's /connz)."""
    connz = requests.get(f"http://127.0.0.1:{run.ports['NATS_MONITOR']}/connz?auth=true&limit=1000", timeout=5).json()
    return {c["port"]: c.get("authorized_user", "") for c in connz["connections"]}


def valkey_users(run: subprocess.Popen) -> dict[int, str]:
    """The ACL user of each client connection, by the client's port (CLIENT LIST as the operator)."""
    operator = valkey.Valkey(port=run.ports["VALKEY"], password=credentials(run)["VALKEY_DEFAULT_PASSWORD"])
    return {int(c["addr"].rsplit(":", 1)[1]): c["user"] for c in operator.client_list()}


def test_make_run_runs_each_process_as_its_least_privileged_user(local_run):
    submit_and_finish(local_run.gateway_url, 2)  # opens every connection: publish, consume, results
    nats_port, valkey_port = local_run.ports["NATS"], local_run.ports["VALKEY"]
    for role in ("gateway", "worker"):
        pid = supervised_pid(local_run, role)
        nats_ports, valkey_ports = client_ports(pid, nats_port), client_ports(pid, valkey_port)
        assert nats_ports and valkey_ports, f"the {role} holds no connections"
        nats_by_port, valkey_by_port = nats_users(local_run), valkey_users(local_run)  # after: they list them all
        assert {nats_by_port.get(port) for port in nats_ports} == {role}
        assert {valkey_by_port.get(port) for port in valkey_ports} == {role}

    # The gateway's user may not delete the task stream, and without a user nobody gets in.
    nats_url = f"nats://127.0.0.1:{nats_port}"
    errors = asyncio.run(nats_errors_as(nats_url, "gateway", credentials(local_run)["NATS_GATEWAY_PASSWORD"],
                                        lambda nc, js: js.delete_stream("natsq-tasks")))
    assert any("permissions violation" in e.lower() for e in errors), errors
    with pytest.raises(nats.errors.Error, match="[Aa]uthorization"):
        asyncio.run(nats.connect(nats_url, user="gateway", password="wrong", allow_reconnect=False, connect_timeout=2))
    submit_and_finish(local_run.gateway_url, 1)  # the stream is still there: tasks still run end to end

    async def account_limits(nc, js):
        limits.append((await js.account_info()).limits)

    limits = []
    assert asyncio.run(nats_errors_as(nats_url, "admin", credentials(local_run)["NATS_ADMIN_PASSWORD"], account_limits)) == []
    assert limits[0].max_storage == 10**9  # a full queue is refused (503 queue_full), never silently dropped
    # The console's dead-letter operations run as the console's user (the gateway's may not).
    dead_letters = requests.get(f"{local_run.gateway_url}/admin/queues/default/dead-letters", timeout=20)
    assert dead_letters.status_code == 200, dead_letters.text
    gateway_users = {nats_users(local_run).get(port) for port in client_ports(supervised_pid(local_run, "gateway"), nats_port)}
    assert "console" in gateway_users
    assert oct((local_run.run_dir / "credentials.env").stat().st_mode & 0o777) == "0o600"


def submit_and_finish(gateway_url: str, count: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: submit(gateway_url, "count_primes", {"limit": 1000}).json()["task_id"], range(count)))
    for task_id in ids:
        assert wait_for_state(gateway_url, task_id, "succeeded", timeout=60)["result"]["primes"] == 168


def test_make_run_restarts_a_killed_worker_and_gateway_and_stops_cleanly(local_run):
    submit_and_finish(local_run.gateway_url, 5)
    worker = supervised_pid(local_run, "worker")
    worker_child = psutil.Process(worker).children()[0]
    worker_child.send_signal(signal.SIGKILL)  # Dramatiq's main process exits when one of its children dies
    wait_until(lambda: "worker (pid" in local_run.output() and "worker restarted" in local_run.output(), 30,
               interval=0.1, message="the worker's restart to be logged")
    assert f"worker (pid {worker})" in local_run.output()
    assert supervised_pid(local_run, "worker") != worker

    gateway = supervised_pid(local_run, "gateway")
    os.kill(gateway, signal.SIGKILL)
    wait_until(lambda: "gateway was killed by" in local_run.output() or "gateway (pid" in local_run.output(), 30,
               interval=0.1, message="the gateway's exit to be logged")
    wait_until(lambda: "gateway restarted" in local_run.output(), 30, interval=0.1, message="the gateway's restart")
    # Restarted processes serve again: the gateway accepts, the new worker runs the tasks.
    wait_until(lambda: _ready(local_run.gateway_url), 30, interval=0.2, message="the gateway to be ready again")
    submit_and_finish(local_run.gateway_url, 20)

    worker_log = (local_run.run_dir / "worker.log").read_text()
    assert "Results middleware" not in worker_log and "has been discarded" not in worker_log

    everything = psutil.Process(local_run.pid).children(recursive=True)
    assert len(everything) >= 5  # nats, valkey, dramatiq main + child, gunicorn master + workers
    local_run.send_signal(signal.SIGINT)  # Ctrl-C
    assert local_run.wait(60) == 0
    time.sleep(0.2)
    left = [p for p in everything if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {[(p.pid, p.cmdline()) for p in left]}"


def _ready(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False
