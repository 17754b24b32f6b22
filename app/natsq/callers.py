"""Who is calling, and which tasks they may see.

Each task records its owner: the token's ``sub`` (with the tenant claim named by
NATSQ_JWT_TENANT_CLAIM, when set). A caller sees only their own tasks unless the
token has the ``admin`` scope. With authentication off there is one anonymous
caller who sees everything.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from flask import g

from .errors import ApiError

#: The scope that sees and manages every caller's tasks.
ADMIN_SCOPE = "admin"


@dataclass(frozen=True)
class Caller:
    #: Stored on each task; "" when authentication is off.
    owner: str
    admin: bool

    @classmethod
    def from_claims(cls, claims: dict, scopes: set[str], tenant_claim: str | None) -> "Caller":
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise ApiError(401, "unauthorized", "invalid token: it has no subject (sub)")
        owner = subject
        if tenant_claim:
            tenant = claims.get(tenant_claim)
            if not isinstance(tenant, str) or not tenant:
                raise ApiError(401, "unauthorized", f"invalid token: it has no tenant ({tenant_claim})")
            # JSON, so no choice of subject and tenant can spell another pair.
            owner = json.dumps([tenant, subject])
        return cls(owner=owner, admin=ADMIN_SCOPE in scopes)

    def may_see(self, task: dict[str, Any]) -> bool:
        return self.admin or task.get("_owner", "") == self.owner


#: The one caller when authentication is off.
ANONYMOUS = Caller(owner="", admin=True)


def current_caller() -> Caller:
    """The caller of the current request (set by ``auth.require_scope``)."""
    return g.get("caller", ANONYMOUS)


def task_for_caller(store, task_id: str) -> dict[str, Any]:
    """The task ``task_id`` if the caller may see it.

    Another caller's task gets the same 404 as an unknown id, so task ids
    cannot be probed. GET and DELETE /task/<id> both go through here.
    """
    task = store.get(task_id) if is_task_id(task_id) else None
    if task is None or not current_caller().may_see(task):
        raise ApiError(404, "not_found", f"no task {task_id!r} (unknown, or its record expired)")
    return task


def is_task_id(value: str) -> bool:
    """Whether ``value`` is a task id as the gateway hands them out (a canonical UUID)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
