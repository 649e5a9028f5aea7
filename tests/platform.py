"""Driving pyfaas the way a user does: ``faas dev`` in a child process, HTTP to its API
and gateway. The e2e tests and the benchmarks use it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from tests.services import free_port

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def script(body: str, dependencies: Iterable[str] = (), requires_python: str = ">=3.11") -> str:
    deps = ", ".join(json.dumps(d) for d in dependencies)
    return (
        f'# /// script\n# requires-python = "{requires_python}"\n# dependencies = [{deps}]\n'
        f"# ///\n{body}"
    )


class Platform:
    """``faas dev`` with its own ports, data directory and NATS prefix."""

    def __init__(
        self,
        data_dir: Path,
        nats_url: str,
        prefix: str,
        database_url: str = "",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.api_port = free_port()
        self.gateway_port = free_port()
        self.env = {
            **os.environ,
            "PYFAAS_DATA_DIR": str(data_dir),
            "PYFAAS_NATS_URL": nats_url,
            "PYFAAS_NATS_PREFIX": prefix,
            "PYFAAS_DATABASE_URL": database_url,
            "PYFAAS_API_PORT": str(self.api_port),
            "PYFAAS_GATEWAY_PORT": str(self.gateway_port),
            "PYFAAS_PUBLIC_URL": f"http://127.0.0.1:{self.gateway_port}",
            **(extra_env or {}),
        }
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = data_dir / "platform.log"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    async def start(self, timeout: float = 60.0) -> None:
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pyfaas.cli", "dev",
                env=self.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            for url in (f"{self.api}/healthz", f"{self.gateway}/healthz"):
                while True:
                    if self.proc.returncode is not None:
                        raise RuntimeError(f"faas dev exited:\n{self.log_tail()}")
                    try:
                        async with session.get(url) as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} not healthy:\n{self.log_tail()}")
                    await asyncio.sleep(0.1)
            # Healthy API and gateway, but the deployer may not have subscribed to reads yet
            # (it migrates and connects first): a read right away would answer 503.
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.api}/faas/python?user=ready-check") as r:
                        if r.status != 503:
                            break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the deployer does not answer reads:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            return await self.proc.wait()

    def service_pid(self, service: str) -> int:
        """The pid of one of the platform's services (a child of ``faas dev``)."""
        assert self.proc is not None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and f"pyfaas_{service}".encode() in cmdline:
                return int(entry.name)
        raise LookupError(f"no {service} process under faas dev")


class ExternalPlatform(Platform):
    """A pyfaas already running elsewhere (``make e2e-compose``): the e2e suite drives it by
    ``PYFAAS_E2E_API_URL`` and ``PYFAAS_E2E_GATEWAY_URL``; tests that need this machine's
    processes or files skip themselves (:func:`local_only`)."""

    def __init__(self, api: str, gateway: str, data_dir: Path) -> None:
        super().__init__(data_dir, "", "external")
        self._api, self._gateway = api.rstrip("/"), gateway.rstrip("/")

    @property
    def api(self) -> str:
        return self._api

    @property
    def gateway(self) -> str:
        return self._gateway

    async def start(self, timeout: float = 60.0) -> None:
        return None

    async def stop(self, timeout: float = 30.0) -> int | None:
        return 0


def external_platform(data_dir: Path) -> ExternalPlatform | None:
    api = os.environ.get("PYFAAS_E2E_API_URL")
    if not api:
        return None
    gateway = os.environ.get("PYFAAS_E2E_GATEWAY_URL", "http://127.0.0.1:8080")
    return ExternalPlatform(api, gateway, data_dir)


def local_only(platform: Platform) -> None:
    """Skip a test that looks at processes or files of a platform on this machine."""
    if isinstance(platform, ExternalPlatform):
        import pytest

        pytest.skip("looks at this machine's processes; the platform under test is elsewhere")


class Client:
    """The few API calls the tests make, with the waiting a user would do by hand."""

    def __init__(self, session: aiohttp.ClientSession, platform: Platform) -> None:
        self.session = session
        self.platform = platform

    async def create(
        self, code: str, user: str = "alice", name: str = "hello", **extra: Any
    ) -> dict[str, Any]:
        body = {"user": user, "name": name, "code": code, **extra}
        async with self.session.post(f"{self.platform.api}/faas/python", json=body) as r:
            data = await r.json(content_type=None)
            assert r.status == 202, data
            return dict(data)

    async def get(self, function_id: str) -> tuple[int, dict[str, Any]]:
        async with self.session.get(f"{self.platform.api}/faas/python/{function_id}") as r:
            return r.status, await r.json(content_type=None)

    async def wait_for(
        self, function_id: str, states: set[str], timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            status, data = await self.get(function_id)
            state = data.get("state") if status == 200 else f"HTTP {status}"
            if not seen or seen[-1] != state:
                seen.append(str(state))
            if state in states:
                return data
            if time.monotonic() > deadline:
                raise TimeoutError(f"{function_id} went {seen}, never {states}: {data}")
            await asyncio.sleep(0.1)

    async def call(self, function_id: str, path: str = "", **kwargs: Any) -> aiohttp.ClientResponse:
        method = kwargs.pop("method", "GET")
        url = f"{self.platform.gateway}/gateway/{function_id}/{path}"
        response = await self.session.request(method, url, **kwargs)
        await response.read()  # read whole: releases the connection to the pool
        return response
