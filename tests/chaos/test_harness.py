"""``make chaos``: the fault proxy does what it claims, and every scenario loses nothing (small size)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time

import pytest

from chaos.fault_proxy import Faults, FaultProxy
from tests.conftest import ROOT


@pytest.fixture
def echo_server():
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=connection: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
                             daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def round_trip_s(port: int, payload: bytes = b"ping") -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        s.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += s.recv(4096)
        assert received == payload
        return time.monotonic() - started


def test_the_proxy_delays_each_direction_keeps_order_and_black_holes(echo_server):
    proxy = FaultProxy(echo_server, Faults(latency_ms=100, jitter_ms=20)).start()
    try:
        rtts = [round_trip_s(proxy.port) for _ in range(5)]
        assert all(0.16 <= rtt < 0.6 for rtt in rtts), rtts  # 2 x (100 ms +- 20 ms)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            for n in range(50):  # order survives the jitter
                s.sendall(b"%03d" % n)
            expected = b"".join(b"%03d" % n for n in range(50))
            received = b""
            while len(received) < len(expected):
                received += s.recv(4096)
            assert received == expected
        proxy.faults = Faults(black_hole=True)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"held")
            s.settimeout(0.5)
            with pytest.raises(TimeoutError):
                s.recv(4)
            proxy.faults.black_hole = False  # healed: what was held arrives
            s.settimeout(5)
            assert s.recv(4) == b"held"
    finally:
        proxy.stop()


def test_loss_costs_a_retransmission_timeout(echo_server):
    proxy = FaultProxy(echo_server, Faults(loss=1.0)).start()
    try:
        assert round_trip_s(proxy.port) >= 0.4  # lost both ways: 2 x 200 ms
    finally:
        proxy.stop()


@pytest.mark.timeout(600)
def test_every_chaos_scenario_loses_no_accepted_task(tmp_path):
    out = tmp_path / "ledger.json"
    result = subprocess.run([sys.executable, "-m", "chaos.harness", "--size", "small", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=580)
    report = result.stdout + result.stderr[-5000:]
    ledgers = {s["scenario"]: s for s in json.loads(out.read_text())["scenarios"]}
    assert set(ledgers) == {"worker-kill", "nats-kill", "cluster-leader-follower", "valkey-restart", "latency-loss",
                            "partition", "sigterm-long-tasks", "poison", "poison-crash"}, report
    for name, ledger in ledgers.items():
        assert ledger["accepted"] > 0 and ledger["refused"] == 0, (name, report)
        assert ledger["lost"] == 0, (name, report)
        assert ledger["succeeded"] + ledger["dead_lettered"] == ledger["accepted"], (name, report)
        assert ledger["executions"] >= ledger["succeeded"], (name, report)
        assert ledger["problems"] == [], (name, report)
    for poison in ("poison", "poison-crash"):
        assert ledgers[poison]["dead_lettered"] == ledgers[poison]["expected_dead_lettered"] > 0, report
    assert result.returncode == 0, report
