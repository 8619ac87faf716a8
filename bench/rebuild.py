"""How long `walletd rebuild` takes: a ledger store filled with players and a mix of
bookings, then Redis rebuilt from it (README "Rebuild").

    python3 -m bench.rebuild [--players 10000] [--entries 100000] [--partitions 16]

Every entry is younger than the retentions, so every transaction and request record
is restored too (the most work per entry). Redis is a private embedded one (AOF,
appendfsync always, as walletd runs it); the store SQLite. Prints players, entries,
seconds and entries per second, and checks the rebuilt balances against the store.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

from redis.asyncio import Redis

from app.keys import Keys
from app.ledger import PROFILE_FIELDS, LedgerEntry, open_store
from app.ledger.rebuild import rebuild
from app.redis_server import EmbeddedRedis
from app.settings import Settings

OPERATOR = "benchcasino"
# Entries inserted per store transaction while filling: bounded memory.
INSERT_BATCH = 10_000
OPENING_MINOR = 10**9  # no bet in the run exhausts it


class Filler:
    """Entries as the scripts write them: per partition seq, per player balance."""

    def __init__(self, keys: Keys, now_ms: int) -> None:
        self.keys, self.now_ms = keys, now_ms
        self.seqs: dict[int, int] = {}
        self.balances: dict[str, int] = {}
        self.count = 0

    def entry(self, player: str, kind: str, amount: int, source: str, ref: str, **optional: object) -> LedgerEntry:
        partition = self.keys.partition(player)
        seq = self.seqs[partition] = self.seqs.get(partition, 0) + 1
        self.balances[player] = self.balances.get(player, 0) + amount
        self.count += 1
        return LedgerEntry(f"{partition}:{seq}", partition, seq, player, kind, amount, self.balances[player],
                           source, ref, self.now_ms - 1000, **optional)  # type: ignore[arg-type]

    def opening(self, player: str) -> LedgerEntry:
        profile = dict.fromkeys(PROFILE_FIELDS, "") | {"cur": "EUR", "lang": "en", "op": OPERATOR,
                                                        "aliases": f"stargame:{player}x"}
        return self.entry(player, "open", OPENING_MINOR, "admin", "", profile=profile)

    def booking(self, rng: random.Random, player: str, n: int) -> list[LedgerEntry]:
        """One OIA bet or win, one StarGame bet and win, or one admin deposit."""
        choice = rng.random()
        if choice < 0.7:  # the mix: mostly OIA
            kind = "bet" if n % 2 else "win"
            amount = -100 if kind == "bet" else 150
            fp = f"{kind.upper()}|{player}|{abs(amount)}|EUR|{n // 4}|200"
            return [self.entry(player, kind, amount, "oia", f"{OPERATOR}|{n}", fp=fp, operator=OPERATOR,
                               currency="EUR", round_id=str(n // 4), game_id="200", round_finished="0")]
        if choice < 0.95:
            request = f"{n:x}"
            return [self.entry(player, "bet", -50, "stargame", request, currency="EUR"),
                    self.entry(player, "win", 80, "stargame", request, currency="EUR")]
        return [self.entry(player, "deposit", 1000, "admin", f"dep-{n}", currency="EUR")]


def fill(store_url: str, keys: Keys, players: int, entries: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    filler = Filler(keys, int(time.time() * 1000))
    store = open_store(store_url)
    try:
        names = [f"p{i}" for i in range(players)]
        batch = [filler.opening(name) for name in names]
        n = 0
        while filler.count < entries:
            batch += filler.booking(rng, rng.choice(names), n)
            n += 1
            if len(batch) >= INSERT_BATCH:
                store.insert(batch)
                batch = []
        store.insert(batch)
        return filler.count
    finally:
        store.close()


async def measure(settings: Settings, url: str) -> tuple[float, int, int]:
    redis = Redis.from_url(url, decode_responses=True)
    store = open_store(settings.storage_url)
    try:
        started = time.perf_counter()
        summary = await rebuild(redis, store, settings, print)
        seconds = time.perf_counter() - started
        assert not summary.problems, summary.problems[:5]
        keys = Keys(settings.wallet.partitions)
        sums = store.player_sums()
        for player in list(sums)[:1000]:  # a sample: the full check is `walletd verify`
            assert int(await redis.hget(keys.account(player), "bal") or -1) == sums[player], player
        return seconds, summary.entries, summary.players
    finally:
        store.close()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 -m bench.rebuild")
    parser.add_argument("--players", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="walletd-rebuild-bench-") as tmp:
        directory = Path(tmp)
        settings = Settings(data_dir=str(directory / "var"))
        settings.wallet.partitions = args.partitions
        settings.storage.url = f"sqlite:///{directory / 'ledger.db'}"
        started = time.perf_counter()
        stored = fill(settings.storage_url, Keys(args.partitions), args.players, args.entries)
        print(f"filled the store with {stored} entries in {time.perf_counter() - started:.1f} s")
        server = EmbeddedRedis(directory / "redis")
        url = server.start()
        try:
            seconds, entries, players = asyncio.run(measure(settings, url))
        finally:
            server.stop()
    print(f"players {players}  entries {entries}  seconds {seconds:.1f}  entries/s {entries / seconds:,.0f}")


if __name__ == "__main__":
    main()
