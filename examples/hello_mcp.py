# /// script
# requires-python = ">=3.11"
# dependencies = ["mcp>=1.9,<2"]
# ///
"""An MCP server over streamable HTTP as a pyfaas function: two tools.

Point an MCP client at <the function's URL>mcp, e.g.
http://127.0.0.1:8080/gateway/<id>/mcp. Stateless, so any request can be answered by
whichever process serves the function now (across updates, and after a wake-up).
"""

import os

from mcp.server.fastmcp import FastMCP

mcp = FastMCP(
    "hello-mcp",
    host="0.0.0.0",
    port=int(os.environ.get("PORT", "8000")),
    stateless_http=True,
)


@mcp.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@mcp.tool()
def whoami() -> dict[str, str]:
    """Which pyfaas function answered."""
    return {
        "id": os.environ.get("PYFAAS_FUNCTION_ID", ""),
        "name": os.environ.get("PYFAAS_FUNCTION_NAME", ""),
    }


if __name__ == "__main__":
    mcp.run(transport="streamable-http")
