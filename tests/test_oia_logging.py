"""What OIA requests can make walletd log (issue 9 item 6): no forged lines, no
secrets, and no flood on demand."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
import redis

from app.logsafe import RateLimitedLog
from app.protocols.oia import handler as oia
from app.settings import Settings
from tests.oia_calls import call, change, envelope, error_code, new_session, post
from tests.support import BUSY_LUA

pytestmark = pytest.mark.anyio

FORGED = "2026-11-21 10:00:00,000 INFO walletd.oia: forged line"


@pytest.fixture
def fresh_log(monkeypatch: pytest.MonkeyPatch) -> RateLimitedLog:
    """A rate limiter with no history: earlier tests' refusals do not hide this one's lines."""
    limited = RateLimitedLog(oia.log)
    monkeypatch.setattr(oia, "limited_log", limited, raising=False)
    return limited


def walletd_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("walletd")]


async def test_a_newline_in_the_path_cannot_forge_a_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, fresh_log: RateLimitedLog
) -> None:
    caplog.set_level(logging.INFO)
    r = await client.post("/oia/balance%0a" + FORGED.replace(" ", "%20") + "%0d%1b[2J", content=b"{}",
                          headers={"X-Authorization": "x"})
    assert r.status_code == 403
    records = walletd_records(caplog)
    assert len(records) == 1  # the refusal is logged, once
    message = records[0].getMessage()
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert "\\n2026-11-21" in message  # the request text is there, quoted


async def test_a_flood_of_unauthenticated_requests_logs_a_bounded_number_of_lines(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, fresh_log: RateLimitedLog
) -> None:
    caplog.set_level(logging.INFO)
    for i in range(300):
        headers = {"X-Authorization": f"wrong{i}", "X-Operator-Id": "testcasino" if i % 2 else f"nobody{i}"}
        r = await client.post(f"/oia/balance{'x' * (i % 7)}", content=b"{}", headers=headers)
        assert r.status_code == 403
    assert len(walletd_records(caplog)) == 1


async def test_the_suppressed_refusals_are_counted_in_the_next_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, fresh_log: RateLimitedLog
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):
        await client.post("/oia/balance", content=b"{}", headers={"X-Authorization": "x"})
    fresh_log.kinds["forbidden"][0] -= fresh_log.interval_s  # the interval has passed
    await client.post("/oia/balance", content=b"{}", headers={"X-Authorization": "x"})
    messages = [r.getMessage() for r in walletd_records(caplog)]
    assert len(messages) == 2
    assert "4 more like this suppressed" in messages[1]


@pytest.fixture
def short_socket_timeout(settings: Settings) -> Settings:
    settings.redis.socket_timeout_ms = 150
    return settings


async def test_a_redis_timeout_logs_neither_the_body_nor_the_session_token(
    short_socket_timeout: Settings, client: httpx.AsyncClient, player: str, sync_redis: redis.Redis,
    caplog: pytest.LogCaptureFixture, fresh_log: RateLimitedLog
) -> None:
    token = await new_session(client, player)
    body = envelope("changebalance", change(player, 1, "BET", 5, token=token))
    caplog.set_level(logging.INFO)
    blocker = asyncio.create_task(asyncio.to_thread(sync_redis.eval, BUSY_LUA, 0, 400_000))
    await asyncio.sleep(0.05)
    r = await post(client, "changebalance", body)
    await blocker
    assert error_code(r.json()["response"]) == "OP_47"
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert "outcome unknown" in text  # it was logged...
    assert token not in text and body["hash"] not in text  # ...without the secrets
    assert (await call(client, "cancel", {"user_id": player, "transaction_id": 1, "round_id": 1,
                                          "game_id": 200}))["status"] == "OK"
