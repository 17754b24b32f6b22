"""Where a request's time goes: py-spy profiles and the cost of each layer of POST /task.

    .venv/bin/python tests/bench/profile.py                 # all three parts, about 2 minutes
    .venv/bin/python tests/bench/profile.py --only layers   # one part: gateway, enqueue, layers

Starts its own nats-server (broker/nats-server.conf: fsync before every PubAck; --default-sync
without it) and valkey-server on free ports, then:
- gateway: the gateway under gunicorn with app/natsq/gunicorn_conf.py (WEB_CONCURRENCY and
  NATSQ_GATEWAY_THREADS as set, default 2 x 16; auth off), wrk closed loop at 32 connections,
  ``py-spy record --subprocesses --nonblocking`` on the gunicorn tree for the whole run;
- enqueue: a child process that calls ``NatsBroker.enqueue`` in a loop from one thread, profiled
  the same way (its event-loop thread included);
- layers: in this process, each step of POST /task timed on its own (median of many calls):
  JSON parsing, the request and payload models, JWT verification (HS256), the metrics a request
  updates, the JSON log line, Valkey's task record, the publish, and recording-then-publishing
  against publishing-while-recording.

py-spy samples only the thread that holds the GIL, so a profile shows where Python spends CPU. The
summary prints, per profile, the share of samples by file of the innermost frame and the
frames with the largest inclusive share; the collapsed stacks go to --out.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.run import (  # noqa: E402
    GATEWAY_BODY,
    WRK_SCRIPT,
    BenchNats,
    BenchValkey,
    default_sync_config,
    ensure_wrk,
    run_wrk,
    stop_service,
)
from tests.conftest import VENV_BIN, Service, free_port, http_ready, subprocess_env, wait_until  # noqa: E402

PY_SPY = VENV_BIN / "py-spy"


def log(text: str) -> None:
    print(f"[profile {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# py-spy


def record(pid: int, seconds: float, out: Path, name: str, rate: int) -> Path:
    """py-spy's collapsed stacks of ``pid`` and its children for ``seconds``: only threads
    holding the GIL, so the samples are where Python spends CPU (flamegraph.pl draws them)."""
    raw = out / f"{name}.txt"
    subprocess.run([str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(rate),
                    "--subprocesses", "--nonblocking", "--gil", "--format", "raw", "-o", str(raw)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=seconds + 60)
    return raw


def source_file(frame: str) -> str:
    """``function (file:line)`` -> the file (py-spy shortens it to the package's path)."""
    return frame[frame.rfind("(") + 1:].rsplit(":", 1)[0] or frame


#: Steps of a request, by the frames a sample's stack holds (the first match wins).
GATEWAY_STEPS = [
    ("NATS event-loop thread (publishes, PubAcks)", lambda st: "_loop.py" in st),
    ("auth (bearer token)", lambda st: "_authorize (natsq/auth.py" in st),
    ("JSON body parsing", lambda st: "_json_body (natsq/gateway.py" in st),
    ("request and payload models (pydantic)", lambda st: "model_validate" in st or "TaskSpec.validate" in st),
    ("Valkey: the task record (TaskStore.create)", lambda st: "TaskStore.create" in st),
    ("publish from the request thread (start, wait)", lambda st: "_start_enqueue" in st or "_settle (" in st),
    ("metrics (prometheus_client)", lambda st: "prometheus_client/" in st),
    ("logging", lambda st: "logging/__init__.py" in st),
    ("rest of the view (message, response)", lambda st: "submit_task (natsq/gateway.py" in st),
    ("Flask and werkzeug around the view", lambda st: "Flask.__call__" in st),
    ("gunicorn: accept, parse, write, keep-alive", lambda st: "gunicorn/" in st),
]


def stacks(raw: Path):
    """(stack, samples) of each line of py-spy's collapsed stacks."""
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack, int(count)


def steps(raw: Path, rules: list) -> str:
    """Shares of samples by step (GATEWAY_STEPS)."""
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, n in stacks(raw):
        total += n
        shares[next((name for name, matches in rules if matches(stack)), "other")] += n
    return "\n".join(["by step of the request (first matching rule):"]
                     + [f"  {n / total:6.1%}  {name}" for name, n in shares.most_common()])


def summarize(raw: Path, title: str, top: int = 25) -> str:
    """Shares of samples by the innermost frame's file, and the frames with the most inclusive time."""
    by_file: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for stack, n in stacks(raw):
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        by_file[source_file(frames[-1])] += n
        for frame in set(frames):
            inclusive[frame] += n
    lines = [f"## {title}: {total} samples", "", "self time by file of the innermost frame:"]
    lines += [f"  {share / total:6.1%}  {name}" for name, share in by_file.most_common(15)]
    lines += ["", "inclusive time (frames below the request/loop entry points):"]
    shown = 0
    for frame, n in inclusive.most_common():
        if n / total > 0.97:
            continue  # thread entry points: every sample has them
        lines.append(f"  {n / total:6.1%}  {frame}")
        shown += 1
        if shown == top:
            break
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the three parts


def profile_gateway(nats_url: str, valkey_url: str, tmp: Path, out: Path, seconds: float, rate: int) -> str:
    port = free_port()
    env = subprocess_env(NATSQ_ENV="development", NATSQ_NATS_URL=nats_url, NATSQ_VALKEY_URL=valkey_url,
                         NATSQ_NAMESPACE=f"prof{uuid.uuid4().hex[:6]}", NATSQ_BIND=f"127.0.0.1:{port}",
                         WEB_CONCURRENCY=os.environ.get("WEB_CONCURRENCY", "2"),
                         PROMETHEUS_MULTIPROC_DIR=str(tmp / "gateway-metrics"))
    service = Service("gateway", [str(VENV_BIN / "gunicorn"), "--config", "python:natsq.gunicorn_conf",
                                  "natsq.gateway:create_app()"], env, tmp)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ready(f"{url}/healthz"), 60, message="the gateway to start")
        script = tmp / "post_task.lua"
        script.write_text(WRK_SCRIPT % GATEWAY_BODY)
        wrk = ensure_wrk()
        run_wrk(wrk, f"{url}/task", script, 2, 32)  # warm-up
        profiler = subprocess.Popen([sys.executable, __file__, "--record-pid", str(service.process.pid),
                                     "--record-seconds", str(seconds), "--record-name", "gateway", "--out", str(out),
                                     "--rate", str(rate)])
        time.sleep(1)  # py-spy attached
        data = run_wrk(wrk, f"{url}/task", script, seconds - 2, 32)
        profiler.wait(seconds + 90)
        log(f"gateway under wrk: {data['rps']:,.0f} req/s, p99 {data['p99_ms']:.1f} ms (profiled)")
        title = f"gateway under wrk, 32 connections ({data['rps']:,.0f} req/s while profiled)"
        return summarize(out / "gateway.txt", title) + "\n\n" + steps(out / "gateway.txt", GATEWAY_STEPS)
    finally:
        stop_service(service)


ENQUEUE_LOOP = """
import sys, time, dramatiq
from dramatiq_nats import NatsBroker
broker = NatsBroker(sys.argv[1], namespace=sys.argv[2], middleware=[])
broker.declare_queue("default")
message = lambda: dramatiq.Message(queue_name="default", actor_name="noop", args=(), kwargs={}, options={})
broker.enqueue(message())
print("ready", flush=True)
deadline, count = time.monotonic() + float(sys.argv[3]), 0
while time.monotonic() < deadline:
    broker.enqueue(message())
    count += 1
print(count / float(sys.argv[3]), flush=True)
broker.close()
"""


def profile_enqueue(nats_url: str, tmp: Path, out: Path, seconds: float, rate: int) -> str:
    script = tmp / "enqueue_loop.py"  # a file: py-spy names the process by its one-line command
    script.write_text(ENQUEUE_LOOP)
    child = subprocess.Popen([sys.executable, str(script), nats_url, f"prof{uuid.uuid4().hex[:6]}", str(seconds)],
                             stdout=subprocess.PIPE, text=True, env=subprocess_env())
    assert child.stdout.readline().strip() == "ready"
    record(child.pid, seconds - 1, out, "enqueue", rate)
    per_s = float(child.stdout.readline())
    child.wait(30)
    log(f"enqueue from 1 thread: {per_s:,.0f} msg/s (profiled)")
    return summarize(out / "enqueue.txt", f"enqueue loop, 1 thread ({per_s:,.0f} msg/s while profiled)")


def timed(fn, n: int) -> float:
    """Median µs of one call of ``fn``, over ``n`` calls in batches."""
    return statistics.median(_batch_micros(fn, max(n // 20, 1)) for _ in range(20))


def _batch_micros(fn, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - started) / calls * 1e6


def measure_layers(nats_url: str, valkey_url: str, tmp: Path, n: int) -> str:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "layer-metrics")  # as under gunicorn
    (tmp / "layer-metrics").mkdir()
    import io
    import logging

    import dramatiq
    import jwt

    from natsq import gateway, metrics
    from natsq.auth import TokenVerifier
    from natsq.logs import JsonFormatter
    from natsq.settings import Settings

    namespace = f"prof{uuid.uuid4().hex[:6]}"
    # WARNING: the whole-request row leaves out its log line (measured on its own above it).
    settings = Settings(env="development", nats_url=nats_url, valkey_url=valkey_url, namespace=namespace,
                        log_level="WARNING")
    app = gateway.create_app(settings)
    svc = app.extensions["natsq"]
    spec = svc.tasks.public["wait"]
    body_text = GATEWAY_BODY
    body = json.loads(body_text)
    secret = "profile-secret-0123456789abcdef0123456789"
    verifier = TokenVerifier(Settings(env="development", jwt_secret=secret, jwt_issuer="https://issuer.test",
                                      jwt_audience="natsq"))
    token = jwt.encode({"iss": "https://issuer.test", "aud": "natsq", "sub": "p", "exp": int(time.time()) + 3600,
                        "scope": "tasks:write"}, secret, algorithm="HS256")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(JsonFormatter())
    log_target = logging.getLogger("natsq.profile")
    log_target.addHandler(handler)
    log_target.propagate = False
    log_target.setLevel(logging.INFO)

    def message() -> dramatiq.Message:
        return dramatiq.Message(queue_name=spec.queue, actor_name=spec.name, args=(), kwargs={"seconds": 0}, options={})

    svc.broker.connect()
    store, broker = svc.store, svc.broker

    def serial() -> None:
        m = message()
        store.create(m.message_id, spec.name)
        broker.enqueue(m)

    def overlapped() -> None:
        m = message()
        pending = broker.start_enqueue(m)
        store.create(m.message_id, spec.name)
        pending.result()

    client = app.test_client()
    rows = [
        ("JSON parsing of the body (json.loads + depth check)", lambda: gateway._depth(json.loads(body_text)), n * 10),
        ("request model (TaskRequest, strict)", lambda: gateway.TaskRequest.model_validate(body, strict=True), n * 10),
        ("payload model (the task's own)", lambda: spec.validate(body["payload"]), n * 10),
        ("dramatiq.Message + encode", lambda: message().encode(), n * 10),
        ("JWT verification (HS256)", lambda: verifier.claims(token), n * 10),
        ("metrics of one request (2 counters, 2 histograms; multiprocess files)", lambda: (
            metrics.HTTP_REQUESTS.labels("POST", "/task", "202").inc(),
            metrics.HTTP_LATENCY.labels("POST", "/task").observe(0.002),
            metrics.TASKS_SUBMITTED.labels(spec.queue, spec.name).inc(),
            metrics.PUBLISH_LATENCY.observe(0.001)), n * 10),
        ("one JSON log line", lambda: log_target.info("Task accepted.", extra={"actor": "wait", "queue": "default"}), n * 10),
        ("Valkey: the task record (one Lua call)", lambda: store.create(str(uuid.uuid4()), spec.name), n),
        ("NATS: enqueue (publish, wait for the PubAck)", lambda: broker.enqueue(message()), n),
        ("whole POST /task in process (Flask test client, no HTTP server)",
         lambda: client.post("/task", data=body_text, content_type="application/json"), n),
    ]
    lines = ["## cost of each layer of POST /task, alone, from one thread (median µs per call)", ""]
    for title, fn, count in rows:
        fn()  # warm
        micros = timed(fn, count)
        lines.append(f"  {micros:9.1f} µs  {title}")
        log(f"  {micros:9.1f} µs  {title}")
    # Interleaved batch by batch, so that the machine's load changes touch both alike.
    both = {"record, then publish (before)": (serial, []), "publish while recording (now)": (overlapped, [])}
    for _ in range(20):
        for fn, samples in both.values():
            samples.append(_batch_micros(fn, max(n // 20, 1)))
    for title, (_, samples) in both.items():
        micros = statistics.median(samples)
        lines.append(f"  {micros:9.1f} µs  {title} (interleaved)")
        log(f"  {micros:9.1f} µs  {title} (interleaved)")
    broker.close()
    return "\n".join(lines)


# --------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each profile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--calls", type=int, default=2000, help="calls per layer that does I/O (ten times that for the others)")
    parser.add_argument("--default-sync", action="store_true", help="nats-server without sync_interval: always")
    parser.add_argument("--only", default="gateway,enqueue,layers", help="comma-separated: gateway,enqueue,layers")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="layers only: this much latency each way to both servers (chaos/fault_proxy.py), "
                             "as between hosts rather than on loopback")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "profiles", help="stacks and summary")
    parser.add_argument("--record-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--record-seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--record-name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.record_pid:  # the gateway's profile, taken while the parent drives wrk
        record(args.record_pid, args.record_seconds, args.out, args.record_name, args.rate)
        return 0
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    tmp = Path(tempfile.mkdtemp(prefix="natsq-profile-"))
    servers = []
    try:
        (tmp / "nats").mkdir()
        config = default_sync_config(tmp) if args.default_sync else ROOT / "broker" / "nats-server.conf"
        nats = BenchNats(tmp / "nats", config).start()
        servers.append(nats)
        (tmp / "valkey").mkdir()
        valkey = BenchValkey(tmp / "valkey", ["--appendonly", "no", "--save", ""]).start()
        servers.append(valkey)
        sync = "default sync" if args.default_sync else "sync_interval: always"
        sections = [f"# profiles, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, nats-server {sync}, "
                    f"load average at start {os.getloadavg()[0]:.1f}"]
        if "gateway" in parts:
            sections.append(profile_gateway(nats.url, valkey.url, tmp, args.out, args.seconds, args.rate))
        if "enqueue" in parts:
            sections.append(profile_enqueue(nats.url, tmp, args.out, args.seconds, args.rate))
        if "layers" in parts:
            nats_url, valkey_url = nats.url, valkey.url
            if args.latency_ms:
                from chaos.fault_proxy import FaultProxy, Faults

                proxies = [FaultProxy(server.port, Faults(latency_ms=args.latency_ms)).start() for server in (nats, valkey)]
                servers += proxies
                nats_url, valkey_url = f"nats://127.0.0.1:{proxies[0].port}", f"redis://127.0.0.1:{proxies[1].port}/0"
                sections[0] += f", {args.latency_ms:g} ms each way to both servers"
            sections.append(measure_layers(nats_url, valkey_url, tmp, args.calls))
        sections.append(f"load average at end {os.getloadavg()[0]:.1f}")
        text = "\n\n".join(sections) + "\n"
        (args.out / "summary.txt").write_text(text)
        print(text)
        return 0
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
