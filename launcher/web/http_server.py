"""The HTTP port of `rankitect serve --http-port`: a threaded stdlib server over `JsonApi`.

One thread per connection (daemon threads: a stop never waits for an idle keep-alive
connection); TLS with the gRPC port's certificate and key when the server has them. A request's
body is read (up to MAX_BODY_BYTES) and ignored: no route takes one.
"""

from __future__ import annotations

import logging
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from launcher.web.api import JsonApi, Reply
from rankitect.errors import UserError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


class _Handler(BaseHTTPRequestHandler):
    server_version = "rankitect"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    api: JsonApi  # set on the subclass made per server

    def _serve(self, method: str) -> None:
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            self._send(Reply(413, b'{"error":{"code":"PAYLOAD_TOO_LARGE","message":"request body over 64 KiB"}}'))
            return
        if int(length):
            self.rfile.read(int(length))  # no route takes a body; read, so the connection can be reused
        path, _, query = self.path.partition("?")
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._send(self.api.handle(method, path, query, headers))

    def do_GET(self) -> None:  # noqa: N802 (BaseHTTPRequestHandler's names)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, (bytes, bytearray)):
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.end_headers()  # an artifact: its Content-Length is in reply.headers
        try:
            for chunk in reply.body:
                self.wfile.write(chunk)
        finally:
            reply.body.close()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        log.debug("http %s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    """TLS, when `tls` is set, per connection in its own thread (a slow handshake holds no other)."""

    tls: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:  # noqa: ANN001 (socketserver's signature)
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("http %s: TLS handshake failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)


class HttpPort:
    """`JsonApi` served on host:port (port 0: a free one; `port` tells which once built)."""

    def __init__(self, api: JsonApi, host: str, port: int, tls_cert: Path | None = None,
                 tls_key: Path | None = None) -> None:
        handler = type("Handler", (_Handler,), {"api": api})
        try:
            self.server = _Server((host.strip("[]"), port), handler)
        except OSError as exc:
            raise UserError(f"--http-port {port}: cannot listen on {host}:{port}: {exc.strerror}") from None
        self.server.daemon_threads = True
        self.tls = tls_cert is not None and tls_key is not None
        if self.tls:
            self.server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.server.tls.load_cert_chain(str(tls_cert), str(tls_key))
        self.host, self.port = host, self.server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, name="rankitect-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10)
        self.server.server_close()
