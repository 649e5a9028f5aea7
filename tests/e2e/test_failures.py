"""What a user sees when things go wrong: a script that crashes at start, a dependency
that does not exist, a function not ready yet, and the deployer itself killed while
functions run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest

from tests.platform import Client, Platform, example, local_only, script

pytestmark = pytest.mark.e2e

CRASHES = script('raise RuntimeError("database password missing: set DB_PASSWORD")\n')

NO_SUCH_PACKAGE = "pyfaas-no-such-package-7c1d9"
UNRESOLVABLE = script("print('never runs')\n", dependencies=[NO_SUCH_PACKAGE])

SLOW_START = script(
    "import os, time\n"
    "time.sleep(4)\n"
    "from http.server import HTTPServer, BaseHTTPRequestHandler\n"
    "class H(BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200); self.end_headers(); self.wfile.write(b'up')\n"
    "HTTPServer(('0.0.0.0', int(os.environ['PORT'])), H).serve_forever()\n"
)


async def test_crash_at_start_is_failed_with_the_scripts_error(client: Client) -> None:
    fid = (await client.create(CRASHES, name="crashes"))["id"]
    failed = await client.wait_for(fid, {"failed"}, timeout=60)
    assert "exited with code 1" in failed["reason"]
    assert "database password missing: set DB_PASSWORD" in failed["reason"]

    response = await client.call(fid, "x")
    assert response.status == 502
    assert response.content_type == "application/problem+json"
    assert "database password missing" in (await response.json())["detail"]


async def test_unresolvable_dependency_is_failed_naming_it(client: Client) -> None:
    fid = (await client.create(UNRESOLVABLE, name="nodeps"))["id"]
    failed = await client.wait_for(fid, {"failed"}, timeout=90)
    assert NO_SUCH_PACKAGE in failed["reason"]


async def test_not_ready_yet_answers_503_with_retry_after(client: Client) -> None:
    fid = (await client.create(SLOW_START, name="slow"))["id"]
    await client.wait_for(fid, {"deploying"}, timeout=30)
    response = await client.call(fid, "")
    assert response.status == 503
    assert response.headers["Retry-After"].isdigit()
    assert response.content_type == "application/problem+json"
    await client.wait_for(fid, {"ready"}, timeout=60)
    ok = await client.call(fid, "")
    assert (ok.status, await ok.read()) == (200, b"up")


async def test_deployer_killed_while_functions_run(client: Client, platform: Platform) -> None:
    local_only(platform)
    ids = [(await client.create(example("hello_stdlib.py"), name=f"f{i}"))["id"] for i in range(3)]
    for fid in ids:
        await client.wait_for(fid, {"ready"}, timeout=60)
    pids_before = {fid: _function_pid(platform, fid) for fid in ids}

    deployer = platform.service_pid("deployer")
    os.kill(deployer, signal.SIGKILL)

    # The functions keep serving while no deployer runs.
    for fid in ids:
        response = await client.call(fid, "still-there")
        assert response.status == 200

    # A command accepted while the deployer is down is carried out when it is back.
    late = (await client.create(example("hello_stdlib.py"), name="late"))["id"]

    new_deployer = await _wait_for_new_pid(platform, "deployer", old=deployer)
    assert new_deployer != deployer
    await client.wait_for(late, {"ready"}, timeout=60)

    # Neither lost nor duplicated: the same processes, adopted, one per function.
    for fid in ids:
        data = await client.wait_for(fid, {"ready"}, timeout=30)
        assert data["observed_generation"] == data["generation"]
        assert _function_pid(platform, fid) == pids_before[fid]
        assert len(_uv_processes(platform, fid)) == 1
        assert (await client.call(fid, "after")).status == 200


def _function_pid(platform: Platform, fid: str) -> int:
    record = platform.data_dir / "functions" / fid / "process.json"
    return int(json.loads(record.read_text())["pid"])


def _uv_processes(platform: Platform, fid: str) -> list[int]:
    """uv processes running this function's script (uv itself, not its Python child)."""
    main_py = str(platform.data_dir / "functions" / fid / "main.py").encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if main_py in argv and b"--script" in argv:
                found.append(int(entry))
    return found


async def _wait_for_new_pid(platform: Platform, service: str, old: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            pid = platform.service_pid(service)
        except LookupError:
            pid = old
        if pid != old:
            return pid
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{service} was not restarted")


async def test_a_function_that_dies_is_restarted(client: Client, platform: Platform) -> None:
    local_only(platform)
    fid = (await client.create(example("hello_stdlib.py"), name="dies"))["id"]
    await client.wait_for(fid, {"ready"})
    pid = _function_pid(platform, fid)
    os.killpg(pid, signal.SIGKILL)
    # Seen as failed with what happened, then started again (back-off starts at 1 s).
    failed = await client.wait_for(fid, {"failed"}, timeout=30)
    assert "killed by SIGKILL" in failed["reason"]
    await client.wait_for(fid, {"ready"}, timeout=30)
    assert _function_pid(platform, fid) != pid
    assert (await client.call(fid, "back")).status == 200
