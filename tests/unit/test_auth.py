"""Bearer tokens: what is accepted, what is refused with 401 and why (no I/O)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from pyfaas_common.auth import Authenticator, AuthSettings, Identity
from pyfaas_common.problems import Problem

SECRET = "s" * 48


def hs256() -> Authenticator:
    return Authenticator(AuthSettings(auth="jwt", jwt_secret=SECRET))


def refused(auth: Authenticator, header: str | None) -> str:
    with pytest.raises(Problem) as caught:
        auth.identify(header)
    assert caught.value.status == 401
    assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")
    return caught.value.detail


def test_auth_none_identifies_nobody() -> None:
    assert Authenticator(AuthSettings()).identify(None) is None


def test_a_minted_token_identifies_its_user() -> None:
    auth = hs256()
    assert auth.identify(f"Bearer {auth.mint('alice')}") == Identity("alice")
    assert auth.identify(f"bearer {auth.mint('root', admin=True)}") == Identity("root", admin=True)


def test_refusals_say_why() -> None:
    auth = hs256()
    assert "send Authorization" in refused(auth, None)
    assert "Bearer <token>" in refused(auth, "Basic abc")
    assert "not valid" in refused(auth, "Bearer not-a-jwt")
    other = jwt.encode({"sub": "alice", "exp": time.time() + 60}, "o" * 48, algorithm="HS256")
    assert "not valid" in refused(auth, f"Bearer {other}")
    assert "expired" in refused(auth, f"Bearer {auth.mint('alice', ttl=-120)}")
    bad_sub = jwt.encode({"sub": "Not A User", "exp": time.time() + 60}, SECRET, algorithm="HS256")
    assert "'sub'" in refused(auth, f"Bearer {bad_sub}")
    no_exp = jwt.encode({"sub": "alice"}, SECRET, algorithm="HS256")
    assert "exp" in refused(auth, f"Bearer {no_exp}")
    none_alg = jwt.encode({"sub": "alice", "exp": time.time() + 60}, None, algorithm="none")
    assert "not valid" in refused(auth, f"Bearer {none_alg}")


@pytest.mark.parametrize("secret", ["changeme", "short"])
def test_placeholder_or_short_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValidationError, match="PYFAAS_JWT_SECRET"):
        AuthSettings(auth="jwt", jwt_secret=secret)


def test_jwt_needs_a_key() -> None:
    with pytest.raises(ValidationError, match="PYFAAS_AUTH=jwt needs"):
        AuthSettings(auth="jwt")


def test_rs256_with_a_public_key_and_a_jwks(tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "key.pem").write_bytes(public_pem)
    token = jwt.encode({"sub": "alice", "exp": time.time() + 60}, key, algorithm="RS256")
    by_pem = Authenticator(AuthSettings(auth="jwt", jwt_public_key_file=tmp_path / "key.pem"))
    assert by_pem.identify(f"Bearer {token}") == Identity("alice")

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig"}]}))
    by_jwks = Authenticator(AuthSettings(auth="jwt", jwt_jwks_file=tmp_path / "jwks.json"))
    signed = jwt.encode(
        {"sub": "bob", "exp": time.time() + 60}, key, algorithm="RS256", headers={"kid": "k1"}
    )
    assert by_jwks.identify(f"Bearer {signed}") == Identity("bob")
    unknown = jwt.encode(
        {"sub": "bob", "exp": time.time() + 60}, key, algorithm="RS256", headers={"kid": "k9"}
    )
    assert "not one this platform trusts" in refused(by_jwks, f"Bearer {unknown}")


def test_open_auth_is_announced_at_start_and_says_how_to_close_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PYFAAS_AUTH", "none")
    with caplog.at_level(logging.WARNING, logger="pyfaas_common.auth"):
        Authenticator(AuthSettings()).warn_if_open("gateway")
    logged = [r for r in caplog.records if r.name == "pyfaas_common.auth"]
    assert len(logged) == 1, "nothing said at start that anyone may act as any user"
    record = logged[0]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "PYFAAS_AUTH=none" in message and "gateway" in message
    assert "PYFAAS_AUTH=jwt" in message  # what to set to turn tokens on

    caplog.clear()
    monkeypatch.setenv("PYFAAS_AUTH", "jwt")
    monkeypatch.setenv("PYFAAS_JWT_SECRET", SECRET)
    with caplog.at_level(logging.DEBUG, logger="pyfaas_common.auth"):
        Authenticator(AuthSettings()).warn_if_open("API")
    assert [r for r in caplog.records if r.name == "pyfaas_common.auth"] == []
