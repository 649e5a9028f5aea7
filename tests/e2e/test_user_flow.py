"""The whole user flow of the README, through HTTP, as a user drives it: create, watch it
become ready, call it through the gateway, read its logs, delete it. Once on Postgres and
once on the embedded SQLite default of ``make dev``."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import running_platform
from tests.platform import Client, ExternalPlatform, Platform, example, local_only

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["postgres", "sqlite"])
async def any_platform(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
) -> AsyncIterator[Platform]:
    database_url = request.getfixturevalue("postgres_url") if request.param == "postgres" else ""
    async for p in running_platform(tmp_path_factory.mktemp(request.param), nats_url, database_url):
        yield p


async def test_create_ready_call_logs_delete(any_platform: Platform) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, any_platform)
        user = f"u{uuid.uuid4().hex[:10]}"  # a user of its own: the platform may be shared
        created = await client.create(
            example("hello_stdlib.py"), user=user, env={"GREETING": "bonjour"}
        )
        fid = created["id"]
        assert created["state"] == "pending"
        assert created["url"] == f"{any_platform.gateway}/gateway/{fid}/"

        # A read right after the 202 never says 404.
        status, first = await client.get(fid)
        assert status == 200, first
        assert first["state"] in {"pending", "deploying", "ready"}

        ready = await client.wait_for(fid, {"ready"}, timeout=60)
        assert ready["observed_generation"] == ready["generation"] == 1
        assert "endpoint" not in ready  # internal: users call the gateway

        async with session.get(f"{any_platform.api}/faas/python", params={"user": user}) as r:
            listed = await r.json()
        assert [(f["id"], f["state"]) for f in listed["functions"]] == [(fid, "ready")]

        # The design notes' JSON-body form of the list.
        async with session.get(f"{any_platform.api}/faas/python", json={"user": user}) as r:
            assert [f["id"] for f in (await r.json())["functions"]] == [fid]

        response = await client.call(fid, "anything?x=1", method="POST", data=b"payload")
        answer = await response.json()
        assert response.status == 200
        assert answer == {
            "hello": "bonjour",
            "method": "POST",
            "path": "/anything?x=1",
            "body": "payload",
            "forwarded_prefix": f"/gateway/{fid}",
            "forwarded_for": "127.0.0.1",
        }
        root = await client.call(fid)  # /gateway/{id}/ reaches the script's "/"
        assert (await root.json())["path"] == "/"

        async with session.get(f"{any_platform.api}/faas/python/{fid}/logs") as r:
            lines = (await r.json())["lines"]
        assert any("POST /anything?x=1" in line for line in lines), lines

        async with session.delete(f"{any_platform.api}/faas/python/{fid}") as r:
            assert r.status == 202
            assert (await r.json())["state"] == "deleting"
        await client.wait_for(fid, {"HTTP 404"}, timeout=30)

        gone = await client.call(fid, "anything")
        assert gone.status == 404
        assert gone.content_type == "application/problem+json"
        async with session.get(f"{any_platform.api}/faas/python?user={user}") as r:
            assert (await r.json())["functions"] == []
        if not isinstance(any_platform, ExternalPlatform):
            assert not (any_platform.data_dir / "functions" / fid).exists()


async def test_a_create_retried_with_its_idempotency_key_makes_one_function(
    any_platform: Platform,
) -> None:
    # What a client does after a 503 or a timeout on a create: send it again, same key.
    async with aiohttp.ClientSession() as session:
        client = Client(session, any_platform)
        creates = f"{any_platform.api}/faas/python"
        user = f"u{uuid.uuid4().hex[:10]}"
        body = {"user": user, "name": "once", "code": example("hello_stdlib.py")}
        key = {"Idempotency-Key": str(uuid.uuid4())}
        async with session.post(creates, json=body, headers=key) as r:
            assert r.status == 202
            assert "Idempotent-Replayed" not in r.headers
            fid = (await r.json())["id"]
        for _ in range(3):
            async with session.post(creates, json=body, headers=key) as r:
                assert r.status == 202
                assert r.headers["Idempotent-Replayed"] == "true"
                assert (await r.json())["id"] == fid
        # The same key for another request (new code, another name) is a mistake: said.
        async with session.post(creates, json={**body, "name": "other"}, headers=key) as r:
            assert r.status == 422
            assert "Idempotency-Key" in (await r.json())["detail"]
        # The same key from another user is that user's own function.
        async with session.post(creates, json={**body, "user": user + "x"}, headers=key) as r:
            assert r.status == 202
            assert (await r.json())["id"] != fid
        async with session.get(creates, params={"user": user}) as r:
            assert [f["id"] for f in (await r.json())["functions"]] == [fid]
        await client.wait_for(fid, {"ready"}, timeout=60)

        async with session.post(creates, json=body, headers={"Idempotency-Key": "a b"}) as r:
            assert r.status == 400
            assert r.content_type == "application/problem+json"
            assert (await r.json())["errors"][0]["field"] == "Idempotency-Key"

        # Once its function is deleted, a key is used up: it says so rather than
        # answering 202 for a create that cannot happen.
        async with session.delete(f"{creates}/{fid}") as r:
            assert r.status == 202
        await client.wait_for(fid, {"HTTP 404"}, timeout=30)
        async with session.post(creates, json=body, headers=key) as r:
            assert r.status == 409
            assert fid in (await r.json())["detail"]


async def test_overlapping_retries_of_a_private_create_show_the_one_working_key(
    any_platform: Platform,
) -> None:
    # A client that retries before the first answer came (a short timeout): the creates
    # overlap. One function is made, and only the answer of the attempt that made it
    # shows an invoke key — the one that works.
    async with aiohttp.ClientSession() as session:
        client = Client(session, any_platform)
        body = {"user": f"u{uuid.uuid4().hex[:10]}", "name": "overlap", "visibility": "private",
                "code": example("hello_stdlib.py")}  # fmt: skip
        key = {"Idempotency-Key": str(uuid.uuid4())}

        async def create() -> dict[str, object]:
            async with session.post(f"{any_platform.api}/faas/python", json=body, headers=key) as r:
                assert r.status == 202
                data: dict[str, object] = await r.json()
                return data

        answers = await asyncio.gather(*(create() for _ in range(5)))
        assert len({a["id"] for a in answers}) == 1
        keys = [a["invoke_key"] for a in answers if a.get("invoke_key")]
        assert len(keys) == 1
        fid = str(answers[0]["id"])
        await client.wait_for(fid, {"ready"}, timeout=60)
        called = await client.call(fid, "x", headers={"X-Pyfaas-Invoke-Key": str(keys[0])})
        assert called.status == 200
        async with session.delete(f"{any_platform.api}/faas/python/{fid}") as r:
            assert r.status == 202


async def test_stop_leaves_no_function_process(tmp_path: Path, nats_url: str) -> None:
    """Ctrl-C (SIGTERM) on ``faas dev`` stops every process it started, functions too."""
    async for platform in running_platform(tmp_path, nats_url, ""):
        local_only(platform)
        async with aiohttp.ClientSession() as session:
            client = Client(session, platform)
            fid = (await client.create(example("hello_stdlib.py")))["id"]
            await client.wait_for(fid, {"ready"})
            service_pids = [
                platform.service_pid(s) for s in ("api", "deployer", "gateway", "reaper")
            ]
            main_py = str(platform.data_dir / "functions" / fid / "main.py")
            assert _processes_running(main_py)
    await asyncio.sleep(0.2)
    assert not _processes_running(main_py)
    assert not [pid for pid in service_pids if os.path.exists(f"/proc/{pid}")]


def _processes_running(needle: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
