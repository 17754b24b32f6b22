"""``make chaos``: fault scenarios on real processes, each with a ledger of every accepted task.

    python -m chaos.harness [--size small|full] [--only NAME ...] [--out chaos-ledger.json]

Every scenario starts its own servers and a gateway and worker supervised like
``make run`` (restarted when they exit), sends load through the gateway with
Idempotency-Keys, injects its fault while the load runs, then follows every
202 to its end. The ledger counts accepted, succeeded, executions and
duplicates (task starts in the worker logs), lost (an accepted task that never
ended: must be 0), dead-lettered, completion times (created_at to finished_at)
and recovery time (from the end of the fault until a fresh task succeeds).
Exit code 0 only when every scenario is ok.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from chaos.fault_proxy import Faults, FaultProxy
from chaos.ledger import Ledger, Load, follow, make_ledger, table, time_to_recover
from chaos.systems import App, Nats, NatsCluster, Valkey, wait_for


@dataclass(frozen=True)
class Size:
    tasks: int  #: tasks per scenario
    rate: float  #: submissions per second
    outage_s: float  #: how long a server stays down or partitioned
    kill_every_s: float  #: period of the repeated worker kills
    long_task_s: float  #: task length in the SIGTERM scenario
    poison: int  #: poison messages in the poison scenario
    crashing: int  #: poison messages that kill their worker process (1: a segfault, 2: also an os._exit)
    drain_s: float = 120.0  #: how long to wait for accepted tasks to end

    @property
    def load_s(self) -> float:
        return self.tasks / self.rate


SIZES = {
    "small": Size(tasks=30, rate=10, outage_s=2, kill_every_s=1.5, long_task_s=1.5, poison=1, crashing=1),
    "full": Size(tasks=600, rate=20, outage_s=8, kill_every_s=4, long_task_s=4, poison=5, crashing=2, drain_s=300),
}

WAIT_TASK = {"actor": "wait", "payload": {"seconds": 0.2}}


class Scenario:
    """Runs ``fault`` in a thread while the load runs; ``fault`` returns when the fault is over."""

    def __init__(self, name: str, size: Size, directory: Path) -> None:
        self.name, self.size, self.directory = name, size, directory / name
        self.notes: list[str] = []
        self.load: Load | None = None  #: the load of the last run

    def run(self, app: App, fault: Callable[[Load], None], body: dict = WAIT_TASK, extra: list[dict] = ()) -> Ledger:
        load = self.load = Load(app.gateway_url, self.size.tasks, self.size.rate, body, extra=list(extra))
        load_thread = load.start()
        fault(load)
        # Measured at once, while the rest of the load still runs.
        recovery_s = time_to_recover(app.gateway_url, time.monotonic())
        load_thread.join()
        records = follow(app.gateway_url, [a.task_id for a in load.accepted], self.size.drain_s)
        # The extra bodies are poison: they must end dead-lettered.
        return make_ledger(self.name, load, records, app.task_starts(), recovery_s, expected_dead=load.extra_ids,
                           notes="; ".join(self.notes))

    def at_fraction(self, load: Load, fraction: float) -> None:
        """Wait until ``fraction`` of the load was accepted (or the load is over)."""
        wait_for("load", lambda: len(load.accepted) >= fraction * self.size.tasks or load.done.is_set(),
                 self.size.load_s * 4 + 60)


@dataclass
class System:
    app: App
    valkey: Valkey
    nats: Nats | None = None  #: the single server, or
    cluster: NatsCluster | None = None  #: the 3-node cluster
    proxy: FaultProxy | None = None  #: between the workers and the single server


@contextmanager
def system(s: Scenario, *, cluster: bool = False, worker_faults: Faults | None = None, **app_options):
    """Servers and a supervised gateway and worker of the scenario's own; all stopped afterwards."""
    valkey = Valkey(s.directory / "valkey")
    servers = NatsCluster(s.directory / "nats") if cluster else Nats(s.directory / "nats")
    proxy = None
    try:
        servers.start(), valkey.start()
        if cluster:
            app_options["NATSQ_STREAM_REPLICAS"] = "3"
        if worker_faults:
            proxy = FaultProxy(servers.port, worker_faults, seed=11).start()
            app_options["worker_nats_url"] = f"nats://127.0.0.1:{proxy.port}"
        app = App(s.directory / "app", servers.url, valkey.url, **app_options)
        try:
            app.start()
            yield System(app, valkey, **({"cluster": servers} if cluster else {"nats": servers}), proxy=proxy)
        finally:
            app.stop()
    finally:
        servers.stop() if cluster else servers.kill()
        valkey.stop()
        if proxy:
            proxy.stop()


def worker_kill(s: Scenario) -> Ledger:
    """Worker processes SIGKILLed every few seconds under gateway load; the supervisor restarts them."""
    with system(s) as sut:
        kills = 0

        def fault(load: Load) -> None:
            nonlocal kills
            s.at_fraction(load, 0.1)
            while not load.done.is_set():
                children = sut.app.worker_children()
                if children:
                    random.choice(children).kill()
                    kills += 1
                load.done.wait(s.size.kill_every_s)

        ledger = s.run(sut.app, fault)
        ledger.notes = f"{kills} worker processes SIGKILLed"
        return ledger


def nats_kill(s: Scenario) -> Ledger:
    """nats-server SIGKILLed and restarted on its store under load; producers retry under one Idempotency-Key."""
    with system(s) as sut:

        def fault(load: Load) -> None:
            s.at_fraction(load, 0.3)
            sut.nats.kill()
            time.sleep(s.size.outage_s)
            sut.nats.start()

        return s.run(sut.app, fault)


def cluster_leader_then_follower(s: Scenario) -> Ledger:
    """A 3-node cluster with R3 streams: the stream leader is killed and restarted, then a follower."""
    with system(s, cluster=True) as sut:
        nodes = sut.cluster.nodes
        stream = f"{sut.app.namespace}-tasks"

        def leader() -> str | None:
            return next((n.stream_leader(stream) for n in nodes.values() if n.stream_leader(stream)), None)

        def kill_and_restart(name: str) -> None:
            nodes[name].kill()
            time.sleep(s.size.outage_s)
            nodes[name].start(wait=False)
            wait_for(f"{name} to rejoin", nodes[name].healthz, 60)

        def fault(load: Load) -> None:
            s.at_fraction(load, 0.2)
            first = leader()
            kill_and_restart(first)
            s.at_fraction(load, 0.6)
            current = leader()
            follower = next(name for name in nodes if name != current)
            kill_and_restart(follower)
            s.notes.append(f"killed leader {first}, then follower {follower} (leader {current})")

        return s.run(sut.app, fault)


def valkey_restart(s: Scenario) -> Ledger:
    """Valkey stopped and started again (same data) under load."""
    with system(s) as sut:

        def fault(load: Load) -> None:
            s.at_fraction(load, 0.3)
            sut.valkey.stop()
            time.sleep(s.size.outage_s)
            sut.valkey.start()

        return s.run(sut.app, fault)


def latency_and_loss(s: Scenario) -> Ledger:
    """100 ms ± 20 ms and 5 % loss between the workers and NATS, through a userspace fault proxy."""
    with system(s, worker_faults=Faults(latency_ms=100, jitter_ms=20, loss=0.05)) as sut:
        ledger = s.run(sut.app, lambda load: load.done.wait())  # the fault lasts the whole run
        ledger.notes = f"{sut.proxy.forwarded_bytes} bytes through the proxy"
        return ledger


def partition(s: Scenario) -> Ledger:
    """One node of a 3-node cluster cut off from the two others (routes black-holed), then healed."""
    with system(s, cluster=True) as sut:
        isolated = sut.cluster.nodes["n3"]

        def fault(load: Load) -> None:
            s.at_fraction(load, 0.3)
            sut.cluster.partition("n3", True)
            started = time.monotonic()
            # The partition is effective once the isolated node loses its JetStream meta leader.
            try:
                wait_for("n3 to notice the partition", lambda: not isolated.healthz(), max(s.size.outage_s, 15))
                s.notes.append(f"n3 unhealthy after {time.monotonic() - started:.1f} s")
            except RuntimeError:
                s.notes.append("n3 stayed healthy: partition not observed")
            time.sleep(max(s.size.outage_s - (time.monotonic() - started), 0))
            sut.cluster.partition("n3", False)
            wait_for("n3 to rejoin", isolated.healthz, 60)

        return s.run(sut.app, fault)


def sigterm_long_tasks(s: Scenario) -> Ledger:
    """Workers SIGTERMed (as Kubernetes stops a pod) during long tasks; they finish, hand back, restart."""
    # An ack wait far above the task length: a duplicate would come from a lost hand-back, not a timeout.
    with system(s, processes=1, threads=8, NATSQ_ACK_WAIT_MS="60000") as sut:
        stopped: set[int] = set()

        def fault(load: Load) -> None:
            s.at_fraction(load, 0.2)
            while not load.done.is_set():
                # SIGTERM once per process, as Kubernetes does: it is busy finishing its tasks.
                worker = sut.app.worker().process
                if worker.poll() is None and worker.pid not in stopped:
                    worker.send_signal(signal.SIGTERM)
                    stopped.add(worker.pid)
                load.done.wait(s.size.long_task_s * 2)

        # Fewer, longer tasks: each worker holds several when it is stopped.
        s.size = replace(s.size, tasks=max(s.size.tasks // 4, 10), rate=s.size.rate / 4)
        ledger = s.run(sut.app, fault, body={"actor": "wait", "payload": {"seconds": s.size.long_task_s}})
        ledger.notes = f"{len(stopped)} SIGTERMs"
        return ledger


def poison(s: Scenario) -> Ledger:
    """Poison messages (a task failing every attempt) sent through the gateway among healthy ones."""
    with system(s) as sut:
        poison_body = {"actor": "flaky", "payload": {"failures": 50}}
        return s.run(sut.app, lambda load: load.done.wait(), extra=[poison_body] * s.size.poison)


#: Deliveries before a message that never settles is dead-lettered, in the poison-crash scenario:
#: each crash doubles the worker's restart delay, so the default (10) would crash-loop for minutes.
CRASH_MAX_DELIVERIES = 3


def poison_crash(s: Scenario) -> Ledger:
    """Poison messages that kill their worker process (a segfault, an os._exit), among healthy ones.

    No middleware gets to nack or retry them: the broker dead-letters each on
    its delivery number CRASH_MAX_DELIVERIES + 1, and the worker, restarted by
    the supervisor after every crash, stops crashing.
    """
    with system(s, NATSQ_TASK_MODULES="natsq.tasks,chaos.crash_tasks",
                NATSQ_MAX_DELIVERIES=str(CRASH_MAX_DELIVERIES)) as sut:
        bodies = [{"actor": "crash", "payload": {"how": how}} for how in ("segfault", "exit")[:s.size.crashing]]

        def fault(load: Load) -> None:
            load.done.wait()  # the poison is sent in the middle of the load
            follow(sut.app.gateway_url, load.extra_ids, s.size.drain_s)  # over once it is dead-lettered

        ledger = s.run(sut.app, fault, extra=bodies)
        restarts = sut.app.worker().restarts
        runs = Counter(task_id for task_id, _ in sut.app.task_starts() if task_id in s.load.extra_ids)
        ledger.notes = f"worker restarted {restarts} times; poison runs {sorted(runs.values())}"
        if restarts == 0:
            ledger.problems.append("the poison never killed the worker")
        if any(not 1 <= runs[task_id] <= CRASH_MAX_DELIVERIES for task_id in s.load.extra_ids):
            ledger.problems.append(f"a poison ran other than 1 to {CRASH_MAX_DELIVERIES} times: crash loop")
        return ledger


SCENARIOS: dict[str, Callable[[Scenario], Ledger]] = {
    "worker-kill": worker_kill,
    "nats-kill": nats_kill,
    "cluster-leader-follower": cluster_leader_then_follower,
    "valkey-restart": valkey_restart,
    "latency-loss": latency_and_loss,
    "partition": partition,
    "sigterm-long-tasks": sigterm_long_tasks,
    "poison": poison,
    "poison-crash": poison_crash,
}


def run(size: Size, names: list[str], directory: Path) -> list[Ledger]:
    ledgers = []
    for name in names:
        started = time.monotonic()
        try:
            ledger = SCENARIOS[name](Scenario(name, size, directory))
        except Exception as e:  # a scenario that cannot run is a failed scenario, not a crash of the rest
            ledger = Ledger(name, 0, 0, 0, 0, 0, 0, 0, 0, -1, None, None, None, notes=f"error: {e!r}")
        ledger.notes = f"{ledger.notes}; took {time.monotonic() - started:.0f} s".lstrip("; ")
        print(f"{name}: {'ok' if ledger.ok else 'NOT OK'} ({ledger.notes})", file=sys.stderr, flush=True)
        ledgers.append(ledger)
    return ledgers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--out", default="chaos-ledger.json", help="where to write the ledgers as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs and data (printed directory)")
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="natsq-chaos-"))
    # Stopped like Ctrl-C, so each scenario stops its processes on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    ledgers = run(SIZES[args.size], args.only or list(SCENARIOS), directory)
    Path(args.out).write_text(json.dumps({"size": args.size, "scenarios": [l.as_dict() for l in ledgers]}, indent=2))
    print(table(ledgers))
    print(f"\nledger: {args.out}; logs: {directory}" if args.keep else f"\nledger: {args.out}")
    if not args.keep:
        import shutil

        shutil.rmtree(directory, ignore_errors=True)
    return 0 if all(l.ok for l in ledgers) else 1


if __name__ == "__main__":
    sys.exit(main())
