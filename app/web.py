"""The Starlette application: routes, start-up and shutdown."""

from __future__ import annotations

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
from app.admin_listener import admin_listener
from app.callback_meter import Endpoint, metered
from app.callbacks import Callbacks
from app.errors import WalletCallError
from app.ledger.flush_process import FlushProcess
from app.ledger.guard import SERVER_ROLE
from app.logsafe import limit_server_logs
from app.metrics import Exporter, LedgerBacklog
from app.protocols.oia.handler import PING, Oia
from app.protocols.stargame.handler import StarGame
from app.proxies import ForwardedClient, behind_proxies
from app.redis_cluster_pipe import ClusterPipelinedRedis
from app.runtime import Runtime
from app.settings import Settings, replica_wait_ms

log = logging.getLogger("walletd.web")

# A request allocates a few hundred short-lived objects; the default gen-0
# threshold (700) runs a collection every couple of requests, and a full one
# walks every long-lived object: measured as p99 tail (README "Benchmarks").
GC_GEN0_THRESHOLD = 50_000
# Whose balance /healthz reads through the booking client: any id will do (read only).
HEALTH_PLAYER = "healthz"


class Service:
    """What one server process holds (its Runtime) and the routes it serves."""

    def __init__(self, settings: Settings, redis_url: str, flush_process: FlushProcess | None = None) -> None:
        self.settings = settings
        self.flush_process = flush_process  # serve's, when the flusher runs beside this process
        self.runtime = Runtime(settings, redis_url, serving=True, ledger=settings.flusher.enabled)
        rt = self.runtime
        assert rt.journal is not None
        wait_ms = replica_wait_ms(settings.redis)
        self.stargame = StarGame(rt.wallet, settings.stargame, rt.journal, rt.redis_link, rt.guard, wait_ms=wait_ms)
        self.oia = Oia(rt.oia_wallet, settings.oia, rt.redis_link, rt.guard, wait_ms=wait_ms)
        self.admin = Admin(rt.oia_wallet, settings.oia, settings.admin, rt.guard)
        self.health_problem = ""  # the last probe's, so each change is logged once
        self.degraded = ""  # Redis Cluster: the primaries that do not answer (the others serve)
        exported = self.runtime.metrics
        self.exporter = None if exported is None else Exporter(exported, LedgerBacklog(rt.redis, rt.wallet.keys))

    async def start(self) -> None:
        await self.runtime.start()  # Redis behind the ledger store: serves refusals, no failure
        self.runtime.start_guard(SERVER_ROLE)
        if self.runtime.flusher is not None:
            self.runtime.start_background()
        self.runtime.start_metrics()
        settle_garbage_collector()

    async def stop(self) -> None:
        await self.runtime.close()

    async def healthz(self, request: Request) -> Response:
        """200 when a booking would work now: Redis answers redis-py (aliases, flusher)
        and a read-only script through the client that books (its handshake, its
        connection, EVALSHA with the NOSCRIPT fallback), and the flusher runs (in
        this process, or as serve's flush process); 503 with the reason while the
        cold-start guard refuses (Redis behind the ledger store).
        Scripts Redis lost in a restart are loaded again here."""
        refusal = self.runtime.guard.refusal
        if refusal:  # the guard logs it (with what to run) itself
            return PlainTextResponse(f"unavailable: {refusal}", status_code=503)
        problem = await self.booking_problem()
        if problem != self.health_problem:
            if problem:
                log.warning("healthz: unavailable: %s", problem)
            else:
                log.info("healthz: ok again")
            self.health_problem = problem
        if problem:
            return PlainTextResponse("unavailable", status_code=503)
        return PlainTextResponse(f"ok (degraded: {self.degraded})" if self.degraded else "ok")

    async def metrics(self, request: Request) -> Response:
        assert self.exporter is not None, "routed only with metrics on"
        body, content_type = await self.exporter.render(request.headers.get("accept", ""))
        return Response(body, headers={"content-type": content_type})

    async def ping(self) -> None:
        """redis-py's PING, once more after a connection error: a pooled connection that
        Redis closed (restart, CLIENT KILL, idle timeout) fails once and is then replaced,
        which says nothing about whether Redis is there now. PING moves nothing."""
        try:
            await self.runtime.redis.ping()
        except (RedisConnectionError, RedisTimeoutError):
            await self.runtime.redis.ping()

    async def booking_problem(self) -> str:
        try:
            await self.ping()
            wallet = self.runtime.wallet
            if isinstance(wallet.script_client, ClusterPipelinedRedis):
                problem = await self.cluster_problem(wallet.script_client)
                if problem:
                    return problem
            else:
                await wallet.scripts.balance(keys=[wallet.keys.account(HEALTH_PLAYER)])
                await wallet.scripts.reload_missing(wallet.redis)
        except (RedisError, OSError, WalletCallError) as exc:
            return f"{type(exc).__name__}: {exc}"
        flusher_task = self.runtime.flusher_task
        if flusher_task is not None and flusher_task.done():
            return "the flusher stopped"  # bookings would pile up un-stored
        if self.flush_process is not None and not self.flush_process.alive():
            return "the flusher process is not running (serve restarts it)"
        return ""


    async def cluster_problem(self, client: ClusterPipelinedRedis) -> str:
        """On Redis Cluster: a problem only when no primary answers. Every instance sees a
        primary that is down alike, so answering 503 for it would take every instance out
        of a load balancer, a whole outage for a third of the partitions; the body says it
        (README "Scaling out"). Scripts a primary lost are loaded again on those answering."""
        answering, down = await client.answering_primaries()
        self.degraded = "; ".join(f"primary {address} does not answer ({why}): its partitions are refused"
                                  for address, why in sorted(down.items()))
        if not answering:
            return f"no primary of the cluster answers: {self.degraded}"
        for address in answering:
            await client.load_on(address, only_missing=True)
        return ""


def settle_garbage_collector() -> None:
    """Start-up objects (modules, settings, scripts) move to a permanent generation
    that collections never walk; gen 0 is collected far less often."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def create_app(settings: Settings, redis_url: str,
               flush_process: FlushProcess | None = None) -> Callbacks | ForwardedClient:
    limit_server_logs()  # any client can make uvicorn log: one line per kind per minute
    service = Service(settings, redis_url, flush_process)

    main_routes, admin_routes = route_tables(service)
    proxies = settings.server.forwarded_allow_ips
    admin_app = behind_proxies(Starlette(routes=admin_routes), proxies) if admin_routes else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:  # a failed start still closes what the runtime built
            await service.start()
            async with admin_listener(settings, admin_app):  # after the start: it shares the runtime
                yield
        finally:
            await service.stop()

    app = Starlette(routes=main_routes, lifespan=lifespan)
    app.state.service = service
    # The platforms' callbacks are served by the raw path only (app/callbacks.py), counted there.
    exported = service.runtime.metrics
    callbacks = Callbacks(app, [*service.oia.callbacks(), *service.stargame.callbacks()], metered=exported is not None)
    if exported is not None:
        exported.count_callbacks(callbacks.meters())
    return behind_proxies(callbacks, proxies)


def route_tables(service: Service) -> tuple[list[Route], list[Route]]:
    """Every Starlette route, in one place: (the main listener's, the admin listener's).
    /healthz is served on both; the admin API and /metrics on the admin listener when
    admin.port is set (README "Admin listener"), then 404 on the main one (a scrape
    costs tens of ms of the worker's CPU, not for anyone who reaches the callbacks to
    repeat); else beside the callbacks and no admin listener (an empty table)."""
    settings = service.settings
    health = Route("/healthz", service.healthz, methods=["GET"])
    ping: Endpoint = service.oia.ping
    admin = [
        Route("/admin/players", service.admin.players, methods=["POST"]),
        Route("/admin/sessions", service.admin.sessions, methods=["POST"]),
    ]
    if service.runtime.metrics is not None:
        admin.append(Route("/metrics", service.metrics, methods=["GET"]))
        ping = metered(service.oia.meter, PING, "OK", ping)  # a platform's callback like the others
    platform = [health, Route(f"{settings.oia.path}/ping", ping, methods=["GET"])]
    if settings.admin.port:
        return platform, [health, *admin]
    return [*platform, *admin], []


def worker_app() -> Callbacks | ForwardedClient:
    """One of several server processes (server.workers > 1): settings from the
    environment the supervisor set; the supervisor runs the one flusher. Its log is
    configured by uvicorn, from serve's log_config (app/logformat.py)."""
    settings = config.load(None)
    settings.flusher.enabled = False
    return create_app(settings, settings.redis.url)
