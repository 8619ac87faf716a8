"""The Starlette application: routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from redis.exceptions import ConnectionError as RedisConnectionError, RedisError, TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app import settings as config
from app.admin import Admin
from app.asgi import HotPaths
from app.errors import WalletCallError
from app.ledger.flusher import Flusher
from app.ledger import open_store
from app.logsafe import limit_server_logs
from app.protocols.oia.handler import Oia
from app.protocols.oia.wallet import OiaWallet
from app.protocols.stargame.reconciler import Reconciler
from app.redis_client import connect, script_client
from app.settings import Settings
from app.protocols.stargame.handler import StarGame
from app.protocols.stargame.journal import Journal, directory_of
from app.wallet import Wallet

log = logging.getLogger("walletd.web")

# A request allocates a few hundred short-lived objects; the default gen-0
# threshold (700) runs a collection every couple of requests, and a full one
# walks every long-lived object: measured as p99 tail (README "Benchmarks").
GC_GEN0_THRESHOLD = 50_000
# Whose balance /healthz reads through the booking client: any id will do (read only).
HEALTH_PLAYER = "healthz"


class Service:
    """What one server process holds: the Redis client, the wallet, the flusher."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.redis = connect(redis_url, settings.redis)
        self.script_client = script_client(redis_url, settings.redis, self.redis)
        self.wallet = Wallet(self.redis, settings.wallet, self.script_client)
        sg = settings.stargame
        self.journal = Journal(directory_of(settings.data_path), sg.journal_notes_per_file, sg.journal_files_max)
        self.stargame = StarGame(self.wallet, sg, self.journal)
        self.oia_wallet = OiaWallet(self.wallet, settings.oia, settings.storage_url)
        self.oia = Oia(self.oia_wallet, settings.oia)
        self.admin = Admin(self.oia_wallet, settings.oia, settings.admin)
        self.flusher: Flusher | None = None
        self.flusher_task: asyncio.Task | None = None
        self.health_problem = ""  # the last probe's, so each change is logged once
        self.reconciler: Reconciler | None = None
        self.reconciler_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.wallet.start()
        await self.oia_wallet.start()
        if self.settings.flusher.enabled:
            store = open_store(self.settings.storage_url)
            self.flusher = Flusher(self.redis, store, self.wallet.keys, self.settings.flusher)
            self.flusher_task = asyncio.create_task(self.flusher.run(), name="flusher")
            # The reconciler lives with the flusher: one per deployment's data_dir.
            self.reconciler = Reconciler(self.wallet.scripts, self.wallet.keys, self.settings.stargame,
                                         directory_of(self.settings.data_path))
            self.reconciler_task = asyncio.create_task(self.reconciler.run(), name="reconciler")
        settle_garbage_collector()

    async def stop(self) -> None:
        if self.reconciler is not None and self.reconciler_task is not None:
            self.reconciler.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self.reconciler_task, timeout=10)
        self.journal.close()
        if self.flusher is not None and self.flusher_task is not None:
            self.flusher.request_exit()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await asyncio.wait_for(self.flusher_task, timeout=10)
            self.flusher.close()
            self.flusher.store.close()
        self.oia_wallet.store.close()
        if self.script_client is not self.redis:
            await self.script_client.aclose()
        await self.redis.aclose()

    async def healthz(self, request: Request) -> Response:
        """200 when a booking would work now: Redis answers redis-py (aliases, flusher)
        and a read-only script through the client that books (its handshake, its
        connection, EVALSHA with the NOSCRIPT fallback), and the flusher runs.
        Scripts Redis lost in a restart are loaded again here."""
        problem = await self.booking_problem()
        if problem != self.health_problem:
            if problem:
                log.warning("healthz: unavailable: %s", problem)
            else:
                log.info("healthz: ok again")
            self.health_problem = problem
        return PlainTextResponse("unavailable" if problem else "ok", status_code=503 if problem else 200)

    async def ping(self) -> None:
        """redis-py's PING, once more after a connection error: a pooled connection that
        Redis closed (restart, CLIENT KILL, idle timeout) fails once and is then replaced,
        which says nothing about whether Redis is there now. PING moves nothing."""
        try:
            await self.redis.ping()
        except (RedisConnectionError, RedisTimeoutError):
            await self.redis.ping()

    async def booking_problem(self) -> str:
        try:
            await self.ping()
            await self.wallet.scripts.balance(keys=[self.wallet.keys.account(HEALTH_PLAYER)])
            await self.wallet.scripts.reload_missing(self.redis)
        except (RedisError, OSError, WalletCallError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if self.flusher_task is not None and self.flusher_task.done():
            return "the flusher stopped"  # bookings would pile up un-stored
        return ""


def settle_garbage_collector() -> None:
    """Start-up objects (modules, settings, scripts) move to a permanent generation
    that collections never walk; gen 0 is collected far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def create_app(settings: Settings, redis_url: str) -> HotPaths:
    limit_server_logs()  # any client can make uvicorn log: one line per kind per minute
    service = Service(settings, redis_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        Route("/healthz", service.healthz, methods=["GET"]),
        Route(settings.stargame.path, service.stargame.endpoint, methods=["GET"]),
        Route(f"{settings.oia.path}/ping", service.oia.ping, methods=["GET"]),
        Route("/admin/players", service.admin.players, methods=["POST"]),
        Route("/admin/sessions", service.admin.sessions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    # POST <oia.path>/<command> is served by the raw path only (app/asgi.py).
    return HotPaths(app, {}, f"{settings.oia.path}/", service.oia.handle)


def worker_app() -> HotPaths:
    """One of several server processes (server.workers > 1): settings from the
    environment the supervisor set; the supervisor runs the one flusher."""
    settings = config.load(None)
    settings.flusher.enabled = False
    return create_app(settings, settings.redis.url)
