"""How punctual delayed messages are: nats-server's own schedules, and NatsBroker's delays.

    .venv/bin/python tests/bench/delays.py [--sparse 100] [--burst 5000]

Starts its own nats-server (broker/nats-server.conf, free ports) and prints,
in milliseconds after the due time (negative: early):
- raw: nats-py publishes a schedule (``Nats-Schedule: @at``) every 50 ms with
  delays from 50 ms to 2 s; lateness of the fired message's store time (its
  JetStream timestamp), i.e. of the server's scheduler alone;
- sparse: NatsBroker, the same pattern with ``send_with_options(delay=...)``;
  lateness of the actor's start in an in-process Worker (8 threads);
- rawburst: nats-py, ``--burst`` schedules due at the same instant;
- burst: NatsBroker, ``--burst`` messages with the same ``eta``; lateness of
  each actor start; fired: of each message's store on the queue (its
  schedule fires SCHEDULE_LEAD_MS early by design).
- machine: a threading.Timer due at the sparse instants, i.e. how late this
  process gets to run at all (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import dramatiq  # noqa: E402
from dramatiq.middleware import CurrentMessage  # noqa: E402
import nats  # noqa: E402
import nats.errors  # noqa: E402
from nats.js.api import RetentionPolicy, StreamConfig  # noqa: E402

from dramatiq_nats import NatsBroker  # noqa: E402
from tests.bench.run import BenchNats, default_sync_config  # noqa: E402
from tests.conftest import ROOT  # noqa: E402


def summary(name: str, lateness_ms: list[float]) -> str:
    ordered = sorted(lateness_ms)
    pick = lambda f: ordered[max(int(len(ordered) * f) - 1, 0)]  # noqa: E731
    return (f"{name:8} n={len(ordered):5}  min {ordered[0]:7.1f}  p50 {pick(0.5):7.1f}  "
            f"p99 {pick(0.99):7.1f}  max {ordered[-1]:7.1f}")


def delays(count: int) -> list[float]:
    rng = random.Random(14)
    return [rng.uniform(0.05, 2.0) for _ in range(count)]


async def raw(url: str, count: int, burst: bool = False) -> list[float]:
    """Sparse schedules, or (burst) ``count`` schedules due at the same instant 10 s ahead."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    name = "raw" + uuid.uuid4().hex[:6]
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.q", f"{name}.s.>"],
                                     retention=RetentionPolicy.WORK_QUEUE, allow_msg_schedules=True))
    sub = await js.pull_subscribe(f"{name}.q", durable="c", stream=name)
    due = {}
    burst_at = time.time() + 10
    for n, delay in enumerate(delays(count)):
        at = datetime.fromtimestamp(burst_at if burst else time.time() + delay, timezone.utc)
        due[str(n)] = at.timestamp()
        publish = js.publish(f"{name}.s.{n}", b"", headers={
            "Nats-Schedule": "@at " + at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "Nats-Schedule-Target": f"{name}.q", "n": str(n)})
        if burst:
            asyncio.ensure_future(publish)
            if n % 200 == 199:
                await asyncio.sleep(0.01)
        else:
            await publish
            await asyncio.sleep(0.05)
    stored = {}
    while len(stored) < count:
        try:
            fetched = await sub.fetch(count, timeout=5)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            continue
        for msg in fetched:
            stored[msg.headers["n"]] = msg.metadata.timestamp.timestamp()
            await msg.ack()
    await nc.close()
    # The millisecond-rounded due time is what the server was asked for.
    return [(stored[n] - round(due[n], 3)) * 1000 for n in due]


def sparse(broker: NatsBroker, actor, ran_at: dict, count: int) -> tuple[list[float], list[float]]:
    due_at, woke_at = {}, {}
    for n, delay in enumerate(delays(count)):
        due_at[n] = time.time() + delay
        actor.send_with_options(args=(n,), delay=int(delay * 1000))
        threading.Timer(due_at[n] - time.time(), lambda n=n: woke_at.__setitem__(n, time.time())).start()
        time.sleep(0.05)
    broker.join(actor.queue_name, timeout=30_000)
    time.sleep(0.1)
    return ([(ran_at[n] - due_at[n]) * 1000 for n in due_at], [(woke_at[n] - due_at[n]) * 1000 for n in due_at])


def burst(broker: NatsBroker, actor, ran_at: dict, stored_at: dict, count: int) -> tuple[list[float], list[float]]:
    """Lateness of each actor start, and of each message's store on the queue (fired early by design)."""
    due = time.time() + 10
    broker.enqueue_many(actor.message_with_options(args=(n,), eta=int(due * 1000)) for n in range(count))
    broker.join(actor.queue_name, timeout=60_000)
    return [(ran_at[n] - due) * 1000 for n in range(count)], [(stored_at[n] - due) * 1000 for n in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparse", type=int, default=100)
    parser.add_argument("--burst", type=int, default=5_000)
    parser.add_argument("--default-sync", action="store_true", help="JetStream's default fsync, not sync_interval: always")
    args = parser.parse_args()
    store = Path(tempfile.mkdtemp(prefix="natsq-delays-"))
    config = default_sync_config(store) if args.default_sync else ROOT / "broker" / "nats-server.conf"
    server = BenchNats(store, config).start()
    try:
        print(summary("raw", asyncio.run(raw(server.url, args.sparse))), flush=True)
        print(summary("rawburst", asyncio.run(raw(server.url, args.burst, burst=True))), flush=True)
        broker = NatsBroker(server.url, namespace="delays")
        dramatiq.set_broker(broker)
        ran_at: dict[int, float] = {}

        stored_at: dict[int, float] = {}
        broker.add_middleware(CurrentMessage())

        @dramatiq.actor
        def due(n):
            ran_at[n] = time.time()
            stored_at[n] = CurrentMessage.get_current_message()._delivery.metadata.timestamp.timestamp()

        worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=8)
        worker.start()
        try:
            broker_ms, machine_ms = sparse(broker, due, ran_at, args.sparse)
            print(summary("sparse", broker_ms), flush=True)
            print(summary("machine", machine_ms), flush=True)
            ran_at.clear()
            stored_at.clear()
            ran_ms, fired_ms = burst(broker, due, ran_at, stored_at, args.burst)
            print(summary("fired", fired_ms), flush=True)
            print(summary("burst", ran_ms), flush=True)

        finally:
            worker.stop()
            broker.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
