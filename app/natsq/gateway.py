"""The HTTP gateway: ``gunicorn --config python:natsq.gunicorn_conf "natsq.gateway:create_app()"``."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass

import dramatiq
import valkey.exceptions
from dramatiq.errors import BrokerError
from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, url_for
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from werkzeug.exceptions import HTTPException

from dramatiq_nats import NatsBroker, StorageFull

from . import metrics, registry
from .auth import TokenVerifier, require_scope
from .callers import current_caller, task_for_caller
from .dispatch import build_broker
from .errors import RETRY_AFTER_S, ApiError
from .limits import CallerLimits
from .logs import configure_logging, current_task_id
from .settings import Settings
from .store import IdempotencyConflict, TaskStore, connect_valkey, is_full, is_unavailable

logger = logging.getLogger("natsq.gateway")

#: Longest delay a task may ask for (7 days, in ms).
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
#: Longest long poll of GET /task/<id>?wait=S: a client that waits longer asks again.
MAX_WAIT_S = 20
#: Deepest nesting of arrays and objects a request body may have; payloads are flat records.
MAX_JSON_DEPTH = 32
#: What an Idempotency-Key may hold: 1 to 255 printable ASCII characters.
IDEMPOTENCY_KEY_PATTERN = r"[\x20-\x7e]{1,255}"
#: The error code of a 503 for a full queue: JetStream had no room, the task was not stored.
QUEUE_FULL = "queue_full"


class TaskRequest(BaseModel):
    """The body of POST /task (the payload is checked against the task's own schema)."""

    model_config = ConfigDict(extra="forbid")
    actor: str = Field(description="Name of the task to run.")
    payload: dict = Field(default_factory=dict, description="Arguments of the task, checked against its schema.")
    delay_ms: int | None = Field(None, ge=0, le=MAX_DELAY_MS, description="Run no earlier than this many ms from now.")


@dataclass
class Services:
    settings: Settings
    broker: NatsBroker
    #: The admin API's and the console's broker: NATSQ_CONSOLE_NATS_USER's connection, or ``broker``.
    console_broker: NatsBroker
    store: TaskStore
    limits: CallerLimits
    verifier: TokenVerifier | None
    tasks: registry.Registry

    def warm_up(self) -> None:
        """Connect to NATS and Valkey ahead of the first request (best effort)."""
        try:
            self.broker.connect()
            self.store.ping()
        except Exception as e:
            logger.warning("Warm-up incomplete: %s", e)


def services() -> Services:
    return current_app.extensions["natsq"]


api = Blueprint("api", __name__)


@api.post("/task")
@require_scope("tasks:write")
def submit_task():
    body = _json_body()
    try:
        # Strict: JSON types as the OpenAPI document states them (no "5" for 5, no false for 0).
        submitted = TaskRequest.model_validate(body, strict=True)
    except ValidationError as e:
        raise _unprocessable(e) from None
    public = services().tasks.public
    spec = public.get(submitted.actor)
    if spec is None:
        raise ApiError(422, "invalid_request", f"unknown actor {submitted.actor!r}; known: {', '.join(sorted(public))}", field="actor")
    try:
        payload = spec.validate(submitted.payload)
    except ValidationError as e:
        raise _unprocessable(e, prefix="payload") from None
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key):
        raise ApiError(400, "bad_request", "Idempotency-Key must be 1 to 255 printable ASCII characters", field="Idempotency-Key")

    svc = services()
    message = dramatiq.Message(
        queue_name=spec.queue,
        actor_name=spec.name,
        args=(),
        kwargs=payload.model_dump(mode="json"),
        options={},
    )
    task_id = message.message_id  # a fresh UUID: the task id users see
    current_task_id.set(task_id)
    replayable = {}
    if idempotency_key:
        replayable["message"] = message.encode()
        if submitted.delay_ms:
            replayable["not_before_ms"] = int(time.time() * 1000) + submitted.delay_ms
    owner = current_caller().owner
    svc.limits.admit(owner, task_id)
    try:
        existing = svc.store.create(
            task_id, spec.name, owner=owner, idempotency_key=idempotency_key,
            fingerprint=_fingerprint(message, submitted.delay_ms), **replayable,
        )
    except IdempotencyConflict:
        svc.limits.release(owner, task_id)
        raise ApiError(
            422, "idempotency_key_reused", "this Idempotency-Key was used for a different request",
            field="Idempotency-Key",
        ) from None
    if existing is not None:
        svc.limits.release(owner, task_id)
        return _replay(svc, existing)
    try:
        _enqueue(svc, message, submitted.delay_ms)
    except ApiError as e:
        # Without a key the client retries with a new request. A full queue stored nothing for
        # sure: the key is freed too, so its retry is a new task, not a replay of a phantom one.
        if idempotency_key is None or e.code == QUEUE_FULL:
            svc.store.forget(task_id, owner=owner, idempotency_key=idempotency_key)
            svc.limits.release(owner, task_id)
        else:
            # Kept for the client's retry with the same key, which publishes the same message
            # again (JetStream drops it if this one did land); hidden until then.
            svc.store.mark_publish_failed(task_id)
        raise
    if idempotency_key:
        svc.store.mark_published(task_id)
    metrics.TASKS_SUBMITTED.labels(spec.queue, spec.name).inc()
    logger.info("Task accepted.", extra={"actor": spec.name, "queue": spec.queue, "delay_ms": submitted.delay_ms})
    return _accepted(task_id, "queued")


def _fingerprint(message: dramatiq.Message, delay_ms: int | None) -> str:
    """What makes two requests "the same" for an Idempotency-Key: actor, validated payload, delay."""
    canonical = json.dumps([message.actor_name, message.kwargs, delay_ms], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _enqueue(svc: Services, message: dramatiq.Message, delay_ms: int | None) -> None:
    started = time.perf_counter()
    try:
        svc.broker.enqueue(message, delay=delay_ms)
    except StorageFull as e:
        metrics.ENQUEUE_FAILURES.labels(reason=QUEUE_FULL).inc()
        logger.error("Task not enqueued: %s", e)
        raise ApiError(
            503, QUEUE_FULL, "the task queue is full; the task was not accepted, retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    except BrokerError as e:
        metrics.ENQUEUE_FAILURES.labels(reason="nats_unavailable").inc()
        logger.error("Task not enqueued: %s", e)
        raise ApiError(
            503, "unavailable", "the task queue is unavailable; the task was not accepted",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from None
    metrics.PUBLISH_LATENCY.observe(time.perf_counter() - started)


def _replay(svc: Services, task_id: str):
    """The answer to a repeated Idempotency-Key: the task it created first."""
    current_task_id.set(task_id)
    unpublished = svc.store.unpublished(task_id)
    if unpublished is not None:
        # The first request did not see its publish acknowledged: publish the
        # same message again; JetStream drops it if the first one did land.
        message, not_before = unpublished
        delay_ms = max(not_before - int(time.time() * 1000), 0) if not_before else None
        _enqueue(svc, dramatiq.Message.decode(message), delay_ms)
        svc.store.mark_published(task_id)
    task = svc.store.get(task_id)
    response = _accepted(task_id, task["state"] if task else "queued")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _accepted(task_id: str, state: str) -> Response:
    status_url = url_for("api.get_task", task_id=task_id)
    response = jsonify({"task_id": task_id, "state": state, "status_url": status_url})
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


@api.get("/task/<task_id>")
@require_scope("tasks:read")
def get_task(task_id: str):
    current_task_id.set(task_id)
    wait_s = _wait_seconds(request.args.get("wait"))
    store = services().store
    task = task_for_caller(store, task_id)
    if wait_s:
        task = store.wait(task_id, wait_s) or task
    return jsonify(public_view(task))


def public_view(task: dict) -> dict:
    """A task record without the store's internal fields."""
    return {k: v for k, v in task.items() if not k.startswith("_")}


@api.get("/stats")
@require_scope("stats:read")
def get_stats():
    svc = services()
    valkey_stats = svc.store.stats()
    try:
        queues = {name: vars(counts) for name, counts in svc.broker.stats().items()}
    except BrokerError as e:
        logger.error("Queue counts unavailable: %s", e)  # the text names servers: for the log only
        raise ApiError(503, "unavailable", "queue counts are unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    return jsonify(
        {
            "valkey": {"keys": valkey_stats["keys"]},
            "queues": queues,
            "workers": {"processed": valkey_stats["processed"], "failed": valkey_stats["failed"]},
        }
    )


@api.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz():
    svc = services()
    checks = {"nats": False, "valkey": False}
    try:
        if not svc.broker.connected:
            svc.broker.connect()
        checks["nats"] = svc.broker.connected
    except BrokerError as e:
        logger.warning("Not ready: NATS: %s", e)
    try:
        checks["valkey"] = svc.store.ping()
    except valkey.exceptions.ValkeyError as e:
        logger.warning("Not ready: Valkey: %s", e)
    ready = all(checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    if not ready:
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


@api.get("/metrics")
def metrics_endpoint():
    return Response(metrics.render(services().broker), mimetype=metrics.CONTENT_TYPE)


@api.get("/openapi.json")
def openapi_document():
    from .openapi import build_document

    return jsonify(build_document(current_app))


def _json_body() -> object:
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "the body must be JSON (Content-Type: application/json)")
    too_deep = ApiError(400, "bad_request", f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than the parser's recursion limit
        raise too_deep from None
    if body is None:
        raise ApiError(400, "bad_request", "the body is not valid JSON")
    if _depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    return body


def _depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (without recursion)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, (dict, list)):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)
    return deepest


def _unprocessable(error: ValidationError, prefix: str | None = None) -> ApiError:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    field = f"{prefix}.{location}" if prefix and location else (prefix or location or None)
    return ApiError(422, "invalid_request", f"{field}: {first['msg']}" if field else first["msg"], field=field)


def _wait_seconds(value: str | None) -> float:
    """``?wait=S``: how long to wait for the task to end, up to MAX_WAIT_S."""
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_WAIT_S:  # also refuses nan and inf
        raise ApiError(422, "invalid_request", f"wait: a number of seconds from 0 to {MAX_WAIT_S}", field="wait")
    return seconds


def _render_error(error: ApiError) -> Response:
    response = jsonify(error.body())
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _render_error)

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        code = {413: "payload_too_large", 404: "not_found", 405: "method_not_allowed"}.get(e.code, "bad_request")
        message = e.description
        if e.code == 413:
            message = f"the body exceeds {app.config['MAX_CONTENT_LENGTH']} bytes"
        # Keeps what the exception adds, such as Allow on a 405.
        headers = {name: value for name, value in e.get_headers() if name.lower() != "content-type"}
        return _render_error(ApiError(e.code or 400, code, message, headers=headers))

    @app.errorhandler(valkey.exceptions.ValkeyError)
    def storage_error(e: valkey.exceptions.ValkeyError):
        if is_full(e):
            logger.error("Valkey is full: %s", e)
            metrics.ENQUEUE_FAILURES.labels(reason="valkey_unavailable").inc()
            return _render_error(ApiError(503, "storage_full", "task storage is full; nothing was accepted",
                                          headers={"Retry-After": str(RETRY_AFTER_S)}))
        if not is_unavailable(e):
            return unexpected(e)
        logger.error("Valkey unavailable: %s", e)
        metrics.ENQUEUE_FAILURES.labels(reason="valkey_unavailable").inc()
        return _render_error(ApiError(503, "unavailable", "task storage is unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}))

    @app.errorhandler(Exception)
    def unexpected(e: Exception):
        logger.exception("Unhandled error.")
        return _render_error(ApiError(500, "internal_error", "an internal error occurred"))


def _no_store(response: Response) -> Response:
    """Task results and errors are per caller: no shared cache may keep any answer."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _register_metrics(app: Flask) -> None:
    @app.before_request
    def start_timer():
        g.started = time.perf_counter()
        current_task_id.set(None)

    @app.after_request
    def record(response: Response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - g.get("started", time.perf_counter()))
        return response


def create_app(settings: Settings | None = None) -> Flask:
    """Build the gateway. Connections open lazily, so this is safe before fork."""
    settings = settings or Settings()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    tasks = registry.load(settings.task_module_names, settings.periodic_tasks)
    valkey_client = connect_valkey(settings)
    broker = build_broker(settings, middleware=[], queues=tasks.queues)
    app.extensions["natsq"] = Services(
        settings=settings,
        broker=broker,
        # Connects on first use: gateways that serve no operator open no second connection.
        console_broker=build_broker(settings.console, middleware=[], queues=tasks.queues)
        if settings.console_nats_user else broker,
        store=TaskStore(valkey_client, settings.namespace, settings.result_ttl_s),
        limits=CallerLimits(valkey_client, settings.namespace, per_minute=settings.rate_limit_per_minute,
                            max_outstanding=settings.max_outstanding_tasks, ttl_s=settings.result_ttl_s),
        verifier=TokenVerifier(settings) if settings.auth else None,
        tasks=tasks,
    )
    from .task_api import task_api  # imports this module's helpers

    app.register_blueprint(api)
    app.register_blueprint(task_api)
    from .admin import admin_api  # imports this module
    from .console import console

    app.register_blueprint(admin_api)
    app.register_blueprint(console)
    _register_error_handlers(app)
    _register_metrics(app)
    app.after_request(_no_store)
    return app


def warm_up_in_background(app: Flask) -> None:
    threading.Thread(target=app.extensions["natsq"].warm_up, name="natsq-warm-up", daemon=True).start()
