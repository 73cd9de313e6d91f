"""Run the HTTP API with uvicorn on a socket bound here, so the real address (`--port 0` picks a free
port) is known and printed before the first request, and SIGTERM / Ctrl-C drain in-flight requests and
end the process with status 0.

Every connection is held to a deadline: a client has `request_timeout` seconds from connecting (or from
its last answer) to send a whole request, headers and body, or the connection is closed; so idle, slow-
header and half-sent-body connections cannot pile up or keep a shutdown waiting. The shutdown itself
waits at most `shutdown_timeout` seconds from the signal for requests in flight, a model call that is
still running included: past it, `serve` returns the requests left unfinished, and `adept serve` names
them and exits with status 1 (the model call cannot be interrupted, so the process ends around it)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import AdeptError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
GRACE = 5.0  # seconds past the shutdown deadline for the requests it ended to be answered


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


def _deadline_protocol(request_timeout: float) -> type:
    """uvicorn's h11 protocol with a deadline on reading each request (uvicorn has none before the first
    request of a connection, and none on a body)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineH11Protocol(H11Protocol):
        deadline: Any = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self.conn.their_state is not h11.SEND_BODY:
                self._disarm()  # the whole request is in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self.deadline = self.loop.call_later(request_timeout, self._expire)

        def _disarm(self) -> None:
            if self.deadline is not None:
                self.deadline.cancel()
                self.deadline = None

        def _expire(self) -> None:
            self.deadline = None
            if not self.transport.is_closing():
                self.transport.close()  # a request waiting for the rest of its body sees a disconnect

    return DeadlineH11Protocol


def serve(
    app: Any,
    sock: socket.socket,
    on_ready: Callable[[str], None],
    log_level: str = "warning",
    request_timeout: float = 30.0,
    shutdown_timeout: float = 60.0,
) -> list[Any]:
    """Serve `app` on `sock` until SIGTERM or SIGINT, then drain for at most `shutdown_timeout` seconds
    from the signal, a model call still running included, and return the jobs left unfinished (none when
    everything finished in time)."""
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        http=_deadline_protocol(request_timeout),
        # uvicorn's own limit, a backstop: at the deadline the requests still waiting are answered (503)
        timeout_graceful_shutdown=shutdown_timeout + GRACE,
        access_log=False,
    )
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
    handle_exit = server.handle_exit

    def exit_by(sig: int, frame: Any) -> None:  # the deadline counts from the first signal
        if app.state.shutdown_deadline is None:
            app.state.shutdown_deadline = time.monotonic() + shutdown_timeout
            deadline = threading.Timer(shutdown_timeout, app.state.abandon)
            deadline.daemon = True
            deadline.start()
        handle_exit(sig, frame)

    server.handle_exit = exit_by
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise ServeError("the server did not start (see the log above)")
    return list(app.state.dropped)
