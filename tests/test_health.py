"""GET /healthz: 200 while Redis answers with the scripts loaded, 503 otherwise."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.redis_server import EmbeddedRedis
from app.settings import Settings
from app.web import create_app

pytestmark = pytest.mark.anyio


async def test_healthz_turns_503_when_redis_goes_away(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path)
    settings = Settings(data_dir=str(tmp_path))
    settings.flusher.enabled = False
    settings.redis.url = server.start()
    try:
        app = create_app(settings, settings.redis.url)
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://w") as c:
            assert (await c.get("/healthz")).status_code == 200
            redis = app.state.service.redis
            await redis.script_flush()
            assert (await c.get("/healthz")).status_code == 503  # scripts gone
            await app.state.service.wallet.scripts.load(redis)
            assert (await c.get("/healthz")).status_code == 200
            server.stop()
            r = await c.get("/healthz")
            assert (r.status_code, r.text) == (503, "unavailable")
            fail = await c.get("/stargame", params={"cmd": "getBalance", "uid": "x"})
            assert fail.status_code == 200
            assert fail.json() == {"status": "fail", "error": "wallet unavailable"}
    finally:
        server.stop()
