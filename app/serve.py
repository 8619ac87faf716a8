"""`walletd serve`: one instance per data_dir, start-up checks, the HTTP server, a clean stop.

Order on the way in: the data_dir lock, Redis (the embedded one started and
supervised), checks (ledger store, Redis reachable and durable, partitions);
only then the HTTP server. On SIGINT or SIGTERM, the way out is the reverse:
uvicorn stops accepting and lets in-flight callbacks finish, then the flush
process is stopped, then the embedded Redis is shut down (AOF fsynced).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
from redis.exceptions import RedisError

from app import metrics, redis_durability, settings as config
from app.admin_listener import listening_socket
from app.instance import single_instance
from app.ledger import open_store
from app.ledger.flush_process import FlushProcess
from app.logformat import log_config
from app.logsafe import without_passwords
from app.redis_pipe import redacted
from app.redis_server import served_redis_url
from app.redis_topology import ENV_CLUSTER, cluster_mode
from app.runtime import Runtime
from app.settings import Settings


class StartupError(Exception):
    pass


def stop_requested(signum: int, frame: FrameType | None) -> None:
    # Outside uvicorn's own handlers (start-up, and after its graceful shutdown,
    # when it re-raises the signal): exit 0 through the with-blocks, which stop
    # Redis. Further signals are ignored so they cannot cut that short.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(0)


def serve(settings: Settings, config_path: str | None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_requested)
    with single_instance(settings.data_path), contextlib.ExitStack() as stack:
        try:
            open_store(settings.storage_url).close()  # before Redis: a wrong URL is the whole output
            url = stack.enter_context(served_redis_url(settings.redis.url, settings.data_path, settings.redis.port,
                                                       settings.log.redis_relayed))
            # Asked once, here: the children start as this process decided (app/redis_topology.py).
            settings.redis.cluster = cluster_mode(url, settings.redis)
            asyncio.run(preflight(settings, url))
        except Exception as exc:  # noqa: BLE001 - any start-up failure is one line and exit 2
            raise StartupError(without_passwords(str(exc) or type(exc).__name__)) from None
        run_http(settings, config_path, url)
    return 0


async def preflight(settings: Settings, url: str) -> None:
    """What the lifespan would fail on, checked first so that it fails as one line."""
    runtime = Runtime(settings, url, ledger=True)  # for its ledger store; nothing runs
    try:
        try:
            await runtime.redis.ping()
        except RedisError as exc:  # its own text does not say it is Redis ("DB index is out of range")
            raise RuntimeError(f"cannot use Redis at {redacted(url)}: {exc}") from exc
        await redis_durability.check(runtime.redis, settings.redis.require_durable)
        # A Redis behind the ledger store is no start-up failure: the server starts and
        # refuses every callback until `walletd rebuild` has restored it (app/ledger/guard.py).
        await runtime.start()
        await check_consumer(runtime)
    finally:
        await runtime.close()


async def check_consumer(runtime: Runtime) -> None:
    """Another instance sharing this Redis holds our flusher's consumer name: refused
    (app/ledger/consumers.py). Only read: the flusher takes the lease once it may write."""
    flusher = runtime.flusher
    if not runtime.settings.flusher.enabled or flusher is None or flusher.lease is None:
        return
    holder = await flusher.lease.holder()
    if holder is not None:
        raise RuntimeError(flusher.lease.refusal(holder))


def run_http(settings: Settings, config_path: str | None, url: str) -> None:
    # Only `walletd serve` loads the HTTP stack; the other commands start without it.
    import uvicorn  # noqa: PLC0415

    from app.web import create_app  # noqa: PLC0415

    server = settings.server
    # proxy_headers off: uvicorn would believe X-Forwarded-For from its own list of
    # proxies; walletd applies server.forwarded_allow_ips itself (app/proxies.py).
    options: dict[str, Any] = {
        "host": server.host, "port": server.port, "loop": "uvloop", "http": "httptools",
        "proxy_headers": False, "lifespan": "on",
        # In-flight callbacks get this long after SIGINT/SIGTERM; each answers within its budget.
        "timeout_graceful_shutdown": server.shutdown_timeout_s,
        "ssl_certfile": server.ssl_certfile or None, "ssl_keyfile": server.ssl_keyfile or None,
        # uvicorn's lines in walletd's format, in every worker; no handler or format of its own.
        "access_log": settings.log.access_log, "log_config": log_config(settings.log),
    }
    check_admin_port(settings)
    # Children (the flush process, uvicorn's workers) read the same settings and this Redis,
    # and write their metrics where this process reads them.
    os.environ["WALLETD_REDIS_URL"] = url
    os.environ[ENV_CLUSTER] = "true" if settings.redis.cluster is True else "false"
    metrics.use_directory(settings)
    if config_path:
        os.environ[config.ENV_CONFIG] = str(Path(config_path).resolve())
    # The flusher and the StarGame reconciler run in one supervised `walletd flush`
    # process, whatever the number of workers: in the request process they took
    # its GIL and event loop from the callbacks (README "Benchmarks"). With
    # flusher.enabled = false (another instance stores the ledger) it runs the reconciler
    # alone: this instance's journal, under its data_dir, is settled by no one else.
    flusher = FlushProcess(reconcile_only=not settings.flusher.enabled)
    flusher.start()  # supervised: restarted whenever it dies, stopped after the HTTP server
    try:
        if settings.server.workers == 1:
            served = msgspec.structs.replace(settings, flusher=msgspec.structs.replace(settings.flusher, enabled=False))
            uvicorn.run(create_app(served, url, flush_process=flusher), **options)
        else:
            uvicorn.run("app.web:worker_app", factory=True, workers=settings.server.workers, **options)
    except SystemExit as exc:
        if exc.code not in (0, None):  # uvicorn: 1 = cannot bind, 3 = lifespan start-up failed
            raise StartupError(f"the HTTP server on {server.host}:{server.port} "
                               f"did not start (the reason is logged above)") from None
        raise
    finally:
        flusher.stop()


def check_admin_port(settings: Settings) -> None:
    """The admin listener's port is free (one line, before anything starts), or
    raises; the server process that serves it binds it again (app/admin_listener.py)."""
    if not settings.admin.port:
        return
    try:
        listening_socket(settings.admin.host, settings.admin.port).close()
    except OSError as exc:
        raise StartupError(f"the admin listener on {settings.admin.host}:{settings.admin.port} "
                           f"cannot listen: {exc.strerror or exc}") from None
