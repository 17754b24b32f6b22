"""Load through the gateway and the ledger of what became of every accepted task.

Producers behave like careful clients: each task has an Idempotency-Key, and a
POST that fails (connection error, timeout, 5xx) is retried with the same key
until it is answered 202 or the producer gives up. The ledger then follows
every 202 to its end state through ``GET /task/<id>``.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime

import requests

#: "failed" comes just before "dead-lettered" (TaskState, then the nack), so it is not an end.
FINAL_STATES = ("succeeded", "dead-lettered")


@dataclass
class Accepted:
    task_id: str
    key: str
    posts: int


@dataclass
class Load:
    """Submits ``tasks`` tasks at ``rate`` per second; retries each under its Idempotency-Key."""

    gateway_url: str
    tasks: int
    rate: float
    body: dict
    give_up_s: float = 90.0
    extra: list[dict] = field(default_factory=list)  #: further bodies, sent in the middle of the load
    accepted: list[Accepted] = field(default_factory=list)
    refused: int = 0
    retried_posts: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self.done = threading.Event()
        self.extra_ids: list[str] = []

    def _submit(self, n: int, started: float, body: dict) -> str | None:
        time.sleep(max(started + n / self.rate - time.monotonic(), 0))
        key, posts = f"chaos-{uuid.uuid4()}", 0
        deadline = time.monotonic() + self.give_up_s
        while time.monotonic() < deadline:
            posts += 1
            try:
                response = requests.post(f"{self.gateway_url}/task", json=body, headers={"Idempotency-Key": key},
                                         timeout=10)
                if response.status_code == 202:
                    accepted = Accepted(response.json()["task_id"], key, posts)
                    with self._lock:
                        self.accepted.append(accepted)
                        self.retried_posts += posts - 1
                    return accepted.task_id
                if response.status_code < 500:
                    raise RuntimeError(f"POST /task answered {response.status_code}: {response.text}")
            except requests.RequestException:
                pass
            time.sleep(0.25)
        with self._lock:
            self.refused += 1
        return None

    def run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(self._submit, n, started, self.body) for n in range(self.tasks)]
            middle = self.tasks // 2
            extra = [pool.submit(self._submit, middle, started, body) for body in self.extra]
            for future in futures:
                future.result()
            self.extra_ids = [f.result() for f in extra if f.result()]
        self.done.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread


def task_record(gateway_url: str, task_id: str) -> dict | None:
    """The task's record; {} when the gateway answers 404 (no record), None when it cannot answer."""
    try:
        response = requests.get(f"{gateway_url}/task/{task_id}", timeout=5)
    except requests.RequestException:
        return None
    if response.status_code == 404:
        return {}
    return response.json() if response.status_code == 200 else None


def follow(gateway_url: str, task_ids: list[str], timeout_s: float) -> dict[str, dict]:
    """Poll every task until it reaches a final state or ``timeout_s`` passes; the last records seen."""
    records: dict[str, dict] = {}
    pending = set(task_ids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            for task_id, record in zip(list(pending), pool.map(lambda t: task_record(gateway_url, t), list(pending))):
                if record is not None:
                    records[task_id] = record
                    if record.get("state") in FINAL_STATES:
                        pending.discard(task_id)
        if pending:
            time.sleep(0.5)
    return records


def time_to_recover(gateway_url: str, since: float, timeout_s: float = 120) -> float | None:
    """Seconds from ``since`` until a fresh probe task is accepted and has succeeded."""
    load = Load(gateway_url, tasks=1, rate=1, body={"actor": "count_primes", "payload": {"limit": 100}},
                give_up_s=timeout_s)
    load.run()
    if not load.accepted:
        return None
    record = follow(gateway_url, [load.accepted[0].task_id], timeout_s)
    if record.get(load.accepted[0].task_id, {}).get("state") != "succeeded":
        return None
    return round(time.monotonic() - since, 2)


def _ms(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000


@dataclass
class Ledger:
    scenario: str
    accepted: int
    refused: int
    retried_posts: int
    succeeded: int
    dead_lettered: int
    failed: int
    executions: int
    duplicates: int
    lost: int
    p50_ms: float | None
    p99_ms: float | None
    recovery_s: float | None
    expected_dead_lettered: int = 0
    notes: str = ""
    problems: list[str] = field(default_factory=list)  #: the scenario's own abort conditions that were met

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.failed == 0 and self.dead_lettered == self.expected_dead_lettered
                and not self.problems)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def make_ledger(scenario: str, load: Load, records: dict[str, dict], starts: list[tuple[str, int]],
                recovery_s: float | None, expected_dead: list[str] = (), notes: str = "") -> Ledger:
    ids = [a.task_id for a in load.accepted]
    states = [records.get(t, {}).get("state") for t in ids]
    succeeded = [records[t] for t, s in zip(ids, states) if s == "succeeded"]
    durations = sorted(_ms(r["created_at"], r["finished_at"]) for r in succeeded if r.get("finished_at"))
    # A retry is a new attempt; the same attempt started twice is a duplicate (at-least-once).
    accepted = set(ids)
    starts = [start for start in starts if start[0] in accepted]
    unexpected_dead = [t for t, s in zip(ids, states) if s == "dead-lettered" and t not in expected_dead]
    if unexpected_dead:
        notes = f"{notes}; dead-lettered unexpectedly: {' '.join(unexpected_dead[:5])}".lstrip("; ")
    return Ledger(
        scenario=scenario,
        accepted=len(ids),
        refused=load.refused,
        retried_posts=load.retried_posts,
        succeeded=len(succeeded),
        dead_lettered=states.count("dead-lettered"),
        failed=states.count("failed"),
        executions=len(starts),
        duplicates=len(starts) - len(set(starts)),
        lost=sum(1 for s in states if s not in (*FINAL_STATES, "failed")),
        p50_ms=round(statistics.median(durations)) if durations else None,
        p99_ms=round(durations[min(int(len(durations) * 0.99), len(durations) - 1)]) if durations else None,
        recovery_s=recovery_s,
        expected_dead_lettered=len(expected_dead),
        notes=notes,
    )


COLUMNS = ["scenario", "accepted", "refused", "retried_posts", "succeeded", "dead_lettered", "failed", "executions",
           "duplicates", "lost", "p50_ms", "p99_ms", "recovery_s", "ok"]


def table(ledgers: list[Ledger]) -> str:
    rows = [[str(ledger.as_dict()[c]) for c in COLUMNS] for ledger in ledgers]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    for ledger in ledgers:
        if ledger.notes or ledger.problems:
            lines.append(f"{ledger.scenario}: {'; '.join([*ledger.problems, ledger.notes]).strip('; ')}")
    return "\n".join(lines)
