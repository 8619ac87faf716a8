"""Redis memory per un-flushed ledger entry, for sizing wallet.backlog_max (README "Outages").

Books N OIA WINs and N StarGame writeBets through walletd's own scripts into one
partition of a private redis-server with no flusher, then asks MEMORY USAGE of the
partition's stream (every node sampled) and divides by its length.

    python3 -m bench.stream_memory [N]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import redis

from app.protocols.oia.wallet import Change
from app.protocols.stargame.wallet import REQUEST_IDS, book
from app.redis_server import EmbeddedRedis
from app.runtime import Runtime
from app.settings import Settings

ENTRIES = 20_000  # per protocol: enough stream nodes that one node's overhead is noise
OPERATOR = "sizing"
PLAYER = "sizing-player"
WINDOW_MS = 60_000  # each booking's deadline: far away, this is not a latency test


async def fill(settings: Settings, entries: int) -> str:
    """Books entries of each kind for one player; returns its partition's stream key."""
    async with Runtime(settings, settings.redis.url, serving=True) as runtime:
        wallet = runtime.wallet
        await wallet.create_player(PLAYER, "EUR", 10**12, "DE", "en", "", [], operator_id=OPERATOR)
        for i in range(entries):
            deadline_ms = int(time.time() * 1000) + WINDOW_MS
            await runtime.oia_wallet.change(Change(
                operator_id=OPERATOR, player_id=PLAYER, kind="WIN", transaction_id=10**9 + i, round_id=10**6 + i,
                game_id=200, currency="EUR", amount_minor=150, token=None, round_finished=True,
                currency_allowed=True, game_disabled=False, deadline_ms=deadline_ms))
            request_id = REQUEST_IDS.new()
            await book(wallet, PLAYER, 100, 0, deadline_ms, request_id, "EUR", request_id=request_id,
                       retention_s=settings.stargame.request_retention_s)
        return wallet.keys.ledger(wallet.keys.partition(PLAYER))


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else ENTRIES
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory))
        url = server.start()
        try:
            settings = Settings(data_dir=directory)
            settings.redis.url = url
            settings.flusher.enabled = False
            stream = asyncio.run(fill(settings, entries))
            client = redis.Redis.from_url(url)
            length, used = client.xlen(stream), client.memory_usage(stream, samples=0)
            client.close()
        finally:
            server.stop()
    assert used is not None and length == 2 * entries + 1, (length, used)  # + the player's opening entry
    print(f"{length} stream entries (OIA WINs and StarGame bets, one opening) use {used:,} bytes: "
          f"{used / length:.0f} bytes per entry")


if __name__ == "__main__":
    main()
