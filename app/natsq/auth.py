"""JWT bearer authentication (PyJWT): signature, expiry, issuer, audience, scopes."""

from __future__ import annotations

import logging
import time
from functools import wraps
from typing import Callable

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from flask import current_app, g, request

from .callers import ADMIN_SCOPE, Caller
from .errors import RETRY_AFTER_S, ApiError
from .settings import Settings

logger = logging.getLogger(__name__)

SCOPES = ("tasks:write", "tasks:read", "stats:read", ADMIN_SCOPE)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="natsq"'}


#: Shortest HS256 secret accepted: as long as the hash (RFC 7518, section 3.2).
MIN_HMAC_KEY_BYTES = 32
#: The signatures a public key may verify, by key type (never "none", never HMAC).
_ALGORITHMS_BY_KEY = {rsa.RSAPublicKey: ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"],
                      ec.EllipticCurvePublicKey: ["ES256", "ES384", "ES512"],
                      ed25519.Ed25519PublicKey: ["EdDSA"]}
#: Seconds to wait for the identity provider's JWKS document.
JWKS_TIMEOUT_S = 3.0


class IdentityProviderUnavailable(Exception):
    """The JWKS document could not be fetched: not the caller's fault."""


class TokenVerifier:
    """Checks bearer tokens against one key source: an HS256 secret, a public key, or a JWKS URL."""

    def __init__(self, settings: Settings) -> None:
        _check_key_settings(settings)
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.tenant_claim = settings.jwt_tenant_claim
        self.leeway_s = settings.jwt_leeway_s
        self.max_lifetime_s = settings.jwt_max_lifetime_s
        self._jwks = None
        if settings.jwt_jwks_url:
            # The key set is kept jwks_cache_s; an unknown kid refetches it (key rotation), at most
            # once per cooldown.
            self._jwks = jwt.PyJWKClient(settings.jwt_jwks_url, cache_keys=False, cache_jwk_set=True,
                                         lifespan=settings.jwt_jwks_cache_s, timeout=JWKS_TIMEOUT_S,
                                         cooldown_duration=settings.jwt_jwks_refetch_cooldown_s)
        elif settings.jwt_secret:
            self._key, self.algorithms = settings.jwt_secret.get_secret_value(), ["HS256"]
        else:
            self._key = serialization.load_pem_public_key(settings.jwt_public_key.encode())
            self.algorithms = next(algs for kind, algs in _ALGORITHMS_BY_KEY.items() if isinstance(self._key, kind))

    def claims(self, token: str) -> dict:
        if self._jwks:
            try:
                signing_key = self._jwks.get_signing_key_from_jwt(token)
            except jwt.PyJWKClientConnectionError as e:
                raise IdentityProviderUnavailable(str(e)) from None
            key, algorithms = signing_key.key, [signing_key.algorithm_name]
        else:
            key, algorithms = self._key, self.algorithms
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            issuer=self.issuer,
            audience=self.audience,
            leeway=self.leeway_s,
            options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
        )
        issued_at = claims.get("iat") if isinstance(claims.get("iat"), (int, float)) else time.time()
        if claims["exp"] - issued_at > self.max_lifetime_s:
            raise jwt.InvalidTokenError(f"it lives longer than {self.max_lifetime_s} s")
        return claims


def _check_key_settings(settings: Settings) -> None:
    """Refuse key settings that would make tokens easy to forge or replay."""
    sources = [bool(settings.jwt_secret), bool(settings.jwt_public_key), bool(settings.jwt_jwks_url)]
    if sum(sources) != 1:
        raise ValueError(
            "JWT authentication is on (the default outside development): set exactly one of NATSQ_JWT_SECRET, "
            "NATSQ_JWT_PUBLIC_KEY or NATSQ_JWT_JWKS_URL, or NATSQ_AUTH_ENABLED=false"
        )
    if settings.jwt_secret and len(settings.jwt_secret.get_secret_value().encode()) < MIN_HMAC_KEY_BYTES:
        raise ValueError(f"NATSQ_JWT_SECRET must be at least {MIN_HMAC_KEY_BYTES} bytes")
    if settings.env == "production":
        if not (settings.jwt_issuer and settings.jwt_audience):
            raise ValueError("in production NATSQ_JWT_ISSUER and NATSQ_JWT_AUDIENCE must be set")
        if settings.jwt_jwks_url and not settings.jwt_jwks_url.startswith("https://"):
            raise ValueError("in production NATSQ_JWT_JWKS_URL must be an https:// URL")
        if settings.jwt_secret:
            logger.warning("JWTs are checked with a shared HS256 secret: prefer NATSQ_JWT_JWKS_URL or NATSQ_JWT_PUBLIC_KEY.")


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
    except IdentityProviderUnavailable as e:
        logger.error("JWKS unavailable: %s", e)  # names the identity provider: for the log only
        raise ApiError(503, "unavailable", "the token's signing keys cannot be fetched now",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "unauthorized", "the token has expired", headers=_CHALLENGE) from None
    except jwt.PyJWKClientError:
        raise ApiError(401, "unauthorized", "invalid token: no signing key matches it", headers=_CHALLENGE) from None
    except jwt.PyJWTError as e:  # every other token fault, including an alg that does not fit the key
        raise ApiError(401, "unauthorized", f"invalid token: {e}", headers=_CHALLENGE) from None
    scopes = token_scopes(claims)
    if scope not in scopes:
        raise ApiError(403, "forbidden", f"the token lacks the scope {scope!r}")
    g.caller = Caller.from_claims(claims, scopes, verifier.tenant_claim)
    return claims
