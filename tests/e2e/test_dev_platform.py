"""``faas dev`` as a developer meets it on a fresh machine: no NATS running (it starts its
own, and stops it again), a gateway on a port other than 8080 (function URLs follow it),
and a script that never serves (failed at ``PYFAAS_START_TIMEOUT``, with what it printed).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import running_platform
from tests.platform import Client, Platform, example, local_only, script
from tests.services import free_port, reachable

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

LAST_WORDS = "pyfaas-e2e: warming up, not listening on $PORT yet"
NEVER_LISTENS = script(f"import time\nprint({LAST_WORDS!r})\ntime.sleep(3600)\n")
START_TIMEOUT = 3


@pytest.fixture(scope="module")
async def impatient(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    async for p in running_platform(
        tmp_path_factory.mktemp("impatient"),
        nats_url,
        postgres_url,
        PYFAAS_START_TIMEOUT=str(START_TIMEOUT),
    ):
        local_only(p)  # the start timeout is this test's
        yield p


async def test_a_function_that_never_listens_fails_at_the_start_timeout(
    impatient: Platform,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = Client(session, impatient)
        created = time.monotonic()
        fid = (await client.create(NEVER_LISTENS, name="silent"))["id"]
        failed = await client.wait_for(fid, {"failed"}, timeout=START_TIMEOUT + 20)
        took = time.monotonic() - created

    assert took >= START_TIMEOUT, failed  # failed for not listening, not for something else
    reason = failed["reason"]
    assert (
        f"did not accept connections on $PORT within {START_TIMEOUT}s (PYFAAS_START_TIMEOUT)"
        in reason
    ), reason
    assert "Last log lines:\n" in reason and LAST_WORDS in reason, reason


def _process_with_argument(argument: str) -> int | None:
    """The pid of a process with ``argument`` on its command line, if one runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv:
            return int(entry.name)
    return None


async def test_dev_starts_its_own_nats_and_stops_it(tmp_path: Path) -> None:
    nats_port = free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    assert not reachable(nats_url, 4222)
    data_dir = (tmp_path / "data").resolve()
    data_dir.mkdir()
    # The embedded SQLite, and no PYFAAS_PUBLIC_URL: faas dev with no configuration.
    platform = Platform(data_dir, nats_url, f"e{uuid.uuid4().hex[:12]}")
    del platform.env["PYFAAS_PUBLIC_URL"]
    assert platform.gateway_port != 8080

    try:
        await platform.start()
        conf = data_dir / "nats.conf"
        nats_pid = _process_with_argument(str(conf))
        assert nats_pid is not None, "no nats-server started with the data dir's nats.conf"
        assert reachable(nats_url, 4222)
        text = conf.read_text()
        # Acknowledged commands must be on disk before the ack.
        assert "sync_interval: always" in text, text
        assert f'store_dir: "{data_dir / "nats"}"' in text, text
        assert f'listen: "127.0.0.1:{nats_port}"' in text, text

        async with aiohttp.ClientSession() as session:
            client = Client(session, platform)
            created = await client.create(example("hello_stdlib.py"), name="own-nats")
            fid = created["id"]
            assert created["url"] == f"http://127.0.0.1:{platform.gateway_port}/gateway/{fid}/"
            await client.wait_for(fid, {"ready"}, timeout=60)
            response = await client.call(fid, "hi")
            assert response.status == 200
            assert (await response.json())["path"] == "/hi"
        # JetStream keeps its store in the data dir, beside the database.
        assert (data_dir / "nats" / "jetstream").is_dir()
    finally:
        code = await platform.stop()
    assert code == 0, f"faas dev did not stop cleanly ({code}):\n{platform.log_tail()}"

    assert not reachable(nats_url, 4222), "the NATS that faas dev started still answers"
    assert not Path(f"/proc/{nats_pid}").exists(), f"nats-server (pid {nats_pid}) still runs"
