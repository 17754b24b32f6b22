"""JWT bearer authentication (PyJWT): signature, expiry, issuer, audience, scopes."""

from __future__ import annotations

from functools import wraps
from typing import Callable

import jwt
from flask import current_app, g, request

from .errors import ApiError
from .settings import Settings

SCOPES = ("tasks:write", "tasks:read", "stats:read", "admin")
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="natsq"'}


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
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
                g.auth_claims = _authorize(verifier, scope)
            return view(*args, **kwargs)

        checked.required_scope = scope  # read by the OpenAPI document
        return checked

    return decorator


def _authorize(verifier: TokenVerifier, scope: str) -> dict:
    header = request.headers.get("Authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "a bearer token is required", headers=_CHALLENGE)
    return verify_token(verifier, token.strip(), scope)


def verify_token(verifier: TokenVerifier, token: str, scope: str) -> dict:
    """The token's claims if it is valid and grants ``scope``; else an ApiError (401 or 403)."""
    try:
        claims = verifier.claims(token)
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "unauthorized", "the token has expired", headers=_CHALLENGE) from None
    except (jwt.InvalidTokenError, jwt.PyJWKClientError) as e:
        raise ApiError(401, "unauthorized", f"invalid token: {e}", headers=_CHALLENGE) from None
    if scope not in token_scopes(claims):
        raise ApiError(403, "forbidden", f"the token lacks the scope {scope!r}")
    return claims
