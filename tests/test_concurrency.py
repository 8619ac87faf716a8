"""200 concurrent writeBet calls against a real walletd process."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.process import Server, walletd
from tests.support import drain, ledger_rows

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CALLS = 200


async def test_200_concurrent_bets_of_100_on_5000_book_exactly_50(
    tmp_path: Path, redis_url: str, settings: Settings
) -> None:
    # This test is about atomicity; a burst of 200 on one worker can queue past
    # the 40 ms StarGame budget, which would add deadline refusals to the count.
    server = Server(tmp_path, redis_url, budget_ms=10_000).start()
    try:
        walletd(server.config, "player", "create", "hot", "--currency", "EUR", "--balance", "50.00")
        limits = httpx.Limits(max_connections=CALLS)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as client:
            params = {"cmd": "writeBet", "uid": "hot", "bet": "100", "win": "0"}
            replies = await asyncio.gather(*[client.get("/stargame", params=params) for _ in range(CALLS)])
            final = (await client.get("/stargame", params={"cmd": "getBalance", "uid": "hot"})).json()
    finally:
        server.stop()
    assert {r.status_code for r in replies} == {200}
    statuses = Counter(r.json()["status"] for r in replies)
    assert statuses == {"success": 50, "fail": 150}
    assert {r.json()["error"] for r in replies if r.json()["status"] == "fail"} == {"insufficient funds"}
    # Each success saw a distinct balance: no two bets were decided on the same balance.
    assert sorted(r.json()["cash"] for r in replies if r.json()["status"] == "success") == list(range(0, 5000, 100))
    assert final["cash"] == 0
    settings.storage.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    await drain(settings)
    bets = ledger_rows(settings, "player_id = 'hot' AND kind = 'bet'")
    assert len(bets) == 50
    assert sum(b["amount_minor"] for b in bets) == -5000
