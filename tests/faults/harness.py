"""What the fault scenarios share: a Postgres and a NATS of the test's own (so they can be
stopped and started without touching the machine's shared ones), the platform on them,
looks at the database and at this machine's processes, and the report ``make faults``
prints.

Every scenario breaks one thing on purpose, measures how long the platform took to
recover by itself, and counts what was lost; :func:`record` keeps the figures for the
summary at the end of the run (see ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import nats
from nats.js.errors import NotFoundError

from pyfaas_common.subjects import Subjects
from tests.platform import Platform
from tests.services import NatsServer, free_port

FULL = os.environ.get("PYFAAS_FAULTS_FULL", "") == "1"
"""``make faults`` sets it: the long versions (a 30 s load instead of 10 s, and so on)."""


# --- the report --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultFigures:
    scenario: str
    injected: str
    recovery_seconds: float
    lost: int
    detail: str = ""


REPORT: list[FaultFigures] = []


def record(
    scenario: str, injected: str, recovery_seconds: float, lost: int, detail: str = ""
) -> None:
    REPORT.append(FaultFigures(scenario, injected, recovery_seconds, lost, detail))


# --- waiting -----------------------------------------------------------------------------


async def wait_until(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``check`` until it returns something truthy; its value is returned."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g}s (last: {last!r})")
        await asyncio.sleep(interval)


# --- the platform ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def platform_on(
    data_dir: Path, nats_url: str, database_url: str, **extra_env: str
) -> AsyncIterator[Platform]:
    """``faas dev`` on the given NATS and database, with a NATS prefix of its own."""
    prefix = f"f{uuid.uuid4().hex[:12]}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        # The quotas are for users; these scenarios are one user's hostile burst.
        "PYFAAS_MAX_CREATES_PER_MINUTE": "0",
        "PYFAAS_MAX_FUNCTIONS_PER_USER": "0",
        **extra_env,
    }
    platform = Platform(data_dir, nats_url, prefix, database_url, env)
    await platform.start()
    try:
        yield platform
    finally:
        code = await platform.stop(timeout=60)
        with contextlib.suppress(Exception):
            await _drop_streams(nats_url, prefix)
        assert code == 0, f"faas dev did not stop cleanly ({code}):\n{platform.log_tail()}"


async def _drop_streams(nats_url: str, prefix: str) -> None:
    nc = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=1)
    try:
        s = Subjects(prefix)
        for stream in (s.command_stream, s.event_stream, s.access_stream):
            with contextlib.suppress(NotFoundError):
                await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


def plain_url(sqlalchemy_url: str) -> str:
    """The asyncpg URL of a SQLAlchemy ``postgresql+asyncpg://`` URL."""
    return sqlalchemy_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def function_rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(plain_url(database_url), timeout=5)
    try:
        return list(
            await conn.fetch("SELECT id, owner, name, state, desired, reason FROM functions")
        )
    finally:
        await conn.close()


# --- processes of this machine -----------------------------------------------------------


def function_processes(data_dir: Path) -> dict[str, list[int]]:
    """For each function directory's ``main.py``: the ``uv run --script`` processes that
    run it (uv itself, not its Python child). A function runs once if its list has one."""
    root = str(data_dir / "functions")
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--script" not in argv:
            continue
        for arg in argv:
            text = arg.decode(errors="replace")
            if text.startswith(root) and text.endswith("/main.py"):
                found.setdefault(Path(text).parent.name, []).append(int(entry))
    return found


def function_dirs(data_dir: Path) -> set[str]:
    root = data_dir / "functions"
    return {p.name for p in root.iterdir()} if root.exists() else set()


def side_records(data_dir: Path) -> list[Path]:
    """``process.{pid}.json``: processes starting or retiring; none once all is settled."""
    return list((data_dir / "functions").glob("*/process.*.json"))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise LookupError(f"no VmRSS for {pid}")


# --- a NATS server of the test's own ------------------------------------------------------


class CrashableNats(NatsServer):
    """The suite's NatsServer that can also crash (SIGKILL) and come back on the same port
    and store directory."""

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


# --- a Postgres of the test's own ---------------------------------------------------------


def _pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns, at import, that XDG_RUNTIME_DIR is not set (as root in CI).
        warnings.simplefilter("ignore")
        import pgserver
        import pgserver._commands

    return pgserver


class PostgresServer:
    """Postgres from the ``pgserver`` wheel's binaries, on a fixed loopback TCP port, which
    :meth:`stop` and :meth:`start` take down and bring back.

    pgserver itself only listens on a Unix socket at a path of its choosing and cannot be
    stopped and started again at will, so it is used only to create the data directory
    (``initdb``, and as root a system user to run as); from then on ``pg_ctl`` runs the
    server directly on ``127.0.0.1:{port}``.
    """

    def __init__(self, directory: Path) -> None:
        self.pgdata = directory / "pgdata"
        self.port = free_port()
        self.user: str | None = None

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        pg_ctl = _pgserver()._commands.pg_ctl
        pg_ctl(list(args), pgdata=self.pgdata, user=self.user, timeout=timeout)

    def init(self) -> None:
        server = _pgserver().get_server(str(self.pgdata), cleanup_mode=None)
        self.user = server.system_user
        self._pg_ctl("-w", "stop", "-m", "fast")  # it listens on a socket; we want TCP
        self.start()

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.pgdata} "
            "-c max_connections=200 -c fsync=off"
        )
        self._pg_ctl("-w", "-o", options, "-l", str(self.pgdata / "server.log"), "start")

    def stop(self) -> None:
        # fast: every connection is cut at once, as when a database host goes away.
        self._pg_ctl("-w", "stop", "-m", "fast")

    def running(self) -> bool:
        pg_ctl = _pgserver()._commands.pg_ctl
        try:
            pg_ctl(["status"], pgdata=self.pgdata, user=self.user, timeout=10)
        except subprocess.CalledProcessError:
            return False
        return True

    def create_database(self) -> str:
        """A fresh database; its SQLAlchemy URL."""
        name = f"pyfaas_f_{uuid.uuid4().hex[:12]}"

        async def create() -> None:
            conn = await asyncpg.connect(self.admin_url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        from tests.services import run_sync

        run_sync(create())
        parsed = urlparse(self.admin_url)
        return parsed._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
