"""A stack with authentication on, for the admin API, the console and the CLI."""

from __future__ import annotations

import pytest

from tests.app.helpers import AUDIENCE, ISSUER, SECRET, token
from tests.conftest import Stack


def admin_headers(sub: str = "operator-1") -> dict[str, str]:
    return token(SECRET, scope="admin", sub=sub)


def writer_headers() -> dict[str, str]:
    return token(SECRET, scope="tasks:write")


def start_admin_stack(tmp, nats_url: str, valkey_url: str, **env: str) -> Stack:
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(SECRET)
    system = Stack(tmp, nats_url, valkey_url, NATSQ_ENV="production", NATSQ_JWT_SECRET_FILE=str(secret_file),
                   NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE, NATSQ_HEARTBEAT_INTERVAL_S="1", **env)
    system.start_gateway()
    system.start_worker()
    return system


@pytest.fixture(scope="session")
def admin_stack(tmp_path_factory, nats_server, valkey_server):
    """Gateway and worker with JWT authentication on, shared by the admin API and CLI tests.

    Replayed tasks may dead-letter again at any time: tests check their own
    dead letters, never that a queue has none.
    """
    system = start_admin_stack(tmp_path_factory.mktemp("admin"), nats_server.url, valkey_server.url)
    yield system
    system.stop()
