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


def run_server(app: FastAPI, *, host: str, port: int, grace_seconds: int = 60) -> None:
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

    config = uvicorn.Config(app, host=host, port=port, timeout_graceful_shutdown=grace_seconds)
    _Server(config).run()


@contextmanager
def background_server(app: FastAPI, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn on a free loopback port in a thread; yields its base URL."""
    import socket
    import threading

    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
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
