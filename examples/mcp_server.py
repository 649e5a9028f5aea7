# /// script
# requires-python = ">=3.11"
# dependencies = ["mcp>=2.3,<3", "uvicorn>=0.30"]
# ///
"""An MCP server over streamable HTTP, as a pyfaas function.

Deploy it and point an MCP client at ``{gateway}/gateway/{id}/mcp``. Two tools: ``add``
answers at once; ``count_to`` reports progress as it goes, which the client receives as
progress notifications on the response stream while the call is still running — through
the gateway, as the function flushes them.
"""

import asyncio
import os

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("pyfaas-example", instructions="Small arithmetic, and counting slowly.")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
async def count_to(n: int, ctx: Context) -> str:
    """Count from 1 to n, reporting progress at each step."""
    for i in range(1, n + 1):
        await ctx.report_progress(i, n, f"counted {i}")
        await asyncio.sleep(0.05)
    return f"counted to {n}"


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"MCP server on 0.0.0.0:{port}/mcp", flush=True)
    # 0.0.0.0: the platform reaches the function from outside its loopback (Kubernetes).
    server.run("streamable-http", host="0.0.0.0", port=port)
