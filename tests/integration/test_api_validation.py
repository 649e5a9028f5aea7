"""Every refusal of the API: a 4xx ``application/problem+json`` that names the field and
says what to change — and nothing reaches JetStream (the API runs in-process here against
a real NATS server; no deployer runs, so reads answer 503)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp.test_utils import TestClient, TestServer

from pyfaas_api.app import init_app
from pyfaas_api.settings import ApiSettings
from pyfaas_common.subjects import Subjects
from tests.platform import example, script

GOOD = example("hello_stdlib.py")


@pytest.fixture
async def api(nats_url: str, prefix: str) -> AsyncIterator[TestClient[Any, Any]]:
    settings = ApiSettings(nats_url=nats_url, nats_prefix=prefix, query_timeout=1.0)
    async with TestClient(TestServer(init_app(settings))) as client:
        yield client


async def _stored_commands(nats_url: str, prefix: str) -> int:
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(Subjects(prefix).command_stream)
        return int(info.state.messages)
    finally:
        await nc.close()


async def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def _fields(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: e["message"] for e in body.get("errors", [])}


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ({"name": "x", "code": GOOD}, "user", "is required"),
        ({"user": "Alice!", "code": GOOD}, "user", "lowercase letters, digits or '-'"),
        ({"user": "alice", "name": "-bad-", "code": GOOD}, "name", "DNS label"),
        ({"user": "alice"}, "code", "is required"),
        ({"user": "alice", "code": GOOD, "image": "x"}, "image", "not a known field"),
        ({"user": "alice", "code": "print('no metadata')\n"}, "code", "no PEP 723 metadata block"),
        ({"user": "alice", "code": script("def f(:\n    pass\n")}, "code", "line 5, column 7"),
        ({"user": "alice", "code": "# /// script\n# dependencies = [\n# ///\n"}, "code", "not valid TOML"),
        ({"user": "alice", "code": script("", dependencies=["requests>>2"])}, "code", "not a valid PEP 508"),
        ({"user": "alice", "code": script("", requires_python=">=4")}, "code", "cannot be satisfied here"),
        ({"user": "alice", "code": script("", requires_python="three")}, "code", "not a valid version specifier"),
        ({"user": "alice", "code": script("x = 1\n" * 100_000)}, "code", "the limit is 524288 bytes"),
        ({"user": "alice", "code": script("x = '\ud800'\n")}, "code", "not valid UTF-8"),
        ({"user": "alice", "code": GOOD, "env": {"PORT": "1"}}, "env", "set by pyfaas itself"),
        ({"user": "alice", "code": GOOD, "env": {"1BAD": "x"}}, "env", "not a valid variable name"),
        ({"user": "alice", "code": GOOD, "idle_timeout": -5}, "idle_timeout", "greater than or equal to 0"),
    ],
)  # fmt: skip
async def test_create_refusals_name_the_field(
    api: TestClient[Any, Any],
    nats_url: str,
    prefix: str,
    body: dict[str, Any],
    field: str,
    says: str,
) -> None:
    response = await api.post("/faas/python", json=body)
    problem = await _problem(response, 422)
    fields = _fields(problem)
    assert field in fields, problem
    assert says in fields[field], problem
    assert says in problem["detail"]
    assert await _stored_commands(nats_url, prefix) == 0


async def test_a_body_that_is_not_json_is_400(api: TestClient[Any, Any]) -> None:
    response = await api.post(
        "/faas/python", data=b"{not json", headers={"content-type": "application/json"}
    )
    problem = await _problem(response, 400)
    assert "not valid JSON" in problem["detail"]


async def test_a_body_that_is_not_an_object_is_422(api: TestClient[Any, Any]) -> None:
    problem = await _problem(await api.post("/faas/python", json=["user"]), 422)
    assert _fields(problem) == {"body": "must be a JSON object"}


async def test_a_body_too_large_is_413(api: TestClient[Any, Any]) -> None:
    response = await api.post("/faas/python", data=io.BytesIO(b"x" * (5 * 1024 * 1024)))
    await _problem(response, 413)


async def test_list_needs_a_user(api: TestClient[Any, Any]) -> None:
    problem = await _problem(await api.get("/faas/python"), 422)
    assert "pass ?user=NAME" in _fields(problem)["user"]
    problem = await _problem(await api.get("/faas/python", params={"user": "NOT OK"}), 422)
    assert "user" in _fields(problem)


async def test_an_id_that_is_not_a_uuid_is_404(api: TestClient[Any, Any]) -> None:
    for method in ("GET", "PUT", "DELETE"):
        problem = await _problem(
            await api.request(method, "/faas/python/not-a-uuid", json={"code": GOOD}), 404
        )
        assert "ids are UUIDs" in problem["detail"]


async def test_an_empty_update_is_refused(api: TestClient[Any, Any]) -> None:
    fid = "5b0f3e2e-6a8f-4b8e-9d7e-1f0f1c2b3a4d"
    problem = await _problem(await api.put(f"/faas/python/{fid}", json={}), 422)
    assert "at least one of code, env, idle_timeout, delete_after" in problem["detail"]


async def test_reads_without_a_deployer_say_so(api: TestClient[Any, Any]) -> None:
    fid = "5b0f3e2e-6a8f-4b8e-9d7e-1f0f1c2b3a4d"
    problem = await _problem(await api.get(f"/faas/python/{fid}"), 503)
    assert "deployer" in problem["detail"]


async def test_unknown_paths_and_methods_are_problems(api: TestClient[Any, Any]) -> None:
    await _problem(await api.get("/nope"), 404)
    response = await api.patch("/faas/python")
    await _problem(response, 405)
    assert "POST" in response.headers["Allow"]


async def test_a_valid_create_is_stored_once(
    api: TestClient[Any, Any], nats_url: str, prefix: str
) -> None:
    response = await api.post("/faas/python", json={"user": "alice", "code": GOOD})
    assert response.status == 202
    body = await response.json()
    assert response.headers["Location"] == f"/faas/python/{body['id']}"
    assert (body["state"], body["user"], body["name"], body["idle_timeout"]) == (
        "pending",
        "alice",
        "main",
        900,
    )
    assert await _stored_commands(nats_url, prefix) == 1
