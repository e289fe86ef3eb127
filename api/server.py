"""Run an app with uvicorn: in the foreground (``omniret serve``) or in a background thread.

``BackgroundServer`` serves an app on a loopback port of its own (the socket is bound first, so there is
no race for the port), with the app's lifespan, until the ``with`` block ends. Tests, benchmarks and
notebooks use it to talk to a real HTTP server in-process.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp


class BackgroundServer:
    """``with BackgroundServer(app) as srv: httpx.get(srv.url + "/healthz")``."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 startup_timeout: float = 60.0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._sock = sock
        config = uvicorn.Config(self.app, lifespan="on", log_level=self.log_level, access_log=False,
                                timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"uvicorn-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server stopped during startup; see the log above")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not start within {self.startup_timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(30)
        if self._sock is not None:
            self._sock.close()
        self._server = self._thread = self._sock = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
