"""Adapters mounting :class:`FakeCommercetools` on pytest-httpserver or a stdlib HTTP server.

Run standalone (stdlib only): ``python -m tests.fakes.commercetools_server --port 8080``.
"""

from __future__ import annotations

import argparse
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .commercetools import FakeCommercetools

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer

__all__ = ["FakeServer", "attach", "serve"]


def attach(fake: FakeCommercetools, httpserver: HTTPServer) -> None:
    """Route every request reaching ``httpserver`` to ``fake``."""
    from werkzeug import Request, Response

    def handler(request: Request) -> Response:
        status, headers, body = fake.handle(
            request.method,
            request.path,
            request.args.to_dict(flat=False),
            dict(request.headers.items()),
            request.get_data(),
        )
        return Response(body, status=status, headers=headers, content_type=headers.get("Content-Type"))

    httpserver.expect_request(re.compile(".*")).respond_with_handler(handler)


class FakeServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one fake; stop it with ``shutdown()`` then ``server_close()``."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], fake: FakeCommercetools) -> None:
        super().__init__(address, _Handler)
        self.fake = fake


class _Handler(BaseHTTPRequestHandler):
    server: FakeServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Without it, keep-alive answers written in two parts wait ~40 ms for the client's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.fake.handle(
            self.command, unquote(url.path), url.query, dict(self.headers.items()), body
        )
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def serve(fake: FakeCommercetools, host: str = "127.0.0.1", port: int = 0) -> tuple[FakeServer, str]:
    """Serve ``fake`` from a daemon thread; returns the server and its base URL (no trailing slash)."""
    server = FakeServer((host, port), fake)
    threading.Thread(target=server.serve_forever, name="fake-commercetools", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}"


def main(argv: list[str] | None = None) -> None:
    """Run the fake in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Fake commercetools API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--project-key", default="test-project")
    parser.add_argument("--client-id", default="ct-client")
    parser.add_argument("--client-secret", default="ct-secret")
    args = parser.parse_args(argv)
    fake = FakeCommercetools(args.project_key, args.client_id, args.client_secret)
    server = FakeServer((args.host, args.port), fake)
    print(f"fake commercetools on http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
