from __future__ import annotations

import asyncio
import time

import jwt
import nats
import requests

from tests.conftest import wait_until


def submit(base_url: str, actor: str, payload: dict, *, headers: dict | None = None, **extra) -> requests.Response:
    return requests.post(f"{base_url}/task", json={"actor": actor, "payload": payload, **extra}, headers=headers, timeout=10)


def task(base_url: str, task_id: str, headers: dict | None = None) -> dict:
    response = requests.get(f"{base_url}/task/{task_id}", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


async def nats_errors_as(url: str, user: str, password: str, action) -> list[str]:
    """Run ``action(nc, js)`` as a NATS user; the errors the server reported (a denied request also times out)."""
    violations: list[str] = []

    async def on_error(e: Exception) -> None:
        violations.append(str(e))

    nc = await nats.connect(url, user=user, password=password, inbox_prefix=f"_INBOX_{user}",
                            error_cb=on_error, max_reconnect_attempts=0)
    try:
        try:
            await action(nc, nc.jetstream(timeout=1))
        except Exception:  # a denied request goes unanswered: the server's error is what counts
            pass
        await nc.flush(timeout=1)
        await asyncio.sleep(0.1)  # the server's -ERR arrives asynchronously
    finally:
        await nc.close()
    return violations


def wait_for_state(base_url: str, task_id: str, *states: str, timeout: float = 20, headers: dict | None = None) -> dict:
    return wait_until(
        lambda: (t := task(base_url, task_id, headers))["state"] in states and t,
        timeout,
        interval=0.05,
        message=f"task {task_id} to reach {states}",
    )


SECRET = "s3cret-for-tests-only-0123456789abcdef"
ISSUER = "https://issuer.test"
AUDIENCE = "natsq"


def token(key, algorithm="HS256", *, scope="tasks:write tasks:read stats:read", expires_in=3600, headers=None, **claims):
    """An Authorization header with a JWT for the test issuer and audience.

    Parametrized tokens are made at collection: by default they outlive the whole session.
    """
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + expires_in, "sub": "tester", **claims}
    if scope is not None:
        payload["scope"] = scope
    return {"Authorization": f"Bearer {jwt.encode(payload, key, algorithm=algorithm, headers=headers)}"}
