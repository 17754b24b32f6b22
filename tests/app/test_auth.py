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

from tests.app.helpers import submit

SECRET = "s3cret-for-tests-only-0123456789abcdef"
ISSUER = "https://issuer.test"
AUDIENCE = "natsq"


# Tokens in parametrize lists are minted at collection: an hour keeps them valid however long
# the tests before them take on a busy machine.
def token(key, algorithm="HS256", *, scope="tasks:write tasks:read stats:read", expires_in=3600, headers=None, **claims):
    payload = {"iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + expires_in, "sub": "tester", **claims}
    if scope is not None:
        payload["scope"] = scope
    return {"Authorization": f"Bearer {jwt.encode(payload, key, algorithm=algorithm, headers=headers)}"}


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


class _JwksHandler(BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_rs256_public_key_and_es256_jwks(tmp_path, make_stack, nats_server):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    with_key = make_stack(nats_server.url, NATSQ_ENV="production", NATSQ_JWT_PUBLIC_KEY=public_pem)
    with_key.start_gateway()
    assert submit(with_key.gateway_url, "wait", {"seconds": 0}, headers=token(rsa_key, "RS256")).status_code == 202
    assert submit(with_key.gateway_url, "wait", {"seconds": 0}, headers=token(SECRET)).status_code == 401

    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key()))
    _JwksHandler.body = json.dumps({"keys": [{**jwk, "kid": "k1", "alg": "ES256", "use": "sig"}]}).encode()
    server = HTTPServer(("127.0.0.1", 0), _JwksHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with_jwks = make_stack(nats_server.url, NATSQ_ENV="production",
                               NATSQ_JWT_JWKS_URL=f"http://127.0.0.1:{server.server_port}/jwks.json")
        with_jwks.start_gateway()
        good = token(ec_key, "ES256", headers={"kid": "k1"})
        assert submit(with_jwks.gateway_url, "wait", {"seconds": 0}, headers=good).status_code == 202
        other = token(ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "k1"})
        assert submit(with_jwks.gateway_url, "wait", {"seconds": 0}, headers=other).status_code == 401
    finally:
        server.shutdown()
