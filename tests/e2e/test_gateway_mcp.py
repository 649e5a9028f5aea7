"""An MCP server deployed on pyfaas, driven through the gateway by the real MCP Python
client over streamable HTTP: initialize, list the tools, call one, and call one that
streams progress notifications, which must arrive while the call is still running."""

from __future__ import annotations

import time

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.platform import Client, example

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


async def test_an_mcp_client_uses_a_deployed_mcp_server_through_the_gateway(
    client: Client,
) -> None:
    fid = (await client.create(example("mcp_server.py"), name="mcp"))["id"]
    await client.wait_for(fid, {"ready"}, timeout=150)
    url = f"{client.platform.gateway}/gateway/{fid}/mcp"

    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as mcp:
        init = await mcp.initialize()
        assert init.server_info.name == "pyfaas-example"

        tools = await mcp.list_tools()
        assert sorted(t.name for t in tools.tools) == ["add", "count_to"]

        added = await mcp.call_tool("add", {"a": 2, "b": 40})
        assert not added.is_error
        assert added.structured_content == {"result": 42}

        progress: list[tuple[float, float | None, str | None, float]] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message, time.monotonic()))

        counted = await mcp.call_tool("count_to", {"n": 10}, progress_callback=on_progress)
        finished = time.monotonic()
        assert counted.structured_content == {"result": "counted to 10"}
        assert [(p[0], p[1], p[2]) for p in progress] == [
            (float(i), 10.0, f"counted {i}") for i in range(1, 11)
        ]
        # The tool takes ~0.5 s: its first progress notification reached the client
        # well before the result did, so the gateway did not hold the stream back.
        assert finished - progress[0][3] > 0.3
