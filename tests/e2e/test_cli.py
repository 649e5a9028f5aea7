"""The ``faas`` CLI end to end, run as a user runs it (a subprocess with PYFAAS_* in its
environment) against one running platform: init -> deploy -> call -> logs -> update -> rm,
the ``--json`` output parsed, every error path with its exit code, an update that keeps
serving while the new generation starts, and a log follow that shows what comes after."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pyfaas.cli import Exit
from pyfaas.templates import render
from tests.platform import Client, Platform, script
from tests.services import free_port

pytestmark = pytest.mark.e2e


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(scope="module")
def user() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(platform: Platform, user: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYFAAS_API_URL": platform.api,
        "PYFAAS_USER": user,
        "PYFAAS_CONFIG": str(tmp_path / "no-config.toml"),  # not the developer's own
        "PYFAAS_GATEWAY_URL": "",
    }


async def faas(
    env: dict[str, str], *args: str, cwd: Path | None = None, timeout: float = 60.0
) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyfaas.cli", *args,
        env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def _v2(code: str, start_delay: float) -> str:
    """The http template answering "v2", slow to start so that the old one must serve."""
    new = code.replace('os.environ.get("GREETING", "world")', '"v2"')
    new = new.replace(
        'if __name__ == "__main__":\n',
        f'if __name__ == "__main__":\n    import time\n    time.sleep({start_delay})\n',
    )
    assert new.count('"v2"') == 1 and "time.sleep" in new
    return new


async def test_init_deploy_call_logs_update_rm(
    env: dict[str, str], platform: Platform, tmp_path: Path, user: str
) -> None:
    init = await faas(env, "init", "hello", cwd=tmp_path)
    assert init.code == 0, init.err
    main_py = tmp_path / "hello" / "main.py"
    assert "# /// script" in main_py.read_text()

    deployed = await faas(
        env, "deploy", str(main_py), "--env", "GREETING=v1", "--idle-timeout", "0",
        "--delete-after", "3600", "--json",
    )  # fmt: skip
    assert deployed.code == Exit.OK, deployed.err
    fn = deployed.json()
    fid = fn["id"]
    assert (fn["name"], fn["user"], fn["state"]) == ("hello", user, "ready")
    assert fn["observed_generation"] == fn["generation"] == 1
    assert fn["env"] == {"GREETING": "v1"} and fn["idle_timeout"] == 0
    assert fn["delete_after"] == 3600
    assert fn["url"] == f"{platform.gateway}/gateway/{fid}/"
    assert "ready" in deployed.err  # the state was shown as it moved

    listed = await faas(env, "ls", "--json")
    assert [(f["id"], f["state"]) for f in listed.json()] == [(fid, "ready")]
    table = await faas(env, "ls")
    assert fid in table.out and "hello" in table.out and "ready" in table.out

    by_name = await faas(env, "get", "hello", "--json")
    assert by_name.json()["id"] == fid

    called = await faas(env, "call", fid, "items?x=1")
    assert called.code == 0, called.err
    assert json.loads(called.out) == {"hello": "v1", "path": "/items?x=1"}
    posted = await faas(env, "call", "hello", "echo", "-d", "payload", "--json")
    answer = posted.json()
    assert answer["status"] == 200 and json.loads(answer["body"]) == {"received": "payload"}

    logs = await faas(env, "logs", fid, "--json")
    lines = logs.json()["lines"]
    assert any("GET /items?x=1" in line for line in lines), lines
    assert any("POST /echo" in line for line in lines), lines

    # An update keeps the URL and serves the new code; while the new generation starts
    # (it waits a second before listening) every request is answered, by the old one.
    v2 = tmp_path / "v2.py"
    v2.write_text(_v2(main_py.read_text(), start_delay=1.0))
    answers: list[tuple[float, int, str]] = []
    update_task = asyncio.create_task(faas(env, "update", "hello", str(v2), "--json"))
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 60
        while not update_task.done() and time.monotonic() < deadline:
            async with session.get(fn["url"]) as r:
                body = await r.text()
                version = json.loads(body)["hello"] if r.status == 200 else body
                answers.append((time.monotonic(), r.status, version))
            await asyncio.sleep(0.02)  # a steady trickle of requests, not a flood
        updated = await update_task
        async with session.get(fn["url"]) as r:
            assert (await r.json())["hello"] == "v2"
    assert updated.code == Exit.OK, updated.err
    after = updated.json()
    assert after["url"] == fn["url"] and after["id"] == fid
    assert after["observed_generation"] == after["generation"] == 2
    assert after["env"] == {"GREETING": "v1"}  # left out: kept
    assert [a for a in answers if a[1] != 200] == []
    versions = [v for _, _, v in answers]
    assert versions.count("v1") >= 10, versions  # served by the old one while v2 started
    assert versions == sorted(versions), versions  # v1 until the switch, then only v2

    removed = await faas(env, "rm", fid, "--json")
    assert removed.code == 0, removed.err
    assert removed.json()["state"] == "deleting"
    gone = await faas(env, "get", fid)
    assert gone.code == Exit.NOT_FOUND
    assert f"no function with id {fid}" in gone.err
    async with aiohttp.ClientSession() as session, session.get(fn["url"]) as r:
        assert r.status == 404


async def test_failed_update_keeps_the_previous_generation_serving(
    env: dict[str, str], tmp_path: Path
) -> None:
    ok = tmp_path / "ok.py"
    ok.write_text(render("http", "steady"))
    fn = (await faas(env, "deploy", str(ok), "--name", "steady", "--json")).json()

    crash = tmp_path / "crash.py"
    crash.write_text(script('raise SystemExit("no database configured")\n'))
    failed = await faas(env, "update", fn["id"], str(crash), "--json")
    assert failed.code == Exit.FUNCTION_FAILED, failed.err
    after = failed.json()
    assert after["state"] == "ready" and after["observed_generation"] == 2
    assert "did not start" in after["reason"] and "no database configured" in after["reason"]
    assert "previous generation keeps serving" in failed.err

    still = await faas(env, "call", fn["id"])
    assert still.code == 0 and json.loads(still.out)["hello"] == "world"
    await faas(env, "rm", fn["id"], "--no-wait")


async def test_logs_follow_shows_a_line_printed_after_it_started(
    env: dict[str, str], client: Client, tmp_path: Path
) -> None:
    created = await client.create(render("http", "follow"), user=env["PYFAAS_USER"], name="follow")
    fid = created["id"]
    await client.wait_for(fid, {"ready"})

    proc = await _follow(env, fid)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        # The tail's one line says the follow is connected.
        first = await asyncio.wait_for(proc.stdout.readline(), 20)
        assert b"listening on" in first, first
        marker = f"after-{uuid.uuid4().hex}"
        assert (await client.call(fid, marker)).status == 200
        seen: list[bytes] = []
        async with asyncio.timeout(20):
            while not seen or marker.encode() not in seen[-1]:
                seen.append(await proc.stdout.readline())
        assert f'"GET /{marker} HTTP/1.1" 200'.encode() in seen[-1]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == Exit.OK, await proc.stderr.read()

    # A follow ends by itself when its function is deleted.
    proc = await _follow(env, fid)
    assert proc.stdout is not None and proc.stderr is not None
    assert marker.encode() in await asyncio.wait_for(proc.stdout.readline(), 20)  # the tail
    removed = await faas(env, "rm", fid)
    assert removed.code == 0, removed.err
    assert await asyncio.wait_for(proc.wait(), 20) == Exit.OK
    assert b"the function was deleted" in await proc.stderr.read()


async def _follow(env: dict[str, str], fid: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyfaas.cli", "logs", fid, "-f", "--tail", "1",
        env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


ECHO_HEADERS = script(
    "import json, os\n"
    "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        seen = {k: self.headers.get(k) for k in ('X-Test', 'X-Pyfaas-Invoke-Key')}\n"
    "        body = json.dumps(seen).encode()\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Length', str(len(body)))\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "HTTPServer((os.environ['HOST'], int(os.environ['PORT'])), H).serve_forever()\n"
)


async def test_a_private_function_deployed_then_called_with_headers_and_its_key(
    env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "private.py"
    path.write_text(ECHO_HEADERS)
    deployed = await faas(env, "deploy", str(path), "--name", "echo-private", "--private", "--json")
    assert deployed.code == Exit.OK, deployed.err
    fn = deployed.json()  # one document: the ready function, with its key this once
    assert fn["state"] == "ready" and fn["invoke_key"].startswith("pfk_")
    try:
        called = await faas(
            env, "call", fn["id"], "-H", "X-Test: yes", "--key", fn["invoke_key"], "--json"
        )
        assert called.code == Exit.OK, called.err
        assert called.json()["status"] == 200
        # The header reached the function; the key did not (the gateway keeps it).
        assert json.loads(called.json()["body"]) == {"X-Test": "yes", "X-Pyfaas-Invoke-Key": None}

        refused = await faas(env, "call", fn["id"], "-H", "X-Test: yes", "--json")
        assert refused.code == Exit.API_ERROR and refused.json()["error"]["status"] == 401
    finally:
        await faas(env, "rm", fn["id"], "--no-wait")


async def test_error_paths_and_their_exit_codes(
    env: dict[str, str], tmp_path: Path, platform: Platform
) -> None:
    missing = str(uuid.uuid4())
    good = tmp_path / "good.py"
    good.write_text(render("http", "good"))
    bad = tmp_path / "bad.py"
    bad.write_text(script("def broken(:\n    pass\n"))
    no_metadata = tmp_path / "plain.py"
    no_metadata.write_text("print('hi')\n")
    far_future = tmp_path / "future.py"
    far_future.write_text(script("print('hi')\n", requires_python=">=3.19"))
    crash = tmp_path / "crash.py"
    crash.write_text(script('raise SystemExit("cannot start")\n'))
    slow = tmp_path / "slow.py"
    slow.write_text(_v2(render("http", "slow"), start_delay=10))
    unreachable = {**env, "PYFAAS_API_URL": f"http://127.0.0.1:{free_port()}"}

    async def expect(code: Exit, says: str, *args: str, run_env: dict[str, str] = env) -> Result:
        result = await faas(run_env, *args, cwd=tmp_path)
        assert result.code == code, (args, result)
        assert says in result.err, (args, result.err)
        assert "Traceback" not in result.err
        return result

    checks = [
        # usage: bad flags, and what is refused before anything is sent
        expect(Exit.USAGE, "No such option", "deploy", str(good), "--bogus"),
        expect(Exit.USAGE, "not valid Python", "deploy", str(bad)),
        expect(Exit.USAGE, "PEP 723", "deploy", str(no_metadata)),
        expect(Exit.USAGE, "no such file", "deploy", str(tmp_path / "absent.py")),
        expect(Exit.USAGE, "write KEY=VALUE", "deploy", str(good), "--env", "NOEQUALS"),
        expect(Exit.USAGE, "set by pyfaas itself", "deploy", str(good), "--env", "PORT=1"),
        expect(Exit.USAGE, "nothing to update", "update", missing),
        expect(Exit.USAGE, "choose http, aiohttp, mcp", "init", "x", "--template", "go"),
        # not found
        expect(Exit.NOT_FOUND, f"no function with id {missing}", "get", missing),
        expect(Exit.NOT_FOUND, "no function with id", "logs", missing),
        expect(Exit.NOT_FOUND, "no function with id", "logs", missing, "-f"),
        expect(Exit.NOT_FOUND, "no function with id", "rm", missing),
        expect(Exit.NOT_FOUND, "no function with id", "call", missing),
        expect(Exit.NOT_FOUND, "no function with id", "update", missing, str(good)),
        expect(Exit.NOT_FOUND, "no function named 'nosuch'", "get", "nosuch"),
        # unreachable
        expect(Exit.UNREACHABLE, "cannot reach the pyfaas API", "ls", run_env=unreachable),
        expect(Exit.UNREACHABLE, "cannot reach", "deploy", str(good), run_env=unreachable),
    ]
    await asyncio.gather(*checks)

    # The API's refusals: its human message, and with --json the problem document.
    refused = await expect(Exit.API_ERROR, "cannot be satisfied here", "deploy", str(far_future), "--json")  # fmt: skip
    problem = refused.json()["error"]
    assert problem["status"] == 422 and problem["errors"][0]["field"] == "code"

    # A function that does not start: exit 3, and --json still prints it.
    failed = await expect(Exit.FUNCTION_FAILED, "cannot start", "deploy", str(crash), "--json")
    assert failed.json()["state"] == "failed"

    # Waiting has a bound: exit 6, the function as it was.
    timed_out = await expect(Exit.TIMEOUT, "still", "deploy", str(slow), "--timeout", "1", "--json")
    assert timed_out.json()["state"] in {"pending", "deploying"}

    for fn in (failed.json(), timed_out.json()):
        assert (await faas(env, "rm", fn["id"], "--no-wait")).code == 0
