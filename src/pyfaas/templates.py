"""The scripts ``faas init`` writes: each one deploys as it is and shows the contract
(PEP 723 metadata, HTTP on ``0.0.0.0:$PORT``, settings from the environment)."""

from __future__ import annotations

HTTP = '''\
# /// script
# requires-python = ">=3.11"
# dependencies = []
# ///
"""{name}: a pyfaas function on the standard library's HTTP server.

pyfaas runs this file with `uv run --script` and sends it the requests for
/gateway/<id>/...; it must serve HTTP on 0.0.0.0:$PORT.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer({{"hello": os.environ.get("GREETING", "world"), "path": self.path}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        self._answer({{"received": body}})

    def _answer(self, payload: dict[str, str]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)  # what a function prints is in `faas logs`


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"listening on 0.0.0.0:{{port}}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
'''

AIOHTTP = '''\
# /// script
# requires-python = ">=3.11"
# dependencies = ["aiohttp>=3.9"]
# ///
"""{name}: a pyfaas function as an aiohttp app (dependencies are installed by uv).

GET  /        -> a greeting
POST /echo    -> the request body
"""

import os

from aiohttp import web

routes = web.RouteTableDef()


@routes.get("/")
async def hello(request: web.Request) -> web.Response:
    name = request.query.get("name", os.environ.get("GREETING", "world"))
    return web.json_response({{"hello": name}})


@routes.post("/echo")
async def echo(request: web.Request) -> web.Response:
    return web.Response(body=await request.read())


app = web.Application()
app.add_routes(routes)

if __name__ == "__main__":
    web.run_app(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8000")))
'''

MCP = '''\
# /// script
# requires-python = ">=3.11"
# dependencies = ["mcp>=2.3,<3", "uvicorn>=0.30"]
# ///
"""{name}: an MCP server over streamable HTTP, served by pyfaas.

Connect an MCP client to <the function's URL>mcp (e.g. .../gateway/<id>/mcp).
"""

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("{name}")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def greet(name: str) -> str:
    """Say hello."""
    return f"{{os.environ.get('GREETING', 'Hello')}}, {{name}}!"


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"MCP server on 0.0.0.0:{{port}}/mcp", flush=True)
    server.run("streamable-http", host="0.0.0.0", port=port)
'''

TEMPLATES = {"http": HTTP, "aiohttp": AIOHTTP, "mcp": MCP}


def render(template: str, name: str) -> str:
    return TEMPLATES[template].format(name=name)
