"""The Starlette application: routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from app import settings as config
from app.admin import Admin
from app.asgi import HotPaths
from app.flusher import Flusher
from app.ledger import open_store
from app.oia import Oia
from app.oia_wallet import OiaWallet
from app.redis_client import connect, script_client
from app.settings import Settings
from app.stargame import StarGame
from app.wallet import Wallet

log = logging.getLogger("walletd.web")

# A request allocates a few hundred short-lived objects; the default gen-0
# threshold (700) runs a collection every couple of requests, and a full one
# walks every long-lived object: measured as p99 tail (README "Benchmarks").
GC_GEN0_THRESHOLD = 50_000


class Service:
    """What one server process holds: the Redis client, the wallet, the flusher."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.redis = connect(redis_url, settings.redis)
        self.script_client = script_client(redis_url, settings.redis, self.redis)
        self.wallet = Wallet(self.redis, settings.wallet, self.script_client)
        self.stargame = StarGame(self.wallet, settings.stargame)
        self.oia_wallet = OiaWallet(self.wallet, settings.oia, settings.storage_url)
        self.oia = Oia(self.oia_wallet, settings.oia)
        self.admin = Admin(self.oia_wallet, settings.oia, settings.admin)
        self.flusher: Flusher | None = None
        self.flusher_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.wallet.start()
        if self.settings.flusher.enabled:
            store = open_store(self.settings.storage_url)
            self.flusher = Flusher(self.redis, store, self.wallet.keys, self.settings.flusher)
            self.flusher_task = asyncio.create_task(self.flusher.run(), name="flusher")
        settle_garbage_collector()

    async def stop(self) -> None:
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
        try:
            await self.redis.ping()
            ready = await self.wallet.scripts.loaded(self.redis)
        except (RedisError, OSError):
            ready = False
        if self.flusher_task is not None and self.flusher_task.done():
            ready = False  # a dead flusher means bookings pile up un-stored
        return PlainTextResponse("ok" if ready else "unavailable", status_code=200 if ready else 503)


def settle_garbage_collector() -> None:
    """Start-up objects (modules, settings, scripts) move to a permanent generation
    that collections never walk; gen 0 is collected far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def create_app(settings: Settings, redis_url: str) -> HotPaths:
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
