"""The deploy smoke test (.ci/smoke_test.py) against real gateway, worker, NATS and Valkey processes.

The CI cluster and a developer's kind cluster run the same script (.ci/kind_deploy.sh); here it
runs against the `make run`-style stack of tests/conftest.py, with and without JWT auth, and must
fail when no worker takes the task.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

SMOKE = ROOT / ".ci" / "smoke_test.py"
JWT_SECRET = "smoke-test-secret-with-enough-bytes-for-hs256"


def smoke(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SMOKE), *args], capture_output=True, text=True, timeout=120, env=env)


def test_passes_against_the_running_system(stack):
    result = smoke("--url", stack.gateway_url, "--worker-metrics-url", stack.worker_metrics_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test passed" in result.stdout


def test_signs_its_own_token_when_the_gateway_requires_one(nats_server, make_stack, tmp_path):
    stack = make_stack(nats_server.url, NATSQ_AUTH_ENABLED="true", NATSQ_JWT_SECRET=JWT_SECRET)
    stack.start_gateway()
    stack.start_worker()
    unauthenticated = smoke("--url", stack.gateway_url, "--timeout", "10")
    assert unauthenticated.returncode == 1 and "answered 401" in unauthenticated.stderr, unauthenticated.stderr

    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(JWT_SECRET + "\n")
    result = smoke("--url", stack.gateway_url, "--jwt-secret-file", str(secret_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_fails_when_no_worker_runs_the_task(nats_server, make_stack):
    stack = make_stack(nats_server.url)
    stack.start_gateway()
    result = smoke("--url", stack.gateway_url, "--timeout", "3")
    assert result.returncode == 1
    assert "to finish: not within 3 s" in result.stderr, result.stderr


def test_fails_when_the_gateway_is_unreachable(tmp_path):
    from tests.conftest import free_port

    result = smoke("--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1")
    assert result.returncode == 1 and "GET /readyz" in result.stderr, result.stderr
