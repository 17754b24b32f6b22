"""The OpenAPI 3.1 document of the gateway, built from the same models that validate requests."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from .errors import RETRY_AFTER_S
from .gateway import IDEMPOTENCY_KEY_PATTERN, MAX_DELAY_MS, MAX_JSON_DEPTH, MAX_WAIT_S
from .registry import Registry
from .store import STATES
from .task_api import TaskQuery

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "The request field at fault, when there is one."},
            },
        }
    },
}

_TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}

_SCHEMAS: dict[str, Any] = {
    "Error": _ERROR,
    "Accepted": {
        "type": "object",
        "required": ["task_id", "state", "status_url"],
        "properties": {
            "task_id": {"type": "string", "format": "uuid"},
            "state": {"enum": list(STATES)},
            "status_url": {"type": "string"},
        },
    },
    "Task": {
        "type": "object",
        "required": ["task_id", "actor", "state", "attempts", "result", "error", "progress", "cancel_requested",
                     "created_at", "started_at", "finished_at", "updated_at"],
        "properties": {
            "task_id": {"type": "string", "format": "uuid"},
            "actor": {"type": ["string", "null"]},
            "state": {"enum": list(STATES)},
            "attempts": {"type": "integer", "minimum": 0},
            "result": {"description": "The task's return value once it succeeded."},
            "error": {"type": ["string", "null"]},
            "progress": {
                "description": "The latest progress the task reported, if any.",
                "type": ["object", "null"],
                "required": ["fraction", "meta", "at"],
                "properties": {
                    "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                    "meta": {"description": "Whatever the task reported with it."},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
            "cancel_requested": {"type": "boolean", "description": "DELETE /task/<id> was called."},
            "created_at": _TIMESTAMP,
            "started_at": _TIMESTAMP,
            "finished_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        },
    },
    "Stats": {
        "type": "object",
        "required": ["valkey", "queues", "workers"],
        "properties": {
            "valkey": {"type": "object", "required": ["keys"], "properties": {"keys": {"type": "integer"}}},
            "queues": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["pending", "in_flight", "redelivered", "scheduled", "dead_lettered"],
                    "properties": {
                        name: {"type": "integer", "minimum": 0}
                        for name in ("pending", "in_flight", "redelivered", "scheduled", "dead_lettered")
                    },
                },
            },
            "workers": {
                "type": "object",
                "required": ["processed", "failed"],
                "properties": {"processed": {"type": "integer"}, "failed": {"type": "integer"}},
            },
        },
    },
    "TaskPage": {
        "type": "object",
        "required": ["tasks", "next_cursor"],
        "properties": {
            "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
            "next_cursor": {"type": ["string", "null"], "description": "Pass as `cursor` for the next page; null at the end."},
        },
    },
    "Cancelled": {
        "type": "object",
        "required": ["task_id", "state", "cancel_requested"],
        "properties": {
            "task_id": {"type": "string", "format": "uuid"},
            "state": {"enum": ["cancelled", "running"]},
            "cancel_requested": {"const": True},
        },
    },
    "Periodic": {
        "type": "object",
        "required": ["periodic"],
        "properties": {
            "periodic": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "task", "schedule", "payload", "queue"],
                    "properties": {
                        "name": {"type": "string"},
                        "task": {"type": "string"},
                        "schedule": {"type": "string", "description": "`@every <duration>`, `@hourly`..., or six-field cron."},
                        "payload": {"type": "object"},
                        "queue": {"type": "string"},
                    },
                },
            }
        },
    },
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
    "Readiness": {
        "type": "object",
        "required": ["status", "checks"],
        "properties": {
            "status": {"enum": ["ready", "unavailable"]},
            "checks": {
                "type": "object",
                "required": ["nats", "valkey"],
                "properties": {"nats": {"type": "boolean"}, "valkey": {"type": "boolean"}},
            },
        },
    },
}


def _task_request_schemas(tasks: Registry) -> dict[str, Any]:
    """One request schema per public task: the actor's name fixes the payload schema."""
    schemas = {}
    for name, spec in tasks.public.items():
        payload = spec.payload.model_json_schema()
        payload.pop("title", None)
        schemas[f"Submit_{name}"] = {
            "type": "object",
            "description": spec.description,
            "required": ["actor", "payload"],
            "additionalProperties": False,
            "properties": {
                "actor": {"const": name},
                "payload": payload,
                "delay_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_DELAY_MS},
            },
        }
    return schemas


def _query_parameters() -> dict[str, Any]:
    schema = TaskQuery.model_json_schema()
    return {name: {k: v for k, v in prop.items() if k != "title"} for name, prop in schema["properties"].items()}


def _json(schema: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _error(description: str, **headers: str) -> dict[str, Any]:
    response = {"description": description, **_json("Error")}
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}, "description": text} for name, text in headers.items()}
    return response


_UNAVAILABLE = _error("NATS or Valkey is unavailable; nothing was accepted.", **{"Retry-After": f"Seconds to wait ({RETRY_AFTER_S})."})
_AUTH = {"401": _error("Missing, invalid or expired bearer token."), "403": _error("The token lacks the required scope.")}


def build_document(app: Flask) -> dict[str, Any]:
    request_schemas = _task_request_schemas(app.extensions["natsq"].tasks)
    task_id = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {
        "/task": {
            "post": {
                "summary": "Submit a task",
                "operationId": "submitTask",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": f"^{IDEMPOTENCY_KEY_PATTERN}$"},
                        "description": "Repeating a key returns the task it created and enqueues nothing new.",
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [{"$ref": f"#/components/schemas/{n}"} for n in request_schemas]}
                        }
                    },
                },
                "responses": {
                    "202": {"description": "Durably enqueued (acknowledged by JetStream).", **_json("Accepted")},
                    "400": _error(f"Malformed JSON, nesting deeper than {MAX_JSON_DEPTH} levels, or a malformed Idempotency-Key."),
                    "413": _error("The body is larger than NATSQ_MAX_BODY_BYTES."),
                    "415": _error("The body is not JSON."),
                    "422": _error("Unknown actor, a payload that breaks the actor's schema, or an Idempotency-Key reused for a different request; `field` names it."),
                    "429": _error("Over the caller's requests a minute or unfinished tasks.",
                                  **{"Retry-After": "Seconds until the caller may submit again."}),
                    "503": _error("NATS or Valkey is unavailable, or full (`queue_full`, `storage_full`); nothing was accepted.",
                                  **{"Retry-After": f"Seconds to wait ({RETRY_AFTER_S})."}),
                },
            }
        },
        "/task/{task_id}": {
            "get": {
                "summary": "Read a task's state, progress and result; optionally wait for it to end",
                "operationId": "getTask",
                "parameters": [
                    task_id,
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
                        "description": "Seconds to wait for the task to end (succeeded, dead-lettered or "
                        "cancelled) before answering with its state as it is then.",
                    },
                ],
                "responses": {
                    "200": {"description": "The task.", **_json("Task")},
                    "404": _error("No such task, its record expired, or it belongs to another caller."),
                    "422": _error("A malformed `wait`."),
                    "503": _UNAVAILABLE,
                },
            },
            "delete": {
                "summary": "Cancel a task",
                "operationId": "cancelTask",
                "description": "A queued, scheduled or retrying task is cancelled at once and never starts; "
                "a running one is flagged and stops if its code checks the flag.",
                "parameters": [task_id],
                "responses": {
                    "200": {"description": "Cancelled: it will not run.", **_json("Cancelled")},
                    "202": {"description": "Running: asked to stop (cooperative).", **_json("Cancelled")},
                    "404": _error("No such task, or its record expired."),
                    "409": _error("The task has already ended."),
                    "503": _UNAVAILABLE,
                },
            },
        },
        "/tasks": {
            "get": {
                "summary": "List tasks, newest first",
                "operationId": "listTasks",
                "parameters": [
                    {"name": name, "in": "query", "required": False, "schema": schema, "description": schema.get("description", "")}
                    for name, schema in _query_parameters().items()
                ],
                "responses": {
                    "200": {"description": "One page of tasks.", **_json("TaskPage")},
                    "422": _error("A malformed filter or cursor; `field` names it."),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/periodic": {
            "get": {
                "summary": "The periodic tasks and their schedules",
                "operationId": "listPeriodic",
                "responses": {"200": {"description": "Periodic tasks.", **_json("Periodic")}},
            }
        },
        "/stats": {
            "get": {
                "summary": "Queue backlog, Valkey key count and worker counters",
                "operationId": "getStats",
                "responses": {"200": {"description": "Statistics.", **_json("Stats")}, "503": _UNAVAILABLE},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "responses": {"200": {"description": "Alive.", **_json("Health")}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: NATS connected and Valkey answering",
                "operationId": "readyz",
                "responses": {
                    "200": {"description": "Ready.", **_json("Readiness")},
                    "503": {"description": "Not ready.", **_json("Readiness")},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}},
            }
        },
    }
    from .admin import openapi_paths

    paths.update(openapi_paths())
    secured = app.extensions["natsq"].verifier is not None
    for rule in app.url_map.iter_rules():
        scope = getattr(app.view_functions[rule.endpoint], "required_scope", None)
        if scope is None:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = paths[path][method.lower()]
            operation["description"] = f"Needs the scope `{scope}` when authentication is on."
            if secured:
                operation["security"] = [{"bearer": [scope]}]
                operation["responses"].update(_AUTH)
    return {
        "openapi": "3.1.0",
        "info": {"title": "natsq gateway", "version": "1.0.0", "description": "Durable background tasks on NATS JetStream."},
        "paths": paths,
        "components": {
            "schemas": {**_SCHEMAS, **request_schemas},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
