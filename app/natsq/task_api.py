"""Routes beyond submitting and reading one task: cancel, list, periodic schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from flask import Blueprint, jsonify, request
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .auth import require_scope
from .errors import ApiError
from .callers import current_caller, task_for_caller
from .gateway import _unprocessable, public_view, services
from .logs import current_task_id
from .periodic import describe
from .store import CURSOR_PATTERN, STATES

task_api = Blueprint("task_api", __name__)


def _iso_8601(value: object) -> object:
    """A time in a query is ISO 8601 text; pydantic alone would also read a number as a timestamp."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


#: A time with its zone, written in ISO 8601 (``2026-12-03T10:00:00Z``).
QueryTime = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]


class TaskQuery(BaseModel):
    """The query of GET /tasks."""

    model_config = ConfigDict(extra="forbid")
    state: Literal[STATES] | None = Field(None, description="Only tasks in this state.")
    actor: str | None = Field(None, max_length=100, description="Only tasks of this actor.")
    created_after: QueryTime | None = Field(None, description="Only tasks created at or after this time.")
    created_before: QueryTime | None = Field(None, description="Only tasks created before this time.")
    limit: int = Field(50, ge=1, le=200, description="Tasks per page, at most.")
    cursor: str | None = Field(None, pattern=CURSOR_PATTERN, description="`next_cursor` of the previous page.")


@task_api.delete("/task/<task_id>")
@require_scope("tasks:write")
def cancel_task(task_id: str):
    current_task_id.set(task_id)
    store = services().store
    task_for_caller(store, task_id)  # 404 for another caller's task
    state = store.request_cancel(task_id)
    if state is None:
        raise ApiError(404, "not_found", f"no task {task_id!r} (unknown, or its record expired)")
    if state != "cancelled" and state != "running":
        raise ApiError(409, "conflict", f"the task has already ended ({state}); nothing to cancel")
    response = jsonify({"task_id": task_id, "state": state, "cancel_requested": True})
    # A running task stops only if and when its code checks the flag.
    response.status_code = 200 if state == "cancelled" else 202
    return response


@task_api.get("/tasks")
@require_scope("tasks:read")
def list_tasks():
    try:
        query = TaskQuery.model_validate(request.args.to_dict())
    except ValidationError as e:
        raise _unprocessable(e) from None
    try:
        caller = current_caller()
        tasks, next_cursor = services().store.list_tasks(**query.model_dump(), owner=None if caller.admin else caller.owner)
    except ValueError as e:
        raise ApiError(422, "invalid_request", str(e), field="cursor") from None
    return jsonify({"tasks": [public_view(task) for task in tasks], "next_cursor": next_cursor})


@task_api.get("/periodic")
@require_scope("tasks:read")
def list_periodic():
    return jsonify({"periodic": describe(services().tasks)})
