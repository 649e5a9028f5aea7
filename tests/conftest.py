"""Fixtures every tier shares: a real NATS server, a real Postgres, a unique NATS prefix
per test (so tests and parallel runs never see each other's messages), and a fresh
database per test module."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.js.errors import NotFoundError
from sqlalchemy.ext.asyncio import AsyncEngine

from pyfaas_common import migrate
from pyfaas_common.db import make_engine
from pyfaas_common.subjects import Subjects
from tests import services

_NOTICES: list[str] = []


def _loud(message: str) -> None:
    """Said again at the end of the run: the suite had to start a server of its own."""
    _NOTICES.append(message)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for message in _NOTICES:
        terminalreporter.write_line(f"NOTICE: {message}", yellow=True, bold=True)


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.nats_service(tmp_path_factory.mktemp("nats"), _loud) as url:
        yield url


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with services.postgres_service(tmp_path_factory.mktemp("pg"), _loud) as url:
        yield url


@pytest.fixture(scope="module")
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty Postgres database (SQLAlchemy async URL) for one test module."""
    name, url = services.create_database(postgres_admin_url)
    try:
        yield url
    finally:
        services.drop_database(postgres_admin_url, name)


@pytest.fixture
async def prefix(nats_url: str) -> AsyncIterator[str]:
    """A NATS prefix of this test's own; its streams are removed afterwards."""
    value = f"t{uuid.uuid4().hex[:12]}"
    yield value
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        s = Subjects(value)
        for stream in (s.command_stream, s.event_stream, s.access_stream):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """The module's database, migrated as the deployer migrates it, for writing rows as
    the deployer would."""
    engine = make_engine(postgres_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()
