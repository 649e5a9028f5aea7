"""The gateway's cost, against nginx as a reverse proxy and against no proxy at all.

Run: ``uv run python bench/gateway.py [--seconds 5] [--rounds 3] [--connections 32]``
(``make bench`` runs it too). On this machine, in one run, against the same upstream (a
minimal HTTP server: an asyncio protocol on uvloop answering ``hello``):

- **direct**: wrk to the upstream;
- **gateway**: wrk to ``/gateway/{id}/`` of the pyfaas gateway (one worker, uvloop), with
  its real route table (embedded SQLite), NATS and access records;
- **nginx**: wrk to nginx (one worker) as a reverse proxy with upstream keep-alive.

Each is measured ``--rounds`` times, interleaved, at a fixed concurrency; the table shows
the best round (the least disturbed by this machine's noise) and the ratios
gateway/nginx and gateway/direct. Then each proxy is driven at a fixed rate (500
requests/s, open loop: latency counts from when a request was due) to compare p99
latency. Loopback only; every phase is bounded in time. ``wrk`` and ``nginx`` come from
Debian (``apt-get install nginx-light wrk``); without nginx the table says so and
compares with direct only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.services import free_port, nats_service, reachable  # noqa: E402

UPSTREAM = r"""
import asyncio, sys, httptools, uvloop

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"

class Hello(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()
    def on_message_complete(self):
        self.transport.write(RESPONSE)

async def main():
    server = await asyncio.get_running_loop().create_server(
        Hello, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()

uvloop.run(main())
"""

NGINX_CONF = """
worker_processes 1;
daemon off;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream function {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://function;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
}}
"""


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not reachable(f"http://127.0.0.1:{port}", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start listening on {port}")
        time.sleep(0.05)


POST_LUA = """
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}'
wrk.headers["Content-Type"] = "application/json"
"""
"""An MCP client's call: a small JSON-RPC POST (97 bytes)."""


def wrk(
    url: str, seconds: float, connections: int, script: Path | None = None
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 latency (ms) from one wrk run (``script``: a wrk Lua file)."""
    extra = ["-s", str(script)] if script is not None else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         *extra, url],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url} answered {errors.group(1)} errors under load:\n{out}")
    return rps, pct("50"), pct("99")


async def fixed_rate(url: str, rate: float, seconds: float) -> float:
    """p99 latency (ms) at a fixed request rate, counted from each request's due time."""
    import uvloop  # noqa: F401  (the gateway's own dependency; faster client loop)

    latencies: list[float] = []
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float) -> None:
            async with session.get(url) as r:
                await r.read()
                assert r.status == 200
            latencies.append(loop.time() - due)

        for _ in range(50):  # warm the connections
            await one(loop.time())
        latencies.clear()
        start = loop.time()
        tasks = []
        n = int(rate * seconds)
        for i in range(n):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due)))
        await asyncio.wait_for(asyncio.gather(*tasks), seconds + 30)
    latencies.sort()
    return latencies[int(len(latencies) * 0.99) - 1] * 1000


async def prepare_gateway(data_dir: Path, nats_url: str, upstream_port: int) -> uuid.UUID:
    """The embedded database with one ready function, as the deployer would leave it."""
    from pyfaas_common import migrate
    from pyfaas_common.db import FunctionRow, make_engine
    from pyfaas_common.messages import utcnow

    engine = make_engine(f"sqlite+aiosqlite:///{data_dir / 'pyfaas.db'}")
    await migrate.upgrade(engine)
    function_id = uuid.uuid4()
    now = utcnow()
    async with engine.begin() as conn:
        await conn.execute(
            FunctionRow.__table__.insert().values(
                id=function_id, owner="bench", name="hello", code="", code_digest="0" * 64,
                env={}, runtime="local", desired="running", state="ready", reason="",
                endpoint=f"http://127.0.0.1:{upstream_port}", generation=1,
                observed_generation=1, last_command_seq=0, created_at=now, updated_at=now,
            )
        )  # fmt: skip
    await engine.dispose()
    return function_id


def _install_missing() -> None:
    """wrk and nginx from Debian's packages where they are missing and apt-get can be run
    (as root); otherwise the caller says what is missing."""
    missing = [pkg for pkg, cmd in (("wrk", "wrk"), ("nginx-light", "nginx"))
               if shutil.which(cmd) is None and not Path(f"/usr/sbin/{cmd}").exists()]  # fmt: skip
    if not missing or shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    print(f"installing {' '.join(missing)} with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        if subprocess.run(command, env=env, check=False, timeout=600).returncode != 0:
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rate-seconds", type=float, default=6.0)
    args = parser.parse_args()
    _install_missing()
    if shutil.which("wrk") is None:
        print("gateway benchmark skipped: wrk is missing and could not be installed "
              "(apt-get install wrk nginx-light)")  # fmt: skip
        return 0
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )

    procs: list[subprocess.Popen[bytes]] = []
    with (
        tempfile.TemporaryDirectory(prefix="pyfaas-bench-") as tmp,
        nats_service(Path(tmp) / "nats", print) as nats_url,
    ):
        work = Path(tmp)
        try:
            upstream_port = free_port()
            (work / "upstream.py").write_text(UPSTREAM)
            procs.append(
                subprocess.Popen([sys.executable, str(work / "upstream.py"), str(upstream_port)])
            )
            wait_listening(upstream_port, procs[-1], "the upstream")

            data_dir = work / "data"
            data_dir.mkdir()
            function_id = asyncio.run(prepare_gateway(data_dir, nats_url, upstream_port))
            gateway_port = free_port()
            env = {
                **os.environ, "PYFAAS_DATA_DIR": str(data_dir), "PYFAAS_NATS_URL": nats_url,
                "PYFAAS_NATS_PREFIX": f"b{uuid.uuid4().hex[:10]}", "PYFAAS_DATABASE_URL": "",
                "PYFAAS_GATEWAY_PORT": str(gateway_port), "PYFAAS_GATEWAY_WORKERS": "1",
                "PYFAAS_LOG_LEVEL": "WARNING",
            }  # fmt: skip
            procs.append(subprocess.Popen([sys.executable, "-m", "pyfaas_gateway"], env=env))
            wait_listening(gateway_port, procs[-1], "the gateway")

            targets = {
                "direct": f"http://127.0.0.1:{upstream_port}/",
                "gateway": f"http://127.0.0.1:{gateway_port}/gateway/{function_id}/",
            }
            if nginx:
                nginx_port = free_port()
                conf = work / "nginx.conf"
                conf.write_text(
                    NGINX_CONF.format(dir=work, upstream=upstream_port, port=nginx_port)
                )
                procs.append(subprocess.Popen([nginx, "-c", str(conf), "-p", str(work)]))
                wait_listening(nginx_port, procs[-1], "nginx")
                targets["nginx"] = f"http://127.0.0.1:{nginx_port}/"
            else:
                print(
                    "nginx is not installed (apt-get install nginx-light): compared with direct only"
                )

            post_lua = work / "post.lua"
            post_lua.write_text(POST_LUA)
            for what, script in (("GET", None), ("POST, 97-byte JSON body", post_lua)):
                for url in targets.values():  # warm-up: connections, caches
                    wrk(url, 1, args.connections, script)
                results: dict[str, list[tuple[float, float, float]]] = {k: [] for k in targets}
                for _ in range(args.rounds):
                    for name, url in targets.items():
                        results[name].append(wrk(url, args.seconds, args.connections, script))

                print(
                    f"\nthroughput, {what}: wrk -t1 -c{args.connections}, {args.rounds} "
                    f"interleaved rounds of {args.seconds:g}s, best round shown; "
                    f"{os.cpu_count()} cores\n"
                )
                print(f"{'target':<10}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}   all rounds req/s")
                best = {}
                for name, runs in results.items():
                    rps, p50, p99 = max(runs)
                    best[name] = rps
                    rounds = ", ".join(f"{r[0]:.0f}" for r in runs)
                    print(f"{name:<10}{rps:>12.0f}{p50:>10.2f}{p99:>10.2f}   {rounds}")
                print()
                if "nginx" in best:
                    print(
                        f"gateway / nginx   = {best['gateway'] / best['nginx']:.2f}x"
                        "  (target >= 0.25x)"
                    )
                print(f"gateway / direct  = {best['gateway'] / best['direct']:.2f}x")

            print(
                f"\nlatency at a fixed {args.rate:g} requests/s for {args.rate_seconds:g}s (open loop)\n"
            )
            p99s = {}
            for name, url in targets.items():
                p99s[name] = asyncio.run(fixed_rate(url, args.rate, args.rate_seconds))
                print(f"{name:<10} p99 {p99s[name]:8.2f} ms")
            if "nginx" in p99s:
                added = p99s["gateway"] - p99s["nginx"]
                print(f"\ngateway p99 - nginx p99 = {added:+.2f} ms  (target <= 2 ms)")
            print(f"gateway p99 - direct p99 = {p99s['gateway'] - p99s['direct']:+.2f} ms")
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
