"""Smoke test of a running natsq: one task goes through the gateway, a worker and Valkey.

    .venv/bin/python .ci/smoke_test.py --url http://127.0.0.1:8000 [--worker-metrics-url URL]
        [--jwt-secret-file FILE]

Checks, in order: the gateway is ready (/readyz), POST /task is accepted (202), the task
succeeds with the expected result, /stats counts it as processed, /metrics answers with the
gateway's metrics (and the worker's exporter with Dramatiq's, when its URL is given). Exits
0 when all pass, 1 with the failing step on stderr. The same script checks `make run`
(tests/ci/test_smoke.py), a developer's kind cluster and the CI cluster (.ci/kind_deploy.sh).

When the gateway requires JWTs, pass the HS256 secret (--jwt-secret-file, or the environment
variable NATSQ_SMOKE_JWT_SECRET): the script signs a short-lived token with the scopes it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jwt
import requests

#: A task that finishes in milliseconds with a result the script can check.
ACTOR, PAYLOAD, RESULT = "count_primes", {"limit": 100}, {"limit": 100, "primes": 25}
FINAL_STATES = {"succeeded", "failed", "dead_lettered", "cancelled"}


class SmokeFailure(Exception):
    """A step of the smoke test did not pass."""


def bearer_token(secret: str, issuer: str | None, audience: str | None) -> str:
    now = int(time.time())
    claims = {"sub": "natsq-smoke-test", "scope": "tasks:write tasks:read stats:read", "iat": now, "exp": now + 600}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


class Smoke:
    def __init__(self, url: str, token: str | None, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> requests.Response:
        return self.http.get(f"{self.url}{path}", timeout=10)

    def eventually(self, what: str, check):
        """Poll ``check`` (returns a value or None) until it gives a value or the timeout passes."""
        deadline = time.monotonic() + self.timeout_s
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            try:
                value = check()
            except requests.RequestException as e:
                value, last_error = None, str(e)
            if value is not None:
                return value
            time.sleep(0.2)
        raise SmokeFailure(f"{what}: not within {self.timeout_s:.0f} s ({last_error})")

    def processed(self) -> int:
        response = self.get("/stats")
        if response.status_code != 200:
            raise SmokeFailure(f"GET /stats answered {response.status_code}: {response.text[:300]}")
        return response.json()["workers"]["processed"]

    def run(self, worker_metrics_url: str | None) -> None:
        self.eventually("the gateway to be ready (GET /readyz 200)", lambda: self.get("/readyz").ok or None)
        processed_before = self.processed()

        response = self.http.post(f"{self.url}/task", json={"actor": ACTOR, "payload": PAYLOAD}, timeout=10)
        if response.status_code != 202:
            raise SmokeFailure(f"POST /task answered {response.status_code}: {response.text[:300]}")
        task_id = response.json()["task_id"]
        print(f"accepted task {task_id}")

        def finished():
            task = self.get(f"/task/{task_id}").json()
            return task if task.get("state") in FINAL_STATES else None

        task = self.eventually(f"task {task_id} to finish", finished)
        if task["state"] != "succeeded" or task.get("result") != RESULT:
            raise SmokeFailure(f"task {task_id} ended {task['state']!r} with result {task.get('result')!r}: {task}")
        print(f"task {task_id} succeeded: {task['result']}")

        processed = self.eventually(
            "/stats to count the task", lambda: (n := self.processed()) > processed_before and n or None
        )
        print(f"/stats: {processed} processed (was {processed_before})")

        self.expect_metrics(f"{self.url}/metrics", "natsq_http_requests_total")
        if worker_metrics_url:
            self.expect_metrics(worker_metrics_url, "dramatiq_messages_total")

    def expect_metrics(self, url: str, metric: str) -> None:
        response = self.http.get(url, timeout=10)
        if response.status_code != 200 or f"\n{metric}" not in response.text:
            raise SmokeFailure(f"{url} answered {response.status_code} without {metric}")
        print(f"{url}: {metric} present")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the gateway's base URL")
    parser.add_argument("--worker-metrics-url", help="a worker's Prometheus exporter (checked when given)")
    parser.add_argument("--jwt-secret-file", type=Path, help="HS256 secret to sign a token with (auth on)")
    parser.add_argument("--jwt-issuer")
    parser.add_argument("--jwt-audience")
    parser.add_argument("--timeout", type=float, default=60, help="seconds each waiting step may take")
    args = parser.parse_args(argv)

    secret = args.jwt_secret_file.read_text().strip() if args.jwt_secret_file else os.environ.get("NATSQ_SMOKE_JWT_SECRET")
    token = bearer_token(secret, args.jwt_issuer, args.jwt_audience) if secret else None
    try:
        Smoke(args.url, token, args.timeout).run(args.worker_metrics_url)
    except SmokeFailure as e:
        print(f"smoke test FAILED: {e}", file=sys.stderr)
        return 1
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
