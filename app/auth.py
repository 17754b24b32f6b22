"""JWT bearer authentication (PyJWT): signature, expiry, issuer, audience, scopes."""

from __future__ import annotations

from functools import wraps
from typing import Callable

import jwt
from flask import current_app, g, request

from .callers import ADMIN_SCOPE, Caller
from .errors import ApiError
from .settings import Settings

SCOPES = ("tasks:write", "tasks:read", "stats:read", ADMIN_SCOPE)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="natsq"'}


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.tenant_claim = settings.jwt_tenant_claim
        self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=True) if settings.jwt_jwks_url else None
        if settings.jwt_secret:
            self._key, self.algorithms = settings.jwt_secret.get_secret_value(), ["HS256"]
        else:
            self._key, self.algorithms = settings.jwt_public_key, ["RS256", "ES256"]

    def claims(self, token: str) -> dict:
        key = self._jwks.get_signing_key_from_jwt(token).key if self._jwks else self._key
        return jwt.decode(
            token,
            key,
            algorithms=self.algorithms,
            issuer=self.issuer,
            audience=self.audience,
            options={"require": ["exp"], "verify_aud": self.audience is not None},
        )


def token_scopes(claims: dict) -> set[str]:
    """Scopes from ``scope`` (space-separated, RFC 8693) or ``scp``/``scopes`` (list)."""
    scopes = claims.get("scope") or claims.get("scp") or claims.get("scopes") or []
    return set(scopes.split()) if isinstance(scopes, str) else set(scopes)


def require_scope(scope: str) -> Callable:
    assert scope in SCOPES

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def checked(*args, **kwargs):
            verifier: TokenVerifier | None = current_app.extensions["natsq"].verifier
            if verifier is not None:
                _authorize(verifier, scope)
            return view(*args, **kwargs)

        checked.required_scope = scope  # read by the OpenAPI document
        return checked

    return decorator


def _authorize(verifier: TokenVerifier, scope: str) -> None:
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "a bearer token is required", headers=_CHALLENGE)
    try:
        claims = verifier.claims(token.strip())
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "unauthorized", "the token has expired", headers=_CHALLENGE) from None
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as e:
        raise ApiError(401, "unauthorized", f"invalid token: {e}", headers=_CHALLENGE) from None
    scopes = token_scopes(claims)
    if scope not in scopes:
        raise ApiError(403, "forbidden", f"the token lacks the scope {scope!r}")
    g.caller = Caller.from_claims(claims, scopes, verifier.tenant_claim)
