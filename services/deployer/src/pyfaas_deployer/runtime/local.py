"""The local runtime: each function is a supervised child process on this machine.

Used by ``make dev`` and whenever no cluster is configured. Each function lives in
``$PYFAAS_DATA_DIR/functions/{id}/`` (``main.py``, ``function.log``, ``process.json``)
and runs as ``uv run --script main.py`` in its own process group on a free loopback port.

An update of a serving function is a rolling one: the new generation starts on a port of
its own beside the old one, and only once it accepts connections does ``apply`` return its
endpoint; the reconciler records and publishes it (the gateway switches), then calls
``Observation.after_switch``, which stops the old process after ``PYFAAS_LOCAL_DRAIN_SECONDS``
for the requests it still has. If the new generation fails, it is stopped and the old one
goes on serving. A process that is starting or retiring is recorded in
``process.{pid}.json`` so that a deployer that crashes mid-update leaves nothing running
that nobody knows of.

A deployer that crashes (SIGKILL) leaves its functions running; the next one adopts them
from ``process.json`` instead of starting them twice. A clean stop stops them too, unless
``PYFAAS_LOCAL_STOP_ON_SHUTDOWN=false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from uuid import UUID

from uv import find_uv_bin

from pyfaas_common.logs import function_context

from ..settings import DeployerSettings
from .base import ExitCallback, FunctionSpec, Observation

log = logging.getLogger(__name__)

LOG_ROTATE_BYTES = 10 * 1024 * 1024
STOP_GRACE_SECONDS = 5.0
FOLLOW_POLL_SECONDS = 0.2
"""How often a log follow looks for new lines: a file has no cheaper portable signal."""

# What a function inherits from the deployer's environment: enough for uv to find Python
# and reach the package index, nothing of the platform's own configuration.
_INHERITED_ENV = (
    "PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip


@dataclass(slots=True)
class _Process:
    function_id: UUID
    pid: int
    port: int
    digest: str
    record: Path
    """Its ``process.json`` while it serves; ``process.{pid}.json`` while starting or retiring."""
    child: asyncio.subprocess.Process | None = None
    """None when adopted from an earlier deployer (not our child: we poll it)."""
    ready: bool = False
    stopping: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        if self.child is not None:
            return self.child.returncode is None
        return _pid_alive(self.pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def tail_lines(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a file, read from its end."""
    try:
        with path.open("rb") as f:
            return _tail_of(f, f.seek(0, os.SEEK_END), count)
    except FileNotFoundError:
        return []


def _tail_of(f: BinaryIO, end: int, count: int) -> list[str]:
    block = 8192
    data = b""
    while end > 0 and data.count(b"\n") <= count:
        start = max(0, end - block)
        f.seek(start)
        data = f.read(end - start) + data
        end = start
        block *= 2
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]


class _LogFollower:
    """Reads what a function appends to its log file, across rotations. Blocking: the
    runtime calls it in a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO | None = None
        self.partial = b""

    def start(self, tail: int) -> list[str]:
        """The last ``tail`` lines; from then on :meth:`read` returns what is appended."""
        try:
            self.file = self.path.open("rb")
        except FileNotFoundError:
            return []
        # The tail and the follow share one position: no line is lost or sent twice.
        end = self.file.seek(0, os.SEEK_END)
        lines = _tail_of(self.file, end, tail) if tail else []
        self.file.seek(end)
        return lines

    def read(self) -> list[str]:
        data = b""
        if self.file is not None:
            data = self.file.read()
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            current = None
        if current is not None and (
            self.file is None or os.fstat(self.file.fileno()).st_ino != current
        ):
            # Rotated (or created since we started): what is left of the old file was read
            # above; go on from the start of the new one.
            if self.file is not None:
                self.file.close()
            self.file = self.path.open("rb")
            data += self.file.read()
        if not data:
            return []
        data = self.partial + data
        # Keep an unfinished last line until its newline arrives.
        complete, _, self.partial = data.rpartition(b"\n")
        if not complete and not data.endswith(b"\n"):
            return []
        return complete.decode("utf-8", "replace").splitlines() if complete else [""]

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class LocalRuntime:
    name = "local"

    def __init__(self, settings: DeployerSettings, on_exit: ExitCallback) -> None:
        self.settings = settings
        self.root = (settings.data_dir / "functions").resolve()
        self.on_exit = on_exit
        self._procs: dict[UUID, _Process] = {}
        self._retiring: dict[asyncio.Task[None], _Process] = {}
        self._previous: dict[UUID, _Process] = {}
        """Replaced by a new generation, still serving until the switch is published."""
        self._uv = find_uv_bin()

    # --- paths ---------------------------------------------------------------------
    def _dir(self, function_id: UUID) -> Path:
        return self.root / str(function_id)

    def _log_path(self, function_id: UUID) -> Path:
        return self._dir(function_id) / "function.log"

    def _state_path(self, function_id: UUID) -> Path:
        return self._dir(function_id) / "process.json"

    def _side_record(self, function_id: UUID, pid: int) -> Path:
        return self._dir(function_id) / f"process.{pid}.json"

    # --- life cycle ----------------------------------------------------------------
    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for record in self.root.glob("*/process.*.json"):
            # Starting or retiring when the last deployer stopped: neither serves.
            self._stop_recorded(record)
        for state_file in self.root.glob("*/process.json"):
            self._adopt(state_file)
        self._stop_unrecorded()

    def _stop_unrecorded(self) -> None:
        """A deployer killed between starting a function and writing its record leaves a
        process that no record names; the function would run twice. Stop every process
        group running a script under our root that was not adopted."""
        proc_dir = Path("/proc")
        if not proc_dir.is_dir():
            return
        adopted = {p.pid for p in self._procs.values()}
        root = str(self.root).encode() + b"/"
        for entry in proc_dir.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                leader = os.getpgid(pid) == pid  # uv, started in a session of its own
            except OSError:
                continue
            ours = any(a.startswith(root) and a.endswith(b"/main.py") for a in argv)
            if ours and b"--script" in argv and leader and pid not in adopted:
                log.warning("stopping a function process no record names", extra={"pid": pid})
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    @staticmethod
    def _recorded_pid(record: Path) -> int | None:
        """The pid a record names, if that process is still this function's script."""
        try:
            pid = int(json.loads(record.read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        if not _pid_alive(pid) or str(record.parent / "main.py") not in cmdline:
            return None
        return pid

    def _stop_recorded(self, record: Path) -> None:
        pid = self._recorded_pid(record)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        record.unlink(missing_ok=True)

    def _adopt(self, state_file: Path) -> None:
        try:
            record = json.loads(state_file.read_text())
            function_id = UUID(state_file.parent.name)
            pid, port, digest = int(record["pid"]), int(record["port"]), str(record["digest"])
        except (OSError, ValueError, KeyError):
            state_file.unlink(missing_ok=True)
            return
        if self._recorded_pid(state_file) != pid:
            state_file.unlink(missing_ok=True)
            return
        proc = _Process(function_id, pid, port, digest, state_file, ready=True)
        proc.watcher = asyncio.create_task(self._watch(proc))
        self._procs[function_id] = proc
        with function_context(function_id):
            log.info("adopted running function", extra={"pid": pid, "port": port})

    async def close(self) -> None:
        retiring = [*self._retiring.values(), *self._previous.values()]
        self._previous.clear()
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        if self.settings.local_stop_on_shutdown:
            await asyncio.gather(*(self._stop(p) for p in retiring), return_exceptions=True)
        # Otherwise their process.{pid}.json records let the next deployer stop them.
        procs = list(self._procs.values())
        if self.settings.local_stop_on_shutdown:
            await asyncio.gather(*(self._stop(p) for p in procs), return_exceptions=True)
        else:
            for p in procs:
                p.stopping = True
                if p.watcher:
                    p.watcher.cancel()
        self._procs.clear()

    # --- the Runtime interface -------------------------------------------------------
    async def apply(self, spec: FunctionSpec) -> Observation:
        obs = await self._apply(spec)
        if obs.state == "ready" and spec.id in self._previous:
            # Also after a switch whose recording failed: the next ready apply retires it.
            return dataclasses.replace(obs, after_switch=lambda: self._retire_previous(spec.id))
        return obs

    async def _apply(self, spec: FunctionSpec) -> Observation:
        current = self._procs.get(spec.id)
        if current is not None and current.digest == spec.digest and current.alive():
            return await self._wait_ready(current)
        if current is not None and current.ready and current.alive():
            return await self._roll(current, spec)
        if current is not None:
            await self._stop(current)
        proc = await self._spawn(spec)
        return await self._wait_ready(proc)

    async def _roll(self, current: _Process, spec: FunctionSpec) -> Observation:
        """Start ``spec`` beside the serving process; switch only once it serves."""
        candidate = await self._spawn(spec, serving=False)
        obs = await self._wait_ready(candidate)
        if obs.state != "ready":
            with function_context(spec.id):
                log.warning(
                    "new generation did not start; the previous one keeps serving",
                    extra={"generation": spec.generation},
                )
            return obs
        if self._procs.get(spec.id) is current and current.alive():
            current.stopping = True  # its exit from now on is ours, not a crash
            self._write_record(current, self._side_record(spec.id, current.pid))
            self._previous[spec.id] = current
        # else it stopped by itself while the new one started: nothing to retire.
        self._procs[spec.id] = candidate
        side = candidate.record
        self._write_record(candidate, self._state_path(spec.id), generation=spec.generation)
        side.unlink(missing_ok=True)
        return obs

    async def _retire_previous(self, function_id: UUID) -> None:
        proc = self._previous.pop(function_id, None)
        if proc is not None:
            self._retire_later(proc)

    def _retire_later(self, proc: _Process) -> None:
        async def drain_then_stop() -> None:
            # The gateway has been told; requests it started on the old process get this
            # long to finish.
            await asyncio.sleep(self.settings.local_drain_seconds)
            with function_context(proc.function_id):
                log.info("stopping the previous generation", extra={"pid": proc.pid})
            await self._stop(proc)

        task = asyncio.create_task(drain_then_stop())
        self._retiring[task] = proc
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def sleep(self, function_id: UUID) -> Observation:
        await self._stop_id(function_id)
        return Observation(state="sleeping")

    async def delete(self, function_id: UUID) -> Observation:
        await self._stop_id(function_id)
        for record in self._dir(function_id).glob("process.*.json"):
            self._stop_recorded(record)
        await asyncio.to_thread(shutil.rmtree, self._dir(function_id), True)
        return Observation(state="absent")

    async def observe(self, function_id: UUID) -> Observation:
        proc = self._procs.get(function_id)
        if proc is None or not proc.alive():
            return Observation(state="absent")
        if await _accepts(proc.port):
            return Observation(state="ready", endpoint=proc.endpoint)
        return Observation(state="deploying", endpoint=proc.endpoint)

    async def managed(self) -> set[UUID]:
        ids: set[UUID] = set()
        if not self.root.exists():
            return ids
        for entry in self.root.iterdir():
            with contextlib.suppress(ValueError):
                ids.add(UUID(entry.name))
        return ids

    async def inventory(self) -> tuple[set[UUID], set[UUID]]:
        # One directory and one process per function: observe() already sees either gone.
        return await self.managed(), set()

    async def logs(self, function_id: UUID, tail: int) -> list[str]:
        return await asyncio.to_thread(tail_lines, self._log_path(function_id), tail)

    async def follow_logs(self, function_id: UUID, tail: int) -> AsyncIterator[list[str]]:
        """Every generation writes to the one ``function.log``, so a follow goes on across
        restarts and updates. Ends when the function's directory is removed (deleted)."""
        follower = _LogFollower(self._log_path(function_id))
        directory = self._dir(function_id)
        try:
            yield await asyncio.to_thread(follower.start, tail)
            seen_directory = directory.exists()
            while True:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
                lines = await asyncio.to_thread(follower.read)
                if lines:
                    yield lines
                if directory.exists():
                    seen_directory = True
                elif seen_directory:
                    return
        finally:
            follower.close()

    # --- processes -------------------------------------------------------------------
    def _environment(self, spec: FunctionSpec, port: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k in _INHERITED_ENV or k.startswith("UV_")}
        env.update(spec.env)
        env.update(
            PORT=str(port),
            HOST="127.0.0.1",
            PYTHONUNBUFFERED="1",
            UV_NO_PROGRESS="1",
            PYFAAS_FUNCTION_ID=str(spec.id),
            PYFAAS_FUNCTION_NAME=spec.name,
        )
        return env

    def _write_record(self, proc: _Process, path: Path, generation: int | None = None) -> None:
        record = {"pid": proc.pid, "port": proc.port, "digest": proc.digest}
        if generation is not None:
            record["generation"] = generation
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        tmp.replace(path)
        proc.record = path

    async def _spawn(self, spec: FunctionSpec, serving: bool = True) -> _Process:
        """Start ``spec``. ``serving=False``: beside the process that serves now, which
        stays the one this runtime reports until :meth:`_roll` switches."""
        directory = self._dir(spec.id)
        directory.mkdir(parents=True, exist_ok=True)
        main_py = directory / "main.py"
        tmp = directory / "main.py.tmp"
        tmp.write_text(spec.code, encoding="utf-8")
        # The serving process read its script when it started: replacing it is harmless.
        tmp.replace(main_py)

        log_path = self._log_path(spec.id)
        if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
            log_path.replace(log_path.with_suffix(".log.1"))
        port = _free_port()
        with log_path.open("ab") as log_file:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log_file.write(
                f"--- pyfaas: starting generation {spec.generation} on port {port} at {stamp}\n".encode()
            )
            log_file.flush()
            child = await asyncio.create_subprocess_exec(
                self._uv, "run", "--script", str(main_py),
                cwd=directory,
                env=self._environment(spec, port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as one, survives us
            )  # fmt: skip
        record = self._state_path(spec.id) if serving else self._side_record(spec.id, child.pid)
        proc = _Process(spec.id, child.pid, port, spec.digest, record, child=child)
        if serving:
            self._procs[spec.id] = proc
        self._write_record(proc, record, generation=spec.generation)
        proc.watcher = asyncio.create_task(self._watch(proc))
        with function_context(spec.id):
            log.info("started function", extra={"pid": child.pid, "port": port})
        return proc

    async def _wait_ready(self, proc: _Process) -> Observation:
        """Ready means the port accepts connections, not merely that a process exists."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.settings.start_timeout
        delay = 0.002
        while True:
            if await _accepts(proc.port) and proc.alive():
                proc.ready = True
                return Observation(state="ready", endpoint=proc.endpoint)
            if not proc.alive():
                code = proc.child.returncode if proc.child else None
                self._forget(proc)
                return Observation(state="failed", reason=self._exit_reason(proc, code))
            if loop.time() > deadline:
                await self._stop(proc)
                tail = "\n".join(tail_lines(self._log_path(proc.function_id), 20))
                return Observation(
                    state="failed",
                    reason=f"did not accept connections on $PORT within "
                    f"{self.settings.start_timeout:g}s (PYFAAS_START_TIMEOUT); serve HTTP on "
                    f"0.0.0.0:$PORT. Last log lines:\n{tail}",
                )
            await asyncio.sleep(delay)
            # A connect attempt on loopback costs microseconds: poll tightly while a
            # script without dependencies would be starting (every millisecond of
            # detection is a millisecond of cold start), then back off for slow installs.
            if loop.time() - started > 2.0:
                delay = min(delay * 1.5, 0.25)

    def _exit_reason(self, proc: _Process, code: int | None) -> str:
        lines = tail_lines(self._log_path(proc.function_id), 20)
        # Generations share the log: show this start's lines, not the previous one's.
        starts = [i for i, line in enumerate(lines) if line.startswith("--- pyfaas: starting")]
        tail = "\n".join(lines[starts[-1] :] if starts else lines)
        how = f"exited with code {code}" if code is not None else "exited"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-code).name}"
        return f"the function {how}. Last log lines:\n{tail}"

    async def _watch(self, proc: _Process) -> None:
        """Tell the reconciler when a function that was serving stops by itself."""
        if proc.child is not None:
            code: int | None = await proc.child.wait()
        else:
            while _pid_alive(proc.pid):
                await asyncio.sleep(1.0)
            code = None
        if proc.stopping or not proc.ready:
            return  # stopped on purpose, or _wait_ready reports it
        if self._procs.get(proc.function_id) is not proc:
            return  # not the one serving (anymore): nothing to report
        self._forget(proc)
        with function_context(proc.function_id):
            log.warning("function exited", extra={"code": code})
        await self.on_exit(proc.function_id, self._exit_reason(proc, code))

    def _forget(self, proc: _Process) -> None:
        if self._procs.get(proc.function_id) is proc:
            del self._procs[proc.function_id]
        proc.record.unlink(missing_ok=True)

    async def _stop_id(self, function_id: UUID) -> None:
        previous = self._previous.pop(function_id, None)
        if previous is not None:
            await self._stop(previous)
        proc = self._procs.get(function_id)
        if proc is not None:
            await self._stop(proc)
        else:
            self._state_path(function_id).unlink(missing_ok=True)

    async def _stop(self, proc: _Process) -> None:
        proc.stopping = True
        self._forget(proc)
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            if await self._exited(proc, grace):
                break
        if proc.watcher is not None and proc.watcher is not asyncio.current_task():
            proc.watcher.cancel()
        # Stray members of the group (a script's own children) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    @staticmethod
    async def _exited(proc: _Process, grace: float) -> bool:
        if proc.child is not None:
            try:
                await asyncio.wait_for(asyncio.shield(proc.child.wait()), grace)
            except TimeoutError:
                return False
            return True
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _pid_alive(proc.pid):
                return True
            await asyncio.sleep(0.05)
        return False
