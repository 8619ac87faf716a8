"""GET /healthz: 200 exactly when a booking would work now. It goes through the
client that books (its AUTH/SELECT handshake, EVALSHA with the NOSCRIPT
fallback), reloads the scripts a restarted Redis lost, and comes back to 200 by
itself once Redis is back."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis

from app.ledger.flush_process import FlushProcess
from app.redis_server import EmbeddedRedis
from app.settings import Settings
from app.web import create_app
from tests.process import Server, walletd
from tests.redis_servers import private_redis, tls_supported

pytestmark = pytest.mark.anyio

RECOVERY_S = 5.0


@contextlib.asynccontextmanager
async def serving(settings: Settings, flush_process: FlushProcess | None = None,
                  ) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(settings, settings.redis.url, flush_process)
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
        yield c, app.state.service


def settings_for(tmp_path: Path, url: str, script_client: str = "pipelined") -> Settings:
    settings = Settings(data_dir=str(tmp_path / "var"))
    settings.flusher.enabled = False
    settings.redis.url = url
    settings.redis.script_client = script_client
    return settings


async def healthy_within(c: httpx.AsyncClient, seconds: float) -> bool:
    for _ in range(int(seconds / 0.1)):
        if (await c.get("/healthz")).status_code == 200:
            return True
        await asyncio.sleep(0.1)
    return False


@pytest.mark.slow
async def test_healthz_turns_503_when_redis_goes_away(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    settings = settings_for(tmp_path, server.start())
    try:
        async with serving(settings) as (c, _):
            assert (await c.get("/healthz")).status_code == 200
            server.stop()
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (503, "unavailable")
            fail = await c.get("/stargame", params={"cmd": "getBalance", "uid": "x"})
            assert fail.status_code == 200
            assert fail.json() == {"status": "fail", "error": "wallet unavailable"}
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.parametrize("script_client", ["pipelined", "redis-py"])
async def test_healthz_comes_back_by_itself_after_redis_restarts(tmp_path: Path, script_client: str) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    server.port = int(url.rsplit(":", 1)[1].split("/")[0])  # the restart comes back on the same address
    settings = settings_for(tmp_path, url, script_client)
    try:
        async with serving(settings) as (c, service):
            wallet = service.runtime.wallet  # type: ignore[attr-defined]
            await wallet.create_player("p1", "EUR", 1000, "DE", "en", "", [], operator_id="")
            assert (await c.get("/healthz")).status_code == 200
            server.stop()
            assert (await c.get("/healthz")).status_code == 503
            server.start()  # same data (AOF), empty script cache
            assert await healthy_within(c, RECOVERY_S)
            with contextlib.closing(redis.Redis.from_url(url)) as direct:
                assert all(direct.script_exists(*[s.sha for s in wallet.scripts.all()]))  # reloaded
            adjustment = await wallet.adjust("p1", "deposit", 500, "after-restart")
            assert (adjustment.code, adjustment.balance_minor) == ("OK", 1500)
    finally:
        server.stop()


@pytest.mark.slow
async def test_healthz_stays_200_through_script_flush_and_reloads(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    settings = settings_for(tmp_path, server.start())
    try:
        async with serving(settings) as (c, service):
            redis_py = service.runtime.redis  # type: ignore[attr-defined]
            await redis_py.script_flush()
            assert (await c.get("/healthz")).status_code == 200  # bookings work: EVAL fallback
            shas = [s.sha for s in service.runtime.wallet.scripts.all()]  # type: ignore[attr-defined]
            assert all(await redis_py.script_exists(*shas))
    finally:
        server.stop()


@pytest.mark.slow
async def test_healthz_exercises_the_booking_client_not_only_ping(tmp_path: Path) -> None:
    """An ACL user that may PING and manage scripts but not run them: nothing can be
    booked, so /healthz must say so (it used to answer 200)."""
    with private_redis(tmp_path / "redis", password="root-pw") as server:
        with contextlib.closing(redis.Redis.from_url(server.admin_url)) as root:
            root.acl_setuser("limited", enabled=True, passwords=["+limited-pw"], keys=["*"],
                             commands=["+@all", "-eval", "-evalsha"])
        settings = settings_for(tmp_path, f"redis://limited:limited-pw@127.0.0.1:{server.port}/5")
        async with serving(settings) as (c, _):
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (503, "unavailable")


@pytest.mark.slow
@pytest.mark.parametrize("script_client", ["pipelined", "redis-py"])
async def test_healthz_and_bookings_with_acl_user_and_db(tmp_path: Path, script_client: str) -> None:
    with private_redis(tmp_path / "redis", password="root-pw") as server:
        with contextlib.closing(redis.Redis.from_url(server.admin_url)) as root:
            root.acl_setuser("booker", enabled=True, passwords=["+booker-pw"], keys=["*"], commands=["+@all"])
            settings = settings_for(tmp_path, f"redis://booker:booker-pw@127.0.0.1:{server.port}/6", script_client)
            async with serving(settings) as (c, service):
                assert (await c.get("/healthz")).status_code == 200
                wallet = service.runtime.wallet  # type: ignore[attr-defined]
                await wallet.create_player("p1", "EUR", 1000, "DE", "en", "", [], operator_id="")
                assert (await wallet.adjust("p1", "deposit", 1, "r1")).code == "OK"
            assert root.info("keyspace").keys() == {"db6"}


@pytest.mark.slow
@pytest.mark.skipif(not tls_supported(), reason="needs a redis-server built with TLS and openssl")
@pytest.mark.parametrize("script_client", ["pipelined", "redis-py"])
async def test_healthz_and_bookings_over_tls(tmp_path: Path, script_client: str) -> None:
    with private_redis(tmp_path / "redis", password="root-pw", tls=True) as server:
        url = server.ready_url().replace("/0?", "/8?")
        settings = settings_for(tmp_path, url, script_client)
        async with serving(settings) as (c, service):
            assert (await c.get("/healthz")).status_code == 200
            wallet = service.runtime.wallet  # type: ignore[attr-defined]
            await wallet.create_player("p1", "EUR", 1000, "DE", "en", "", [], operator_id="")
            assert (await wallet.adjust("p1", "deposit", 1, "r1")).balance_minor == 1001
        with contextlib.closing(redis.Redis.from_url(server.ready_url())) as root:
            assert root.info("keyspace").keys() == {"db8"}



@pytest.mark.slow
def test_walletd_serve_books_with_an_acl_user_and_db_through_client_kills(tmp_path: Path) -> None:
    """A real `walletd serve`: StarGame bookings land in the URL's db as its ACL user,
    also after CLIENT KILL drops both clients' connections."""
    with private_redis(tmp_path / "redis", password="root-pw") as redis_server:
        with contextlib.closing(redis.Redis.from_url(redis_server.admin_url)) as root:
            root.acl_setuser("booker", enabled=True, passwords=["+booker-pw"], keys=["*"], commands=["+@all"])
            url = f"redis://booker:booker-pw@127.0.0.1:{redis_server.port}/4"
            # A throwaway Redis without AOF: serve needs require_durable = false for it.
            server = Server(tmp_path, url, budget_ms=10_000, redis_extra="require_durable = false\n").start()
            stargame = server.base_url + "/stargame"
            try:
                walletd(server.config, "player", "create", "p1", "--currency", "EUR", "--balance", "1000.00")
                opening = httpx.get(stargame, params={"cmd": "getBalance", "uid": "p1"}).json()["cash"]
                bet = {"cmd": "writeBet", "uid": "p1", "bet": "100", "win": "0"}
                answers = []
                for _ in range(3):
                    answers.append(httpx.get(stargame, params=bet).json())
                    root.client_kill_filter(_type="normal", skipme=True)
                    answers += [httpx.get(stargame, params=bet).json() for _ in range(3)]
                assert (httpx.get(server.base_url + "/healthz")).status_code == 200
                final = httpx.get(stargame, params={"cmd": "getBalance", "uid": "p1"}).json()["cash"]
            finally:
                server.stop()
            booked = [a for a in answers if a["status"] == "success"]
            # A kill may cost the call right after it ("wallet unavailable", nothing booked).
            assert {a["error"] for a in answers if a["status"] != "success"} <= {"wallet unavailable"}, answers
            assert len(booked) >= 9
            assert final == opening - 100 * len(booked) == booked[-1]["cash"]
            assert set(root.info("keyspace")) == {"db4"}


async def test_healthz_is_200_at_once_after_its_pooled_connection_was_closed(settings: Settings,
                                                                            sync_redis: redis.Redis) -> None:
    """A pooled connection Redis closed (CLIENT KILL, a restart, an idle timeout) is not
    Redis being away: the very next /healthz is 200, not a 503 a liveness probe acts on."""
    async with serving(settings) as (c, _):
        assert (await c.get("/healthz")).status_code == 200
        for _ in range(5):
            sync_redis.client_kill_filter(_type="normal", skipme=True)
            await asyncio.sleep(0.05)  # the event loop sees the pipelined client's close
            assert (await c.get("/healthz")).status_code == 200


@pytest.mark.slow
async def test_healthz_is_503_while_serves_flush_process_is_down(settings: Settings) -> None:
    """With one worker the flusher runs in serve's flush process: while it is dead
    (until serve restarts it) bookings pile up un-stored, and /healthz says so."""
    flush = FlushProcess()
    flush.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        async with serving(settings, flush) as (c, _):
            assert (await c.get("/healthz")).status_code == 200
            flush.process.kill()
            flush.process.wait()
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (503, "unavailable")
    finally:
        flush.process.kill()
        flush.process.wait()
