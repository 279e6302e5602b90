"""A loopback HTTP server for feed tests: per-path bodies, ETag/Last-Modified, redirects, and
hostile answers (a body dripped a byte at a time, a huge body, a pre-encoded gzip bomb)."""

from __future__ import annotations

import functools
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@functools.cache
def gzip_bomb(decoded_mb: int = 400) -> bytes:
    """A gzip body of zeros: about 400 KB that decodes to ``decoded_mb`` MB (built once)."""
    deflater = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1 << 20)
    return b"".join([*(deflater.compress(zeros) for _ in range(decoded_mb)), deflater.flush()])


@dataclass
class Route:
    """What one path answers: a body with validators, or a bare status (with a Location)."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/rss+xml; charset=utf-8"
    etag: str | None = None
    last_modified: str | None = None
    location: str | None = None
    # Hostile answers: a pause before each byte of the body; the body sent this many times
    # over (streamed, never held whole); a Content-Encoding header for a body encoded already.
    drip_s: float | None = None
    repeat: int = 1
    content_encoding: str | None = None
    # False: no Content-Length; the body ends when the connection closes.
    declare_length: bool = True


@dataclass
class FeedServer:
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        # shutdown() at each test's end waits up to one poll interval (0.5 s by default).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def serve(self, path: str, route: Route) -> None:
        with self._lock:
            self.routes[path] = route

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((handler.path, dict(handler.headers.items())))
            route = self.routes.get(handler.path, Route(status=404, body=b"not found"))
        fresh = (route.etag and handler.headers.get("If-None-Match") == route.etag) or (
            route.last_modified and handler.headers.get("If-Modified-Since") == route.last_modified
        )
        status = 304 if route.status == 200 and fresh else route.status
        handler.send_response(status)
        for name, value in (
            ("ETag", route.etag),
            ("Last-Modified", route.last_modified),
            ("Location", route.location),
            ("Content-Encoding", route.content_encoding),
        ):
            if value:
                handler.send_header(name, value)
        body = b"" if status == 304 else route.body
        handler.send_header("Content-Type", route.content_type)
        if route.declare_length:
            handler.send_header("Content-Length", str(len(body) * route.repeat))
        handler.end_headers()
        try:
            self._send_body(handler, body, route)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up (its deadline or size cap): what the tests want

    def _send_body(self, handler: BaseHTTPRequestHandler, body: bytes, route: Route) -> None:
        if route.drip_s is not None:
            for byte in body:
                if self._stopping.wait(route.drip_s):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            return
        for _ in range(route.repeat):
            if self._stopping.is_set():
                return
            handler.wfile.write(body)
