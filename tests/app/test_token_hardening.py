"""JWT hardening: key settings refused at start-up, lifetime cap, leeway, alg confusion, JWKS over https with rotation."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from natsq.auth import TokenVerifier
from natsq.settings import Settings
from tests.app.helpers import AUDIENCE, ISSUER, SECRET, submit, token
from tests.conftest import free_port


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(), "exactly one of"),
        (dict(jwt_secret=SECRET, jwt_jwks_url="https://idp.test/jwks"), "exactly one of"),
        (dict(jwt_secret="too-short-secret"), "at least 32 bytes"),
        (dict(jwt_secret=SECRET, jwt_issuer=None), "NATSQ_JWT_ISSUER and NATSQ_JWT_AUDIENCE"),
        (dict(jwt_secret=SECRET, jwt_audience=None), "NATSQ_JWT_ISSUER and NATSQ_JWT_AUDIENCE"),
        (dict(jwt_jwks_url="http://idp.test/jwks"), "https://"),
    ],
    ids=["no-key", "two-keys", "short-secret", "no-issuer", "no-audience", "plain-http-jwks"],
)
def test_weak_key_settings_stop_the_gateway_at_start(settings, message):
    with pytest.raises(ValueError, match=message):
        TokenVerifier(Settings(**{"env": "production", "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE, **settings}))


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_gateway(tmp_path_factory, nats_server, valkey_server, rsa_key):
    from tests.conftest import Stack

    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    system = Stack(tmp_path_factory.mktemp("rsa"), nats_server.url, valkey_server.url, NATSQ_ENV="production",
                   NATSQ_JWT_PUBLIC_KEY=public_pem, NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE)
    system.start_gateway()
    yield system.gateway_url, public_pem
    system.stop()


def test_tokens_within_the_rules_are_accepted(rsa_gateway, rsa_key):
    url, _ = rsa_gateway
    now = int(time.time())
    assert submit(url, "wait", {"seconds": 0}, headers=token(rsa_key, "RS256")).status_code == 202
    # Expired 30 s ago, or issued 30 s "in the future": within the 60 s leeway for clock skew.
    assert submit(url, "wait", {"seconds": 0}, headers=token(rsa_key, "RS256", expires_in=-30)).status_code == 202
    assert submit(url, "wait", {"seconds": 0}, headers=token(rsa_key, "RS256", iat=now + 30, nbf=now + 30)).status_code == 202


def test_every_token_fault_is_a_401(rsa_gateway, rsa_key):
    url, public_pem = rsa_gateway
    now = int(time.time())
    hundred_years = 100 * 365 * 86_400
    faults = {
        # The classic confusion: the public key used as an HMAC secret.
        "hs256-with-the-public-key": _forged_hs256(public_pem),
        # An alg of the other key family (was a 500).
        "es256-for-an-rsa-key": token(ec.generate_private_key(ec.SECP256R1()), "ES256"),
        "alg-none": {"Authorization": "Bearer " + jwt.encode({"sub": "x", "exp": now + 60}, None, algorithm="none")},
        "hundred-year-exp": token(rsa_key, "RS256", expires_in=hundred_years),
        "old-iat-long-life": token(rsa_key, "RS256", iat=now - 30 * 86_400),
        "expired-beyond-leeway": token(rsa_key, "RS256", expires_in=-120),
        "not-yet-valid": token(rsa_key, "RS256", nbf=now + 600),
        "no-sub": token(rsa_key, "RS256", sub=None),
    }
    for name, headers in faults.items():
        response = submit(url, "wait", {"seconds": 0}, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["error"]["code"] == "unauthorized"


def _forged_hs256(public_pem: str) -> dict:
    """An HS256 token signed with the public key's PEM (PyJWT refuses to make one, so by hand)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": int(time.time()) + 60, "scope": "tasks:write"}
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(public_pem.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return {"Authorization": f"Bearer {header}.{body}.{b64(signature)}"}


class _Jwks(BaseHTTPRequestHandler):
    keys: list[dict] = []
    fetches = 0

    def do_GET(self):
        type(self).fetches += 1
        body = json.dumps({"keys": self.keys}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _jwk(private_key, kid: str) -> dict:
    return {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private_key.public_key())), "kid": kid, "alg": "ES256", "use": "sig"}


def test_jwks_over_https_follows_key_rotation(tmp_path, make_stack, nats_server):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    old_key, new_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    _Jwks.keys = [_jwk(old_key, "2026-1")]
    try:
        system = make_stack(nats_server.url, NATSQ_ENV="production", NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE,
                            NATSQ_JWT_JWKS_URL=f"https://localhost:{server.server_port}/jwks.json", SSL_CERT_FILE=str(ca_file),
                            NATSQ_JWT_JWKS_REFETCH_COOLDOWN_S="0")
        system.start_gateway()
        url = system.gateway_url

        def status(private_key, kid):
            return submit(url, "wait", {"seconds": 0}, headers=token(private_key, "ES256", headers={"kid": kid})).status_code

        assert status(old_key, "2026-1") == 202
        # The identity provider rotates: a token with the new kid makes the gateway fetch the set again.
        _Jwks.keys = [_jwk(new_key, "2026-2")]
        assert status(new_key, "2026-2") == 202
        assert status(old_key, "2026-1") == 401
        assert status(new_key, "2026-1") == 401  # a kid that exists, the wrong key
    finally:
        server.shutdown()


def test_an_unreachable_identity_provider_is_a_503_that_names_no_server(make_stack, nats_server):
    port = free_port()  # nothing listens there
    system = make_stack(nats_server.url, NATSQ_ENV="production", NATSQ_JWT_ISSUER=ISSUER, NATSQ_JWT_AUDIENCE=AUDIENCE,
                        NATSQ_JWT_JWKS_URL=f"https://127.0.0.1:{port}/jwks.json")
    system.start_gateway()
    response = submit(system.gateway_url, "wait", {"seconds": 0},
                      headers=token(ec.generate_private_key(ec.SECP256R1()), "ES256", headers={"kid": "k"}))
    assert response.status_code == 503, response.text
    assert str(port) not in response.text and response.headers["Retry-After"]
