"""Real processes for the chaos harness: nats-server (alone or a 3-node cluster), valkey-server,
and the gateway and worker supervised as ``make run`` does (restarted when they exit)."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

from natsq.run_local import BIN, ROOT, VALKEY_SERVER, Supervisor, http_ok, port_in_use, wait_for
from chaos.fault_proxy import FaultProxy


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


class Server:
    """A server process on fixed ports that can be killed and started again on the same data."""

    name = "server"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, wait: bool = True) -> None:
        with open(self.directory / f"{self.name}.log", "ab") as log:
            self.process = subprocess.Popen(self.command(), cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
        if wait:
            wait_for(f"{self.name} to be ready", self.ready)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class Nats(Server):
    def __init__(self, directory: Path, name: str = "n1", cluster_port: int | None = None,
                 routes: list[int] = ()) -> None:
        super().__init__(directory)
        self.name = name
        self.port, self.monitor_port = free_port(), free_port()
        self.cluster_port, self.routes = cluster_port, list(routes)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [str(BIN / "nats-server"), "-c", "broker/nats-server.conf", "-a", "127.0.0.1",
                   "-p", str(self.port), "-m", str(self.monitor_port), "-sd", str(self.directory), "--name", self.name]
        if self.cluster_port:
            command += ["--cluster_name", "chaos", "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                        "--routes", ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)]
        return command

    def healthz(self, query: str = "") -> bool:
        return http_ok(f"http://127.0.0.1:{self.monitor_port}/healthz{query}")

    def ready(self) -> bool:
        # A cluster member is ready once JetStream found its meta leader; a cluster
        # node alone waits for the others, so starting only checks it listens.
        return self.healthz("" if not self.cluster_port else "?js-enabled-only=true")

    def stream_leader(self, stream: str) -> str | None:
        try:
            jsz = get_json(f"http://127.0.0.1:{self.monitor_port}/jsz?accounts=true&streams=true")
        except OSError:
            return None
        for account in jsz.get("account_details", []):
            for detail in account.get("stream_detail", []):
                if detail["name"] == stream:
                    return detail.get("cluster", {}).get("leader")
        return None


class NatsCluster:
    """Three nodes, each reaching the others' cluster ports through a FaultProxy of its own."""

    def __init__(self, directory: Path) -> None:
        names = ["n1", "n2", "n3"]
        cluster_ports = {name: free_port() for name in names}
        #: proxies[(a, b)]: what node a dials to reach node b.
        self.proxies = {(a, b): FaultProxy(cluster_ports[b]).start() for a in names for b in names if a != b}
        self.nodes = {
            name: Nats(directory / name, name, cluster_ports[name],
                       [self.proxies[(name, other)].port for other in names if other != name])
            for name in names
        }

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes.values())

    def start(self) -> None:
        for node in self.nodes.values():
            node.start(wait=False)
        for node in self.nodes.values():
            wait_for(f"{node.name} to join the cluster", node.healthz, 60)

    def partition(self, name: str, isolated: bool) -> None:
        """Black-hole every route to and from node ``name`` (or lift it)."""
        for (a, b), proxy in self.proxies.items():
            if name in (a, b):
                proxy.faults.black_hole = isolated

    def stop(self) -> None:
        for node in self.nodes.values():
            node.kill()
        for proxy in self.proxies.values():
            proxy.stop()


class Valkey(Server):
    name = "valkey"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [str(VALKEY_SERVER), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]

    def ready(self) -> bool:
        return port_in_use(self.port)


class App:
    """Gateway and worker under ``make run``'s Supervisor, restarted whenever they exit."""

    def __init__(self, directory: Path, nats_url: str, valkey_url: str, *, worker_nats_url: str | None = None,
                 processes: int = 2, threads: int = 4, **env: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.gateway_url = f"http://127.0.0.1:{free_port()}"
        self.namespace = f"chaos{uuid.uuid4().hex[:8]}"
        self.env = {
            "NATSQ_ENV": "development",
            "NATSQ_NAMESPACE": self.namespace,
            "NATSQ_NATS_URL": nats_url,
            "NATSQ_VALKEY_URL": valkey_url,
            # Short waits so that a small run redelivers within seconds (production: 30 s).
            "NATSQ_ACK_WAIT_MS": "5000",
            "NATSQ_PUBLISH_TIMEOUT_MS": "2000",
            "NATSQ_RETRY_MIN_BACKOFF_MS": "100",
            "NATSQ_RETRY_MAX_BACKOFF_MS": "400",
            "PYTHONPATH": str(ROOT),
            **env,
        }
        self.worker_nats_url = worker_nats_url or nats_url
        self.processes, self.threads = processes, threads
        self.supervisor = Supervisor(directory)
        self._watching = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while self._watching.is_set():
            self.supervisor.check()
            time.sleep(0.1)

    def start(self) -> None:
        port = self.gateway_url.rsplit(":", 1)[1]
        (self.directory / "gateway-metrics").mkdir(exist_ok=True)
        self.supervisor.start("worker", [str(BIN / "dramatiq"), "natsq.worker", "--processes", str(self.processes),
                                         "--threads", str(self.threads)],
                              {**self.env, "NATSQ_NATS_URL": self.worker_nats_url, "dramatiq_prom_host": "127.0.0.1",
                               "dramatiq_prom_port": str(free_port()),
                               "dramatiq_prom_db": str(self.directory / "worker-metrics")})
        self.supervisor.start("gateway", [str(BIN / "gunicorn"), "--config", "python:natsq.gunicorn_conf",
                                          "natsq.gateway:create_app()"],
                              {**self.env, "NATSQ_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
                               "PROMETHEUS_MULTIPROC_DIR": str(self.directory / "gateway-metrics")})
        wait_for("the gateway", lambda: http_ok(f"{self.gateway_url}/readyz"), 60)
        wait_for("the worker", lambda: self.worker_log().count("ready for action") >= self.processes, 60)
        self._watching.set()
        self._watcher.start()

    def worker(self):
        return next(p for p in self.supervisor.processes if p.name == "worker")

    def worker_log(self) -> str:
        return self.worker().log_path.read_text(errors="replace")

    def worker_children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.worker().process.pid).children()
        except psutil.NoSuchProcess:
            return []

    def task_starts(self) -> list[tuple[str, int]]:
        """(task id, attempt) of every task start, from the worker's JSON log lines (all restarts)."""
        starts = []
        for line in self.worker_log().splitlines():
            if line.startswith("{") and '"Task started."' in line:
                entry = json.loads(line)
                if entry.get("task_id"):
                    starts.append((entry["task_id"], entry.get("attempt", 1)))
        return starts

    def stop(self) -> None:
        self._watching.clear()
        if self._watcher.is_alive():
            self._watcher.join(5)
        self.supervisor.stop()
