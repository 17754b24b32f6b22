"""Task state, results and counters in Valkey.

Keys (``<ns>`` is NATSQ_NAMESPACE):
- ``<ns>:task:<id>``: hash with the state of one task, expiring NATSQ_RESULT_TTL_S
  after its last change;
- ``<ns>:idem:<sha256 of owner and key>``: the task an Idempotency-Key created
  and the fingerprint of its request, with the same TTL (keys are per caller);
- ``<ns>:stats``: hash of cluster-wide worker counters (processed, failed).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any

import valkey
from valkey.exceptions import ConnectionError, OutOfMemoryError, ReadOnlyError, ResponseError, TimeoutError, ValkeyError
from valkey.backoff import NoBackoff
from valkey.retry import Retry
from valkey.sentinel import Sentinel

from .limits import outstanding_prefix
from .settings import Settings

#: The states a task goes through; "queued" until a worker picks it up.
STATES = ("queued", "running", "retrying", "succeeded", "failed", "dead-lettered")

# KEYS: the task's hash, then the idempotency key if there is one (never an empty key name:
# ACL key patterns would refuse it).
_CREATE = """
local ttl = tonumber(ARGV[1])
if KEYS[2] then
  local existing = redis.call('GET', KEYS[2])
  if existing then return existing end
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ttl)
return false
"""

# A retry may start (and report "running") before the failed attempt reports
# "retrying": only the latest attempt may set the state.
_SET_IF_ATTEMPT = """
if redis.call('HGET', KEYS[1], 'attempts') == ARGV[2] then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
"""


# A task ended: it no longer counts against its owner's outstanding tasks (app/limits.py).
_RELEASE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner then redis.call('ZREM', ARGV[1] .. redis.sha1hex(owner), ARGV[2]) end
"""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


#: Replies of a Valkey that cannot take writes right now (failover, lost
#: replicas with min-replicas-to-write, loading its data).
_UNAVAILABLE_REPLIES = ("NOREPLICAS", "MASTERDOWN", "LOADING", "READONLY", "TRYAGAIN")


def is_full(error: ValkeyError) -> bool:
    """Whether Valkey refused a write because it reached maxmemory (it evicts nothing)."""
    return isinstance(error, OutOfMemoryError)


def is_unavailable(error: ValkeyError) -> bool:
    """Whether an error means "Valkey is unavailable now", not a bug."""
    if isinstance(error, (ConnectionError, TimeoutError, ReadOnlyError)):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(_UNAVAILABLE_REPLIES)


def connect_valkey(settings: Settings) -> valkey.Valkey:
    """A client for the primary (asking the Sentinels for it when they are configured)."""
    password = settings.valkey_password.get_secret_value() if settings.valkey_password else None
    timeouts = {
        "socket_timeout": 2.0,
        "socket_connect_timeout": 2.0,
        "health_check_interval": 15,
        # A pooled connection to a restarted server fails once: retry on a fresh one.
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [ConnectionError],
    }
    tls = _valkey_tls(settings)
    if settings.valkey_sentinel_addresses:
        sentinel_password = settings.valkey_sentinel_password
        timeouts |= tls
        sentinel = Sentinel(
            settings.valkey_sentinel_addresses,
            sentinel_kwargs={
                "password": sentinel_password.get_secret_value() if sentinel_password else None,
                "socket_timeout": 1.0,
                **tls,
            },
            **timeouts,
        )
        return sentinel.master_for(settings.valkey_sentinel_master, username=settings.valkey_user, password=password, **timeouts)
    if tls:
        if not settings.valkey_url.startswith("rediss://"):
            raise ValueError("NATSQ_VALKEY_TLS_* are set: NATSQ_VALKEY_URL must be a rediss:// URL")
        timeouts |= {k: v for k, v in tls.items() if k != "ssl"}  # the scheme selects TLS
    return valkey.Valkey.from_url(settings.valkey_url, username=settings.valkey_user, password=password, **timeouts)


def _valkey_tls(settings: Settings) -> dict[str, Any]:
    """Client TLS options for Valkey and Sentinel; empty when TLS is not configured."""
    if not (settings.valkey_tls_ca_file or settings.valkey_tls_cert_file):
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": settings.valkey_tls_ca_file,
        "ssl_certfile": settings.valkey_tls_cert_file,
        "ssl_keyfile": settings.valkey_tls_key_file,
        "ssl_cert_reqs": "required",
    }


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class TaskStore:
    def __init__(self, client: valkey.Valkey, namespace: str, ttl_s: int) -> None:
        self.client = client
        self.namespace = namespace
        self.ttl_s = ttl_s
        self._create = client.register_script(_CREATE)
        self._set_if_attempt = client.register_script(_SET_IF_ATTEMPT)
        self._release = client.register_script(_RELEASE)

    def _key(self, task_id: str) -> str:
        return f"{self.namespace}:task:{task_id}"

    @property
    def _stats_key(self) -> str:
        return f"{self.namespace}:stats"

    # -- gateway ------------------------------------------------------------

    def create(
        self,
        task_id: str,
        actor: str,
        *,
        owner: str = "",
        idempotency_key: str | None = None,
        fingerprint: str = "",
        message: bytes | None = None,
        not_before_ms: int | None = None,
    ) -> str | None:
        """Record a new queued task of ``owner``.

        With an idempotency key the same owner used before, nothing is written
        and the id of the task it created is returned instead; if that request's
        ``fingerprint`` differs, IdempotencyConflict is raised. ``message`` and
        ``not_before_ms`` (epoch ms) let a replay publish the same message again.
        """
        now = now_iso()
        fields = ["state", "queued", "actor", actor, "owner", owner, "attempts", "0", "created_at", now, "updated_at", now]
        if message is not None:
            fields += ["message", message]
        if not_before_ms is not None:
            fields += ["not_before_ms", not_before_ms]
        keys = [self._key(task_id)]
        if idempotency_key:
            # Hashed: any owner and key make a key of one fixed shape.
            scoped = hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()
            keys.append(f"{self.namespace}:idem:{scoped}")
        existing = self._create(keys=keys, args=[self.ttl_s, f"{task_id} {fingerprint}", *fields])
        if not existing:
            return None
        existing_id, _, existing_fingerprint = existing.decode().partition(" ")
        # A key recorded before requests had fingerprints (a rolling upgrade) matches any request.
        if existing_fingerprint and existing_fingerprint != fingerprint:
            raise IdempotencyConflict(existing_id)
        return existing_id

    def mark_published(self, task_id: str) -> None:
        self.client.hset(self._key(task_id), "published", "1")

    def forget(self, task_id: str) -> None:
        self.client.delete(self._key(task_id))

    def get(self, task_id: str) -> dict[str, Any] | None:
        raw = self.client.hgetall(self._key(task_id))
        if not raw:
            return None
        record = {k.decode(): v for k, v in raw.items()}
        task = {
            "task_id": task_id,
            "actor": record["actor"].decode() if "actor" in record else None,
            "state": record["state"].decode(),
            "attempts": int(record.get("attempts", b"0")),
            "result": json.loads(record["result"]) if "result" in record else None,
            "error": record["error"].decode() if record.get("error") else None,
        }
        for field in ("created_at", "started_at", "finished_at", "updated_at"):
            task[field] = record[field].decode() if field in record else None
        task["_owner"] = record["owner"].decode() if "owner" in record else ""
        task["_published"] = record.get("published") == b"1"
        task["_message"] = record.get("message")
        task["_not_before_ms"] = int(record["not_before_ms"]) if "not_before_ms" in record else None
        return task

    def stats(self) -> dict[str, Any]:
        pipe = self.client.pipeline(transaction=False)
        pipe.dbsize()
        pipe.hgetall(self._stats_key)
        keys, counters = pipe.execute()
        counters = {k.decode(): int(v) for k, v in counters.items()}
        return {"keys": keys, "processed": counters.get("processed", 0), "failed": counters.get("failed", 0)}

    def ping(self) -> bool:
        return bool(self.client.ping())

    # -- worker -------------------------------------------------------------

    def _update(self, task_id: str, counter: str | None = None, **fields: Any) -> None:
        fields["updated_at"] = now_iso()
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self._key(task_id), mapping=fields)
        pipe.expire(self._key(task_id), self.ttl_s)
        if counter:
            pipe.hincrby(self._stats_key, counter, 1)
        pipe.execute()

    def mark_running(self, task_id: str, actor: str, attempt: int) -> None:
        self._update(task_id, state="running", actor=actor, attempts=attempt, started_at=now_iso(), error="")

    def _ended(self, task_id: str) -> None:
        self._release(keys=[self._key(task_id)], args=[outstanding_prefix(self.namespace), task_id])

    def mark_succeeded(self, task_id: str, result: Any) -> None:
        self._update(task_id, "processed", state="succeeded", result=json.dumps(result), finished_at=now_iso())
        self._ended(task_id)

    def mark_retrying(self, task_id: str, attempt: int, error: str) -> None:
        now = now_iso()
        self._set_if_attempt(
            keys=[self._key(task_id)],
            args=[self.ttl_s, attempt, "state", "retrying", "error", error, "updated_at", now],
        )
        self.client.hincrby(self._stats_key, "failed", 1)

    def mark_failed(self, task_id: str, error: str) -> None:
        self._update(task_id, "failed", state="failed", error=error, finished_at=now_iso())
        self._ended(task_id)

    def mark_dead_lettered(self, task_id: str) -> None:
        self._update(task_id, state="dead-lettered")
        self._ended(task_id)
