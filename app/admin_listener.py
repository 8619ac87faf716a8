"""The admin API on a listener of its own (admin.port != 0; README "Admin listener").

A second uvicorn server in a server process's own event loop, started by the main
app's lifespan once the process's Service has started, and stopped at its end: it
shares the process's Runtime (Redis clients, guard) with the callbacks, and never
answers before they could.

Exactly one server process runs it: the one holding data_dir/admin-listener.lock.
With one worker that is serve's process; with several, whichever worker started
first. A worker that dies releases the lock with its life, and uvicorn's supervisor
starts its replacement, which takes it (the other workers' never ask again). One
socket, bound without SO_REUSEPORT, so a second walletd on the same port is refused
as for the main listener, and serve checks the port is free before it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from app.settings import Settings

log = logging.getLogger("walletd.admin")

# Under data_dir: held by the one server process that serves the admin listener.
LOCK_FILE = "admin-listener.lock"


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening as uvicorn binds its own (SO_REUSEADDR): connections queue from now on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


@contextlib.contextmanager
def claimed(settings: Settings) -> Iterator[bool]:
    """Whether this process holds the lock (for as long as the with-block lasts)."""
    fd = os.open(settings.data_path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # releases the lock


@contextlib.asynccontextmanager
async def admin_listener(settings: Settings, app: Any) -> AsyncIterator[None]:
    """Serves app on admin.host:admin.port for the with-block's life; app None: nothing."""
    with claimed(settings) if app is not None else contextlib.nullcontext(False) as ours:
        if not ours:
            yield
            return
        server = listener(settings, app)
        sock = listening_socket(settings.admin.host, settings.admin.port)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        log.info("admin API on %s://%s:%d (pid %d)", "https" if server.config.is_ssl else "http",
                 settings.admin.host, settings.admin.port, os.getpid())
        try:
            yield
        finally:
            server.should_exit = True  # it finishes its in-flight requests, as the main listener did
            await task


def listener(settings: Settings, app: Any) -> Any:
    # Only `walletd serve` loads the HTTP stack (app/serve.py run_http).
    import uvicorn  # noqa: PLC0415

    class Listener(uvicorn.Server):
        """The process's main uvicorn server owns SIGINT/SIGTERM; this one stops by should_exit."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    server = settings.server
    # log_config None: logging is already set up for the process; loading it again would reset it.
    config = uvicorn.Config(
        app, http="httptools", lifespan="off", proxy_headers=False, log_config=None,
        access_log=settings.log.access_log, timeout_graceful_shutdown=server.shutdown_timeout_s,
        ssl_certfile=server.ssl_certfile or None, ssl_keyfile=server.ssl_keyfile or None)
    config.load()  # a TLS file that cannot be loaded fails here, in the lifespan's start
    return Listener(config)
