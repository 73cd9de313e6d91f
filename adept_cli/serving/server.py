"""Run the HTTP API with uvicorn on a socket bound here, so the real address (`--port 0` picks a free
port) is known and printed before the first request, and SIGTERM / Ctrl-C drain in-flight requests and
end the process with status 0."""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from typing import Any

from ..errors import AdeptError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeError(AdeptError, OSError):
    """The server cannot start (the address is taken, the host unknown)."""


def bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ServeError(f"--host {host}: cannot resolve it ({error.strerror})") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: Any, sock: socket.socket, on_ready: Callable[[str], None], log_level: str = "warning") -> None:
    """Serve `app` on `sock` until SIGTERM or SIGINT, then drain and return."""
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=None, access_log=False)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers in place
    # that re-raise is a no-op, so a drained server exits 0 instead of dying by the signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        if server.started:
            on_ready(url_of(sock))

    server.startup = startup
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError("the server did not start (see the log above)")
