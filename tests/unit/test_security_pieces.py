"""The pure pieces of tenancy and security (no I/O): invoke keys, the redactor, the
create rate, request shapes for secrets and sources, what the gateway lets through to a
private function, and which credentials it strips."""

from __future__ import annotations

import logging
import time
import uuid

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict
from pydantic import ValidationError

from pyfaas_api.quotas import CreateRate, check_function_count
from pyfaas_common.auth import Authenticator, AuthSettings
from pyfaas_common.invoke_keys import INVOKE_KEY_HEADER, key_matches, new_invoke_key
from pyfaas_common.logs import SECRETS, Redactor, _ContextFilter
from pyfaas_common.problems import Problem
from pyfaas_common.schemas import CreateRequest, UpdateRequest, field_errors
from pyfaas_gateway.authorize import authorize
from pyfaas_gateway.headers import HeaderPolicy
from pyfaas_gateway.routes import Route
from tests.platform import example

SECRET = "k" * 48
AUTH = Authenticator(AuthSettings(auth="jwt", jwt_secret=SECRET))
CODE = example("hello_stdlib.py")


def test_an_invoke_key_is_random_and_only_its_hash_is_kept() -> None:
    key, key_hash = new_invoke_key()
    other, _ = new_invoke_key()
    assert key != other and key.startswith("pfk_") and len(key) > 40
    assert key not in key_hash and len(key_hash) == 64
    assert key_matches(key, key_hash)
    assert not key_matches(other, key_hash)
    assert not key_matches("", key_hash) and not key_matches(key, None)


def test_the_redactor_hides_every_known_value_longest_first() -> None:
    redactor = Redactor()
    assert not redactor
    redactor.set("f1", ["hunter22", "hunter22-extended", "ab"])  # "ab": too short to hunt
    assert redactor.redact("x hunter22-extended y hunter22 ab") == "x ******** y ******** ab"
    redactor.forget("f1")
    assert redactor.redact("hunter22") == "hunter22"
    assert Redactor().redact("token s3cr3t!", ["s3cr3t!"]) == "token ********"


def test_log_records_are_redacted_message_arguments_and_extras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    value = f"tok-{uuid.uuid4().hex}"
    fid = uuid.uuid4()
    SECRETS.set(fid, [value])
    try:
        record = logging.makeLogRecord(
            {"msg": "started with %s", "args": (value,), "detail": f"env={value}"}
        )
        assert _ContextFilter("deployer").filter(record)
        assert value not in record.getMessage() and "********" in record.getMessage()
        assert record.__dict__["detail"] == "env=********"
    finally:
        SECRETS.forget(fid)


def test_the_create_rate_is_a_sliding_minute_with_retry_after() -> None:
    now = [1000.0]
    rate = CreateRate(2, clock=lambda: now[0])
    first = rate.take("alice")
    rate.take("alice")
    rate.take("bob")  # per user
    with pytest.raises(Problem) as caught:
        rate.take("alice")
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "60"
    assert "PYFAAS_MAX_CREATES_PER_MINUTE" in caught.value.detail
    now[0] += 30
    rate.give_back("alice", first)  # refused by the platform: not counted
    rate.take("alice")
    now[0] += 31  # the second one has left the window
    rate.take("alice")
    assert CreateRate(0).take("alice")  # 0: no limit
    with pytest.raises(Problem) as count:
        check_function_count("alice", 3, 3)
    assert count.value.status == 403 and "PYFAAS_MAX_FUNCTIONS_PER_USER" in count.value.detail
    check_function_count("alice", 2, 3)
    check_function_count("alice", 500, 0)


def _errors(
    model: type[CreateRequest] | type[UpdateRequest], body: dict[str, object]
) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return dict(field_errors(caught.value))


def test_request_shapes_for_sources_and_secrets() -> None:
    assert "is required" in _errors(CreateRequest, {"user": "a"})["code"]
    both = {"code": CODE, "source": {"url": "https://x.example/a.py"}}
    assert "not both" in _errors(CreateRequest, both)["source"]
    assert _errors(CreateRequest, {"source": {}})["source.url"] == "is required"
    clash = {"code": CODE, "env": {"A": "1"}, "secrets": {"A": "2"}}
    assert "both in env and in secrets" in _errors(CreateRequest, clash)["secrets"]
    assert (
        "set by pyfaas"
        in _errors(CreateRequest, {"code": CODE, "secrets": {"PORT": "1"}})["secrets"]
    )
    assert "visibility" in _errors(CreateRequest, {"code": CODE, "visibility": "hidden"})
    ok = CreateRequest.model_validate({"source": {"url": "https://x.example/a.py"}})
    assert ok.user is None and ok.visibility == "public" and ok.secrets == {}
    assert (
        "both in env"
        in _errors(UpdateRequest, {"env": {"A": "1"}, "secrets": {"A": "1"}})["secrets"]
    )


def _request(headers: dict[str, str]) -> object:
    return make_mocked_request("GET", "/gateway/abc/x", headers=CIMultiDict(headers))


def _route(private: bool, key_hash: str | None = None) -> Route:
    return Route.of(
        uuid.uuid4(), "ready", "http://127.0.0.1:1", "", 1,
        visibility="private" if private else "public", owner="alice", key_hash=key_hash,
    )  # fmt: skip


def _refusal(route: Route, headers: dict[str, str]) -> Problem:
    with pytest.raises(Problem) as caught:
        authorize(AUTH, route, _request(headers))  # type: ignore[arg-type]
    return caught.value


def test_who_may_call_a_private_function() -> None:
    key, key_hash = new_invoke_key()
    private = _route(True, key_hash)
    for allowed in (
        {INVOKE_KEY_HEADER: key},
        {"Authorization": f"Bearer {AUTH.mint('alice')}"},
        {"Authorization": f"Bearer {AUTH.mint('root', admin=True)}"},
    ):
        authorize(AUTH, private, _request(allowed))  # type: ignore[arg-type]
    nothing = _refusal(private, {})
    assert nothing.status == 401 and "WWW-Authenticate" in nothing.headers
    assert _refusal(private, {INVOKE_KEY_HEADER: "pfk_wrong"}).status == 401
    assert _refusal(private, {"Authorization": "Basic YTpi"}).status == 401
    assert _refusal(private, {"Authorization": f"Bearer {AUTH.mint('bob')}"}).status == 403
    expired = AUTH.mint("alice", ttl=-120)
    assert "expired" in _refusal(private, {"Authorization": f"Bearer {expired}"}).detail
    # A public function takes anyone.
    authorize(AUTH, _route(False), _request({}))  # type: ignore[arg-type]


def test_platform_credentials_are_not_forwarded_other_authorization_is() -> None:
    policy = HeaderPolicy.build(["Forwarded"], trust_forwarded=False)  # no X-Pyfaas-* rule

    def forwarded(headers: dict[str, str]) -> dict[str, str]:
        request = _request(headers)
        authorize(AUTH, _route(False), request)  # type: ignore[arg-type]
        sent, _ = policy.forwarded(request, "/gateway/abc")  # type: ignore[arg-type]
        return {n.decode().lower(): v.decode() for n, v in sent}

    expired = AUTH.mint("alice", ttl=-120)
    for token in (AUTH.mint("alice"), expired):
        seen = forwarded({"Authorization": f"Bearer {token}", INVOKE_KEY_HEADER: "pfk_x"})
        assert "authorization" not in seen
        assert INVOKE_KEY_HEADER.lower() not in seen
    foreign = jwt.encode({"sub": "x", "exp": time.time() + 60}, "o" * 48, algorithm="HS256")
    assert forwarded({"Authorization": f"Bearer {foreign}"})["authorization"] == f"Bearer {foreign}"
    assert forwarded({"Authorization": "Basic YTpi"})["authorization"] == "Basic YTpi"
    assert not Authenticator(AuthSettings()).is_platform_token(f"Bearer {AUTH.mint('a')}")
