"""Fault scenarios (issue 7): each breaks one part of a running platform on purpose and
checks that nothing is lost. ``make test`` runs the short versions; ``make faults``
(``PYFAAS_FAULTS_FULL=1``) the long ones, and both print the figures at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.harness import FULL, REPORT, CrashableNats, PostgresServer

pytestmark = pytest.mark.faults


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT:
        return
    write = terminalreporter.write_line
    terminalreporter.section(f"fault scenarios ({'full' if FULL else 'short'} versions)")
    write(f"{'scenario':<28} {'recovery':>9} {'lost':>5}  injected")
    for f in REPORT:
        write(f"{f.scenario:<28} {f.recovery_seconds:>8.2f}s {f.lost:>5}  {f.injected}")
        if f.detail:
            write(f"{'':<28} {'':>9} {'':>5}  {f.detail}")
    lost = sum(f.lost for f in REPORT)
    write(f"lost in all: {lost}", red=bool(lost), green=not lost, bold=True)


@pytest.fixture
def own_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashableNats]:
    """A nats-server of this test's own (with a store directory it may crash and restart)."""
    server = CrashableNats(tmp_path_factory.mktemp("nats-own"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A Postgres of this module's own, which a test may stop and start."""
    server = PostgresServer(tmp_path_factory.mktemp("pg-own"))
    server.init()
    try:
        yield server
    finally:
        if server.running():
            server.stop()
