"""JWT bearer authentication on a gateway of its own."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, token


@pytest.fixture(scope="module")
def hs256_gateway(tmp_path_factory, nats_server, valkey_server):
    from tests.conftest import Stack

    tmp = tmp_path_factory.mktemp("auth")
    secret_file = tmp / "jwt-secret"
    secret_file.write_text(SECRET + "\n")  # as a Kubernetes Secret volume would hold it
    system = Stack(tmp, nats_server.url, valkey_server.url, NATSQ_ENV="production",
                   NATSQ_JWT_SECRET_FILE=str(secret_file), NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE)
    system.start_gateway()
    yield system.gateway_url
    system.stop()


@pytest.mark.parametrize(
    "headers, status, message",
    [
        ({}, 401, "bearer token is required"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "bearer token is required"),
        ({"Authorization": "Bearer not.a.jwt"}, 401, "invalid token"),
        (token("wrong-secret-wrong-secret-wrong-secret"), 401, "invalid token"),
        (token(SECRET, expires_in=-120), 401, "expired"),
        (token(SECRET, iss="https://elsewhere.test"), 401, "invalid token"),
        (token(SECRET, aud="someone-else"), 401, "invalid token"),
        (token(SECRET, scope="tasks:read"), 403, "tasks:write"),
    ],
    ids=["missing", "basic", "garbage", "bad-signature", "expired", "wrong-issuer", "wrong-audience", "missing-scope"],
)
def test_requests_without_a_valid_token_are_refused(hs256_gateway, headers, status, message):
    response = submit(hs256_gateway, "wait", {"seconds": 0}, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_each_route_needs_its_own_scope(hs256_gateway):
    writer = token(SECRET, scope="tasks:write")
    accepted = submit(hs256_gateway, "wait", {"seconds": 0}, headers=writer)
    assert accepted.status_code == 202
    status_url = f"{hs256_gateway}{accepted.json()['status_url']}"
    assert requests.get(status_url, headers=writer, timeout=5).status_code == 403
    assert requests.get(status_url, headers=token(SECRET, scope="tasks:read"), timeout=5).status_code == 200
    assert requests.get(f"{hs256_gateway}/stats", headers=token(SECRET, scope="tasks:read"), timeout=5).status_code == 403
    assert requests.get(f"{hs256_gateway}/stats", headers=token(SECRET, scope=None, scp=["stats:read"]), timeout=5).status_code == 200


def test_probes_and_metrics_need_no_token(hs256_gateway):
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert requests.get(f"{hs256_gateway}{path}", timeout=5).status_code == 200, path


def test_openapi_declares_the_bearer_scheme_when_auth_is_on(hs256_gateway):
    document = requests.get(f"{hs256_gateway}/openapi.json", timeout=5).json()
    operation = document["paths"]["/task"]["post"]
    assert operation["security"] == [{"bearer": ["tasks:write"]}]
    assert {"401", "403"} <= set(operation["responses"])
