# /// script
# requires-python = ">=3.11"
# dependencies = ["aiohttp>=3.9"]
# ///
"""A pyfaas function with a dependency: an aiohttp app with two routes.

GET  /           -> a greeting
POST /reverse    -> the request body, reversed
"""

import os

from aiohttp import web

routes = web.RouteTableDef()


@routes.get("/")
async def hello(request: web.Request) -> web.Response:
    name = request.query.get("name", "world")
    return web.json_response({"hello": name, "served_by": "aiohttp"})


@routes.post("/reverse")
async def reverse(request: web.Request) -> web.Response:
    return web.Response(text=(await request.text())[::-1])


app = web.Application()
app.add_routes(routes)

if __name__ == "__main__":
    web.run_app(app, host="0.0.0.0", port=int(os.environ["PORT"]))
