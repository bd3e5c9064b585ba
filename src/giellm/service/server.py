"""Running the app: `giellm serve` (uvicorn, graceful shutdown within a bound) and a
background server on a free loopback port (for the report's few-shot baseline and tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from giellm.errors import GiellmError
from giellm.service.batching import Batcher

MAX_CONNECTIONS = 1024
HEADER_SECONDS = 10.0  # a connection's next request must have sent its headers by then


def bounded_h11(header_seconds: float) -> type[Any]:
    """uvicorn's h11 protocol with a deadline for each request's headers.

    uvicorn closes a keep-alive connection that idles between requests, but never a fresh one
    that sends nothing, nor one whose headers never end: each held a slot for ever. Here a
    connection still waiting for a request's headers `header_seconds` after it opened (or after
    its last answer) is closed; a slow body is `BodyLimit`'s (408)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class BoundedH11(H11Protocol):
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_seconds, self._overdue)

        def _overdue(self) -> None:
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.timeout_keep_alive_handler()  # closes it, as an idle keep-alive

    return BoundedH11


def _config(app: FastAPI, host: str, port: int, header_seconds: float, **more: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=bounded_h11(header_seconds),
        timeout_keep_alive=5,  # an idle keep-alive connection is closed after 5 s
        limit_concurrency=MAX_CONNECTIONS,  # more open at once get 503, not a slow death
        **more,
    )


def run_server(
    app: FastAPI,
    *,
    host: str,
    port: int,
    grace_seconds: int = 60,
    header_seconds: float = HEADER_SECONDS,
) -> None:
    """Serve until SIGINT/SIGTERM, answer every accepted request within `grace_seconds`
    (finished, or 503 before its work starts), then return normally."""
    import uvicorn

    batcher: Batcher = app.state.batcher
    # the batcher's own deadline leaves room for the last batch's answers to be written
    # before uvicorn cancels whatever is left at `grace_seconds`
    batcher_deadline = max(0.5 * grace_seconds, min(0.9 * grace_seconds, grace_seconds - 2))

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            batcher.begin_shutdown(batcher_deadline)
            super().handle_exit(sig, frame)
            # uvicorn re-raises the signal once shut down, turning a clean stop into a
            # KeyboardInterrupt traceback or a kill; the shutdown already was graceful
            self._captured_signals.clear()

    config = _config(app, host, port, header_seconds, timeout_graceful_shutdown=grace_seconds)
    _Server(config).run()


@contextmanager
def background_server(
    app: FastAPI, *, host: str = "127.0.0.1", header_seconds: float = HEADER_SECONDS
) -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port, header_seconds, log_level="warning"))
    thread = threading.Thread(target=server.run, name="giellm-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise GiellmError(f"the local server on {host}:{port} did not start")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
