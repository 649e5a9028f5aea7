# /// script
# requires-python = ">=3.11"
# dependencies = []
# ///
"""The smallest pyfaas function: the standard library's HTTP server, answering every
method on every path with what it received, as JSON."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        payload = json.dumps(
            {
                "hello": os.environ.get("GREETING", "world"),
                "method": self.command,
                "path": self.path,
                "body": body,
                "forwarded_prefix": self.headers.get("x-forwarded-prefix"),
                "forwarded_for": self.headers.get("x-forwarded-for"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        print(format % args, flush=True)


class Server(ThreadingHTTPServer):
    # The standard library's default backlog is 5: a burst of callers (say, everyone
    # waiting for a wake) would overflow it and see connections dropped.
    request_queue_size = 128


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8000"))
    print(f"listening on 0.0.0.0:{port}", flush=True)
    Server(("0.0.0.0", port), Echo).serve_forever()
