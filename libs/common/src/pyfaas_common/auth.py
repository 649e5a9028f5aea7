"""Who is calling: bearer tokens (JWT) checked the same way by the API and the gateway.

``PYFAAS_AUTH=none`` trusts the ``user`` a request names — for one person on one machine
(``make dev``), and every service says so at start. ``PYFAAS_AUTH=jwt`` requires
``Authorization: Bearer <token>``: HS256 with ``PYFAAS_JWT_SECRET``, or RS256 with a PEM
public key (``PYFAAS_JWT_PUBLIC_KEY_FILE``) or a JWKS file (``PYFAAS_JWT_JWKS_FILE``).
The token's ``sub`` is the user; ``"admin": true`` sees every user's functions.
``python -m pyfaas_common.auth USER`` mints a token for local use (HS256).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .problems import Problem
from .validation import NAME_RE

log = logging.getLogger(__name__)

_PLACEHOLDERS = {"changeme", "change-me", "secret", "changethis", "please-change", "xxx"}
MIN_SECRET_BYTES = 32


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PYFAAS_", extra="ignore")

    auth: Literal["none", "jwt"] = "none"
    jwt_secret: SecretStr | None = None
    """HS256 shared secret, at least 32 bytes; placeholders are refused."""
    jwt_public_key_file: Path | None = None
    """RS256: the issuer's public key, PEM."""
    jwt_jwks_file: Path | None = None
    """RS256: the issuer's keys as a JWKS document (tokens name theirs with ``kid``)."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _usable(self) -> AuthSettings:
        if self.auth != "jwt":
            return self
        keys = [self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_file]
        if not any(keys):
            raise ValueError(
                "PYFAAS_AUTH=jwt needs PYFAAS_JWT_SECRET, PYFAAS_JWT_PUBLIC_KEY_FILE or "
                "PYFAAS_JWT_JWKS_FILE"
            )
        if self.jwt_secret is not None:
            secret = self.jwt_secret.get_secret_value()
            if secret.lower() in _PLACEHOLDERS or len(secret.encode()) < MIN_SECRET_BYTES:
                raise ValueError(
                    f"PYFAAS_JWT_SECRET must be a real secret of at least {MIN_SECRET_BYTES} "
                    "bytes (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                )
        return self


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    admin: bool = False

    def may_act_for(self, user: str) -> bool:
        return self.admin or self.user == user


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "Unauthorized",
        detail,
        "unauthorized",
        headers={"WWW-Authenticate": 'Bearer realm="pyfaas"'},
    )


class Authenticator:
    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.enabled = settings.auth == "jwt"
        self._keys: dict[str | None, Any] = {}
        self._algorithms: list[str] = []
        if settings.jwt_secret is not None:
            self._keys[None] = settings.jwt_secret.get_secret_value()
            self._algorithms = ["HS256"]
        elif settings.jwt_public_key_file is not None:
            self._keys[None] = settings.jwt_public_key_file.read_text()
            self._algorithms = ["RS256"]
        elif settings.jwt_jwks_file is not None:
            jwks = jwt.PyJWKSet.from_dict(json.loads(settings.jwt_jwks_file.read_text()))
            self._keys = {k.key_id: k.key for k in jwks.keys}
            self._algorithms = ["RS256"]

    def warn_if_open(self, service: str) -> None:
        if not self.enabled:
            log.warning(
                "PYFAAS_AUTH=none: anyone who can reach the %s acts as any user; "
                "use PYFAAS_AUTH=jwt when others can reach it",
                service,
            )

    def identify(self, authorization: str | None) -> Identity | None:
        """The caller's identity; None when auth is off. A missing or bad token is 401."""
        if not self.enabled:
            return None
        if not authorization:
            raise _unauthorized("send Authorization: Bearer <token> (see `faas token`)")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("the Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())

    def verify(self, token: str) -> Identity:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._keys.get(kid) if kid in self._keys else self._keys.get(None)
            if key is None:
                raise _unauthorized(f"the token's key {kid!r} is not one this platform trusts")
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self.settings.jwt_issuer,
                audience=self.settings.jwt_audience,
                leeway=self.settings.jwt_leeway,
                options={"require": ["sub", "exp"], "verify_aud": bool(self.settings.jwt_audience)},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the token has expired; get a new one") from None
        except jwt.InvalidTokenError as exc:
            raise _unauthorized(f"the token is not valid: {exc}") from None
        user = claims.get("sub")
        if not isinstance(user, str) or not NAME_RE.match(user):
            raise _unauthorized("the token's 'sub' is not a valid pyfaas user name")
        return Identity(user=user, admin=claims.get("admin") is True)

    def is_platform_token(self, authorization: str) -> bool:
        """Whether an ``Authorization`` header carries a token this platform signed
        (expired ones too): the gateway removes such a header before forwarding, so a
        function never sees a credential for the platform. Any other value (a function's
        own scheme) is left alone."""
        if not self.enabled:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        try:
            kid = jwt.get_unverified_header(token.strip()).get("kid")
            key = self._keys.get(kid) if kid in self._keys else self._keys.get(None)
            if key is None:
                return False
            jwt.decode(
                token.strip(),
                key,
                algorithms=self._algorithms,
                options={"verify_exp": False, "verify_aud": False, "verify_iss": False},
            )
        except jwt.InvalidTokenError:
            return False
        return True

    def mint(self, user: str, admin: bool = False, ttl: float = 7 * 24 * 3600) -> str:
        if self._algorithms != ["HS256"]:
            raise RuntimeError("minting needs PYFAAS_JWT_SECRET (HS256)")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl)}
        if admin:
            claims["admin"] = True
        if self.settings.jwt_issuer:
            claims["iss"] = self.settings.jwt_issuer
        if self.settings.jwt_audience:
            claims["aud"] = self.settings.jwt_audience
        return jwt.encode(claims, self._keys[None], algorithm="HS256")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pyfaas_common.auth", description="Mint a pyfaas token (HS256)."
    )
    parser.add_argument("user")
    parser.add_argument("--admin", action="store_true")
    parser.add_argument("--ttl", type=float, default=7 * 24 * 3600, help="seconds (7 days)")
    args = parser.parse_args(argv)
    settings = AuthSettings(auth="jwt")
    print(Authenticator(settings).mint(args.user, args.admin, args.ttl))


if __name__ == "__main__":
    main()
